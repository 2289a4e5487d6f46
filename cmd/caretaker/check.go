package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/metrics"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
)

func init() {
	extraCommands = append(extraCommands, newCheckCommand)
}

type checkFlags struct {
	inventory   string
	cluster     string
	limit       string
	warnDays    int
	output      string
	metricsFile string
	verbose     bool
	timeout     time.Duration
}

func newCheckCommand() *cobra.Command {
	var f checkFlags
	c := &cobra.Command{
		Use:   "check -i INVENTORY [--warn-days 30] [--output table|json] [--metrics-file PATH]",
		Short: "Read-only health check for cron and monitoring: CA consistency and certificate expiry on every node",
		Long: `check reads, and changes nothing: it compares the CA on every node's disk with
the CA in the datastore and the CA served live by every server (:6443 and
/cacerts), agents' server-ca.crt included (k3s.verify), and lists every
certificate's expiry on every node (k3s.check, like ` + "`k3s certificate check`" + `).

Every server reads the datastore itself, with its own token and etcd
endpoint, as K3s does when it starts; a server that cannot is named with
the reason.

Exit codes: 0 healthy; 4 a node's CA differs (drift) or a certificate is
expired or expires within --warn-days; 1 health cannot be told or a server
is not well: a node, the datastore, or the datastore through one server
could not be read, K3s is not running on a server, or a server's token does
not open the datastore (it would not come back from a restart). A leaf
certificate that K3s renews at its next start (within the renewal window of
the node's release: 120 days since v1.30.13/v1.31.9/v1.32.5/v1.33.1, 90
before) and that expires later than --warn-days is listed as
RENEWS-AT-RESTART and is not a finding: a routine restart (or
renew-leaf-certs) renews it; once it is within --warn-days it is a WARNING
like any other. --metrics-file writes the result in the Prometheus text
format for node_exporter's textfile collector, atomically.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &f)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.inventory, "inventory", "i", "", "inventory file (required)")
	fl.StringVar(&f.cluster, "cluster", "", "cluster of the inventory (needed when it declares several)")
	fl.StringVar(&f.limit, "limit", "", "only these nodes (selector)")
	fl.IntVar(&f.warnDays, "warn-days", 30, "a certificate expiring within this many days is a finding (exit 4); leaves a restart renews are reported before that")
	fl.StringVarP(&f.output, "output", "o", "table", "table or json")
	fl.StringVar(&f.metricsFile, "metrics-file", "", "write Prometheus metrics here (node_exporter textfile collector), atomically")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log every step's output to stderr")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "time limit per node")
	return c
}

// checkReport is what `caretaker check -o json` prints.
type checkReport struct {
	Cluster      string           `json:"cluster"`
	CheckedAt    time.Time        `json:"checked_at"`
	WarnDays     int              `json:"warn_days"`
	Status       string           `json:"status"` // healthy, drift, down, broken, unreachable
	ExitCode     int              `json:"exit_code"`
	Summary      string           `json:"summary"`
	Problems     []string         `json:"problems,omitempty"`
	Unreachable  []nodeProblem    `json:"unreachable,omitempty"`
	CA           caReport         `json:"ca"`
	Expiring     []k3sops.CertRow `json:"expiring"`
	Certificates []k3sops.CertRow `json:"certificates"`
	Nodes        []string         `json:"nodes"`
	// RenewAtRestart are the RENEWS-AT-RESTART certificates (not
	// findings) and RenewNodes the nodes a restart renews them on.
	RenewAtRestart []k3sops.CertRow `json:"renew_at_restart"`
	RenewNodes     []string         `json:"renew_nodes"`
}

type nodeProblem struct {
	Node  string `json:"node"`
	Error string `json:"error"`
}

// caReport is the CA consistency part (k3sops.Verify).
type caReport struct {
	Checked    bool           `json:"checked"`
	Consistent bool           `json:"consistent"`
	Error      string         `json:"error,omitempty"`
	Via        string         `json:"via,omitempty"`
	Stale      []string       `json:"stale"`
	Datastore  *datastoreInfo `json:"datastore,omitempty"`
	Nodes      []k3sops.Row   `json:"nodes"`
}

// datastoreInfo is the part of the datastore the report shows.
type datastoreInfo struct {
	CAHash   string    `json:"ca_hash"`
	Key      string    `json:"key"`
	Revision int64     `json:"revision"`
	ServerCA k3sops.CA `json:"server_ca"`
	Via      string    `json:"via"`
}

func runCheck(ctx context.Context, stdout, stderr io.Writer, f *checkFlags) error {
	cluster, nodes, err := checkTargets(f)
	if err != nil {
		return err
	}
	pool := runner.NewPool(sshnode.Dial)
	defer pool.Close()
	var log runner.Sink
	if f.verbose {
		log = runner.NewPlainSink(stderr, true)
	}
	rep := &checkReport{Cluster: cluster.Name, CheckedAt: time.Now().UTC(), WarnDays: f.warnDays, Expiring: []k3sops.CertRow{}, Certificates: []k3sops.CertRow{},
		CA: caReport{Stale: []string{}, Nodes: []k3sops.Row{}}, RenewAtRestart: []k3sops.CertRow{}, RenewNodes: []string{}}
	for _, n := range nodes {
		rep.Nodes = append(rep.Nodes, n.Name)
	}
	reachable := checkCertificates(ctx, pool, cluster, nodes, f, rep, log)
	checkCAConsistency(ctx, pool, cluster, reachable, f, rep, log)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	finishReport(rep, len(nodes))
	if f.metricsFile != "" {
		if err := metrics.WriteFile(f.metricsFile, checkMetrics(rep)); err != nil {
			fmt.Fprintf(stderr, "caretaker: %v\n", err)
			if rep.ExitCode == exitOK {
				rep.ExitCode = exitFailed
			}
		}
	}
	if f.output == "json" {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		printCheck(stdout, rep)
	}
	if rep.ExitCode != exitOK {
		return withCode(rep.ExitCode, silentError{fmt.Errorf("%s", rep.Summary)})
	}
	return nil
}

// checkTargets validates the flags and loads the cluster and the nodes
// to check. A --limit that selects no node is bad input: a monitoring job
// with a typo must not stay green.
func checkTargets(f *checkFlags) (*inventorypkg.Cluster, []*inventorypkg.Node, error) {
	if f.output != "table" && f.output != "json" {
		return nil, nil, usageError{fmt.Errorf("--output %q: use table or json", f.output)}
	}
	if f.warnDays < 0 {
		return nil, nil, usageError{fmt.Errorf("--warn-days %d: give a number of days ≥ 0", f.warnDays)}
	}
	if f.inventory == "" {
		return nil, nil, usageError{fmt.Errorf("no inventory: give one with -i FILE")}
	}
	inv, err := inventorypkg.Load(f.inventory)
	if err != nil {
		return nil, nil, err
	}
	cluster, err := inv.Cluster(f.cluster)
	if err != nil {
		return nil, nil, err
	}
	nodes := cluster.Nodes
	if f.limit != "" {
		if nodes, err = cluster.Select(f.limit); err != nil {
			return nil, nil, err
		}
	}
	if len(nodes) == 0 {
		return nil, nil, usageError{fmt.Errorf("nothing would be checked: %w", cluster.NoMatch("--limit", f.limit))}
	}
	if err := inventorypkg.CheckControllerFiles(cluster.Nodes); err != nil {
		return nil, nil, err
	}
	return cluster, nodes, nil
}

// hasServer says whether nodes include a server.
func hasServer(nodes []*inventorypkg.Node) bool {
	for _, n := range nodes {
		if n.Role == inventorypkg.RoleServer {
			return true
		}
	}
	return false
}

// nodeList names the nodes for messages.
func nodeList(nodes []*inventorypkg.Node) string {
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return strings.Join(names, ", ")
}

// checkCertificates lists every node's certificates (an unreachable node
// fails alone and is reported) and returns the nodes that answered.
func checkCertificates(ctx context.Context, pool *runner.Pool, cluster *inventorypkg.Cluster, nodes []*inventorypkg.Node, f *checkFlags, rep *checkReport, log runner.Sink) []*inventorypkg.Node {
	var mu sync.Mutex
	step := &runner.Step{Index: 0, Name: "certificates", Selector: "all", Nodes: nodes, Timeout: f.timeout, Doc: "k3s.check on each node",
		Func: func(ctx context.Context, env *runner.Env) error {
			res, err := k3sops.Check(ctx, env, "k3s.check", k3sops.CheckOptions{Nodes: []*inventorypkg.Node{env.Node}, WarnDays: f.warnDays})
			if err != nil {
				return err
			}
			mu.Lock()
			rep.Certificates = append(rep.Certificates, res.Rows...)
			mu.Unlock()
			return nil
		}}
	done, _ := runCheckPlan(ctx, pool, cluster, nodes, step, log)
	failed := map[string]bool{}
	for _, d := range done.Failed {
		failed[d.Node] = true
		rep.Unreachable = append(rep.Unreachable, nodeProblem{Node: d.Node, Error: d.Error})
	}
	var reachable []*inventorypkg.Node
	for _, n := range nodes {
		if !failed[n.Name] {
			reachable = append(reachable, n)
		}
	}
	return reachable
}

// checkCAConsistency compares the CA of the reachable nodes, the datastore
// and the live endpoints. Every checked server reads the datastore itself
// (k3sops.DatastoreEach); when none can, any other server of the cluster
// is tried. The report names the one that was used (via).
func checkCAConsistency(ctx context.Context, pool *runner.Pool, cluster *inventorypkg.Cluster, reachable []*inventorypkg.Node, f *checkFlags, rep *checkReport, log runner.Sink) {
	unreachable := map[string]bool{}
	for _, u := range rep.Unreachable {
		unreachable[u.Node] = true
	}
	var via []*inventorypkg.Node
	for _, n := range append(append([]*inventorypkg.Node{}, reachable...), cluster.Nodes...) {
		if n.Role == inventorypkg.RoleServer && !unreachable[n.Name] {
			via = append(via, n)
		}
	}
	if len(via) == 0 {
		rep.CA.Error = "no reachable server to read the datastore through"
		if !hasServer(cluster.Nodes) {
			rep.CA.Error = "the inventory has no server (role: server) in cluster " + cluster.Name
		}
		return
	}
	if len(reachable) == 0 {
		return
	}
	var mu sync.Mutex
	step := &runner.Step{Index: 0, Name: "ca consistency", Selector: via[0].Name, Nodes: []*inventorypkg.Node{via[0]}, Once: true, Timeout: f.timeout, Doc: "k3s.verify",
		Func: func(ctx context.Context, env *runner.Env) error {
			res, err := k3sops.Verify(ctx, env, "k3s.verify", k3sops.VerifyOptions{Nodes: reachable, Via: via, Live: true})
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			rep.CA.Checked, rep.CA.Consistent, rep.CA.Nodes, rep.CA.Stale = true, res.OK, res.Rows, res.Stale
			ds := res.Datastore
			rep.CA.Datastore = &datastoreInfo{CAHash: ds.CAHash, Key: ds.Key, Revision: ds.Revision, ServerCA: ds.ServerCA, Via: ds.Via}
			rep.CA.Via = ds.Via
			return nil
		}}
	done, _ := runCheckPlan(ctx, pool, cluster, append(reachable, missing(via[0], reachable)...), step, log)
	for _, d := range done.Failed {
		rep.CA.Error = d.Error
	}
}

// classifyCertificates sorts the certificates out: findings (expiring)
// and leaves K3s renews at the next restart (not findings).
func classifyCertificates(rep *checkReport) {
	renewOn := map[string]bool{}
	for _, c := range rep.Certificates {
		switch c.Status {
		case k3sops.StatusOK:
		case k3sops.StatusRenewsAtRestart:
			rep.RenewAtRestart = append(rep.RenewAtRestart, c)
			if !renewOn[c.Node] {
				renewOn[c.Node] = true
				rep.RenewNodes = append(rep.RenewNodes, c.Node)
			}
		default:
			rep.Expiring = append(rep.Expiring, c)
		}
	}
}

// printCheck writes the report as text.
func printCheck(w io.Writer, rep *checkReport) {
	fmt.Fprintln(w, rep.Summary)
	if rep.CA.Checked {
		if ds := rep.CA.Datastore; ds != nil {
			fmt.Fprintf(w, "datastore CA: %v (sha256 %.16v…, read via %s)\n", ds.ServerCA.Subject, ds.ServerCA.SHA256, rep.CA.Via)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tROLE\tCA\tDATASTORE\tDISK\tLIVE\tCACERTS\tAGENT")
		for _, r := range rep.CA.Nodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Node, r.Role, rowVerdict(r), r.Datastore, r.Disk, r.Live, r.Cacerts, r.Agent)
		}
		_ = tw.Flush() // a terminal or pipe that fails is not ours to report
	}
	if len(rep.Expiring) > 0 {
		fmt.Fprintf(w, "certificates needing attention (%d of %d):\n", len(rep.Expiring), len(rep.Certificates))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tFILE\tSUBJECT\tEXPIRES\tDAYS\tSTATUS")
		for _, c := range rep.Expiring {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", c.Node, c.File, c.Subject, c.Expires.UTC().Format("2006-01-02 15:04 MST"), c.ResidualDays, c.Status)
		}
		_ = tw.Flush() // a terminal or pipe that fails is not ours to report
	} else if len(rep.Certificates) > 0 {
		soonest := rep.Certificates[0]
		for _, c := range rep.Certificates {
			if c.Expires.Before(soonest.Expires) {
				soonest = c
			}
		}
		fmt.Fprintf(w, "certificates: %d checked, the first to expire is %s on %s (%s, in %d days)\n", len(rep.Certificates), soonest.File, soonest.Node, soonest.Expires.UTC().Format("2006-01-02"), soonest.ResidualDays)
	}
	if len(rep.RenewAtRestart) > 0 {
		soonest := rep.RenewAtRestart[0]
		for _, c := range rep.RenewAtRestart {
			if c.Expires.Before(soonest.Expires) {
				soonest = c
			}
		}
		fmt.Fprintf(w, "renew at the next restart: %d leaf certificate(s) on %s, within K3s's renewal window; the first expires %s (%s on %s): restart K3s there before then (renew-leaf-certs)\n",
			len(rep.RenewAtRestart), strings.Join(rep.RenewNodes, ", "), soonest.Expires.UTC().Format("2006-01-02"), soonest.File, soonest.Node)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
}

// checkMetrics turns a report into Prometheus metrics.
func checkMetrics(rep *checkReport) []metrics.Family {
	now := rep.CheckedAt
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	cl := map[string]string{"cluster": rep.Cluster}
	expiry := metrics.Family{Name: "caretaker_cert_expiry_seconds", Help: "Seconds until the certificate expires (negative: expired), per node, file and subject, as of the last check."}
	notAfter := metrics.Family{Name: "caretaker_cert_not_after_timestamp_seconds", Help: "Expiry time of the certificate as a Unix timestamp."}
	seen := map[string]bool{}
	for _, c := range rep.Certificates {
		labels := map[string]string{"cluster": rep.Cluster, "node": c.Node, "file": c.File, "subject": c.Subject}
		key := c.Node + "\x00" + c.File + "\x00" + c.Subject
		if seen[key] {
			// A bundle can hold the same subject twice (cross-signed
			// roots); keep the first, as Prometheus wants unique series.
			continue
		}
		seen[key] = true
		expiry.Samples = append(expiry.Samples, metrics.Sample{Labels: labels, Value: math.Round(c.Expires.Sub(now).Seconds())})
		notAfter.Samples = append(notAfter.Samples, metrics.Sample{Labels: labels, Value: float64(c.Expires.Unix())})
	}
	reach := metrics.Family{Name: "caretaker_node_reachable", Help: "1 when the node could be checked."}
	down := map[string]bool{}
	for _, u := range rep.Unreachable {
		down[u.Node] = true
	}
	for _, n := range rep.Nodes {
		reach.Samples = append(reach.Samples, metrics.Sample{Labels: map[string]string{"cluster": rep.Cluster, "node": n}, Value: b2f(!down[n])})
	}
	fams := []metrics.Family{
		expiry, notAfter,
		{Name: "caretaker_ca_consistent", Help: "1 when every checked node's disk, the datastore and the live endpoints carry the same CA; 0 when not or not checked.", Samples: []metrics.Sample{{Labels: cl, Value: b2f(rep.CA.Checked && rep.CA.Consistent)}}},
		{Name: "caretaker_certs_expiring", Help: "Certificates expired or expiring within the warning window.", Samples: []metrics.Sample{{Labels: cl, Value: float64(len(rep.Expiring))}}},
		{Name: "caretaker_certs_renew_at_restart", Help: "Leaf certificates K3s renews at the next restart of their node (within the release's renewal window, beyond the warning window).", Samples: []metrics.Sample{{Labels: cl, Value: float64(len(rep.RenewAtRestart))}}},
		{Name: "caretaker_check_warn_days", Help: "The warning window of the check in days.", Samples: []metrics.Sample{{Labels: cl, Value: float64(rep.WarnDays)}}},
		{Name: "caretaker_check_healthy", Help: "1 when the check found no drift and no expiring certificate and reached every node.", Samples: []metrics.Sample{{Labels: cl, Value: b2f(rep.ExitCode == exitOK)}}},
		{Name: "caretaker_check_success", Help: "1 when the check could reach every node and the datastore (its findings are complete).", Samples: []metrics.Sample{{Labels: cl, Value: b2f(rep.Status != "unreachable")}}},
		{Name: "caretaker_check_timestamp_seconds", Help: "When the check ran, as a Unix timestamp.", Samples: []metrics.Sample{{Labels: cl, Value: float64(now.Unix())}}},
		reach,
	}
	return fams
}

func missing(n *inventorypkg.Node, in []*inventorypkg.Node) []*inventorypkg.Node {
	for _, x := range in {
		if x == n {
			return nil
		}
	}
	return []*inventorypkg.Node{n}
}

// runCheckPlan runs one read-only Go step over nodes with the shared pool.
func runCheckPlan(ctx context.Context, pool *runner.Pool, cluster *inventorypkg.Cluster, nodes []*inventorypkg.Node, step *runner.Step, log runner.Sink) (runner.RunDone, error) {
	plan := &runner.Plan{Playbook: "check", File: "caretaker check", Description: "read-only health check", Cluster: cluster, Nodes: nodes, Steps: []*runner.Step{step}}
	sink := runner.Sink(runner.SinkFunc(func(runner.Event) {}))
	if log != nil {
		sink = log
	}
	return runner.NewRun(plan, runner.RunOptions{
		Check: false, Pool: pool, Sink: sink,
		Failure: runner.FailurePolicy{Continue: true},
	}).Execute(ctx)
}
