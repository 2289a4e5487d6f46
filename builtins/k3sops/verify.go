package k3sops

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
)

// Row is what Verify found on one node. Disk, Live, Cacerts and Agent are
// the cells of the table: "ok", "-" (not applicable) or what differs.
type Row struct {
	Node    string `json:"node"`
	Role    string `json:"role"`
	OK      bool   `json:"ok"`
	Disk    string `json:"disk"`
	Live    string `json:"live"`
	Cacerts string `json:"cacerts"`
	Agent   string `json:"agent"`
	// Datastore says whether a server reads the datastore itself, with
	// its own token and etcd endpoint: "ok", "token" (its token does not
	// open the datastore: K3s would not come back from a restart),
	// "unreadable" (the read through it failed: what it would see cannot
	// be told), "other" (it reads another datastore than the one shown),
	// or "-" (agents; servers not tried).
	Datastore string   `json:"datastore"`
	Problems  []string `json:"problems,omitempty" star:"problems"`
	Warnings  []string `json:"warnings,omitempty" star:"warnings"`
	// Service is the unit's state when K3s is not active on a server
	// ("activating (start)", "failed (failed)", ...): not drift, an
	// outage.
	Service string `json:"service,omitempty" star:"service"`
	// Previous: a server whose disk CA set is the one the datastore's set
	// rotates from (a rotation in progress, not drift).
	Previous bool `json:"-" star:"previous"`

	// liveStale: the live certificate is still issued by the previous CA
	// (one the new one cross-signs). Servers converge on the newest
	// serving certificate within seconds of a restart, so a verify that
	// waits re-checks such rows.
	liveStale bool
}

// serialHex is a certificate's serial number as openssl prints it.
func serialHex(c *x509.Certificate) string { return strings.ToUpper(c.SerialNumber.Text(16)) }

// caDesc names a CA bundle for messages: its subject and short sha256.
func caDesc(bundle []byte) string {
	fp, err := k3s.CAFingerprints(bundle)
	if err != nil {
		return fmt.Sprintf("unreadable bundle (sha256 %s)", shortSHA(sha256Hex(bundle)))
	}
	return fmt.Sprintf("%s (sha256 %s)", fp.Subject, shortSHA(fp.SHA256))
}

func caSubject(bundle []byte) string {
	fp, err := k3s.CAFingerprints(bundle)
	if err != nil {
		return "unreadable"
	}
	return fp.Subject
}

// verifyServerDisk compares the rotatable bootstrap files on a server's
// disk with the datastore's.
func (c *Target) verifyServerDisk(ctx context.Context, ds *Datastore, row *Row) error {
	pats := []string{c.sd() + "/" + k3s.PathToken}
	for _, bf := range k3s.BootstrapFiles {
		if bf.Rotate {
			pats = append(pats, c.sd()+"/"+bf.Path)
		}
	}
	files, err := c.fetchMap(ctx, pats...)
	if err != nil {
		return err
	}
	c.verifyServerToken(ds, files[c.sd()+"/"+k3s.PathToken], row)
	current := map[string][]byte{}
	var differ []string
	for _, bf := range k3s.BootstrapFiles {
		if !bf.Rotate {
			continue
		}
		disk, onDisk := files[c.sd()+"/"+bf.Path]
		stored, inDS := ds.data[bf.Key]
		if onDisk {
			current[bf.Path] = disk.Data
		}
		switch {
		case !onDisk && !inDS:
		case !onDisk:
			differ = append(differ, bf.Path)
			row.Problems = append(row.Problems, fmt.Sprintf("disk %s is missing", bf.Path))
		case !inDS:
			row.Warnings = append(row.Warnings, fmt.Sprintf("the datastore has no %s", bf.Key))
		case !bytes.Equal(disk.Data, stored.Content):
			differ = append(differ, bf.Path)
			if strings.HasSuffix(bf.Path, ".crt") {
				row.Problems = append(row.Problems, fmt.Sprintf("disk %s holds %s, the datastore %s", bf.Path, caDesc(disk.Data), caDesc(stored.Content)))
			} else {
				row.Problems = append(row.Problems, fmt.Sprintf("disk %s differs from the datastore's", bf.Path))
			}
		}
	}
	if len(differ) == 0 {
		row.Disk = "ok"
		return nil
	}
	if !bytes.Equal(current[k3s.PathServerCA], ds.serverCA()) {
		row.Disk = "OLD " + caSubject(current[k3s.PathServerCA])
	} else {
		row.Disk = fmt.Sprintf("%d file(s) differ", len(differ))
	}
	// A rotation in progress: the datastore's set is a valid rotation of
	// what is on disk (K3s's own rotate-ca validation).
	staged := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if f, ok := ds.data[bf.Key]; ok && bf.Rotate {
			staged[bf.Path] = f.Content
		}
	}
	row.Previous = len(k3s.ValidateCARotation(current, staged)) == 0
	return nil
}

// verifyServerToken checks that the server's own token opens the
// datastore's bootstrap data (K3s decrypts it with that token at every
// start) and that the server read the datastore itself, reporting why not
// when another server had to be used (row.Datastore).
func (c *Target) verifyServerToken(ds *Datastore, tok remoteFile, row *Row) {
	p := c.sd() + "/" + k3s.PathToken
	text := strings.TrimSpace(string(tok.Data))
	c.redactToken(text)
	row.Datastore = "token"
	switch pass, err := k3s.NormalizeToken(text); {
	case len(tok.Data) == 0:
		row.Problems = append(row.Problems, fmt.Sprintf("%s is missing or empty: K3s on %s cannot open the datastore at its next start: this server would not come back from a restart", p, c.Node.Name))
	case err != nil:
		row.Problems = append(row.Problems, fmt.Sprintf("%s does not hold a K3s token (%v): K3s on %s cannot open the datastore at its next start: this server would not come back from a restart; put the cluster's token back (k3s.restore or a backup)", p, err, c.Node.Name))
	case k3s.StorageKey(pass) != ds.Key:
		row.Problems = append(row.Problems, fmt.Sprintf("%s is not the token the datastore is encrypted with (it opens %s, the datastore is %s): K3s on %s cannot open the datastore at its next start: this server would not come back from a restart; put the cluster's token back (k3s.restore or a backup)", p, k3s.StorageKey(pass), ds.Key, c.Node.Name))
	default:
		row.Datastore = "-"
		if why, ok := ds.Failed[c.Node.Name]; ok {
			row.Datastore = "unreadable"
			row.Problems = append(row.Problems, fmt.Sprintf("cannot read the datastore itself with its own token and etcd endpoint (read via %s instead), so what it sees cannot be told: %s", ds.Via, why))
		} else if what, ok := ds.Elsewhere[c.Node.Name]; ok {
			row.Datastore = "other"
			row.Problems = append(row.Problems, fmt.Sprintf("reads another datastore (%s) with its own token and etcd endpoint than %s (%s, server CA %s): it is not a server of the same cluster, or its token or etcd_endpoint leads elsewhere", what, ds.Via, ds.Key, caDesc(ds.serverCA())))
		} else if slices.Contains(ds.Readers, c.Node.Name) {
			row.Datastore = "ok"
		}
	}
}

// supervisorConn opens a TLS connection to the node's supervisor through
// its tunnel. The certificate is not checked during the handshake: the
// caller verifies the chain against the datastore's CA explicitly.
func (c *Target) supervisorConn(ctx context.Context, client *tls.Certificate) (*tls.Conn, error) {
	addr := c.Node.K3s.SupervisorEndpoint
	raw, err := c.Exec.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	host := addr
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		host = addr[:i]
	}
	cfg := &tls.Config{
		ServerName: host,
		// The served chain is verified below against the datastore's
		// server CA, which is the point of the check.
		InsecureSkipVerify: true, //nolint:gosec
		MinVersion:         tls.VersionTLS12,
	}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// supervisorGet sends GET path to the node's supervisor and returns the
// status and body.
func (c *Target) supervisorGet(ctx context.Context, p string, client *tls.Certificate) (int, []byte, error) {
	code, body, _, err := c.supervisorGetChain(ctx, p, client)
	return code, body, err
}

// supervisorGetChain is supervisorGet that also returns the certificate
// chain the supervisor served.
func (c *Target) supervisorGetChain(ctx context.Context, p string, client *tls.Certificate) (int, []byte, []*x509.Certificate, error) {
	return c.supervisorDo(ctx, p, client, "", "")
}

// supervisorDo is supervisorGetChain with basic auth (user "" for none).
func (c *Target) supervisorDo(ctx context.Context, p string, client *tls.Certificate, user, pass string) (int, []byte, []*x509.Certificate, error) {
	tc, err := c.supervisorConn(ctx, client)
	if err != nil {
		return 0, nil, nil, err
	}
	certs := tc.ConnectionState().PeerCertificates
	defer tc.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { tc.Close() })
	defer stop()
	req, _ := http.NewRequest(http.MethodGet, "https://"+c.Node.K3s.SupervisorEndpoint+p, nil)
	req.Close = true
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if err := req.Write(tc); err != nil {
		return 0, nil, certs, fmt.Errorf("GET %s: %w", p, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		return 0, nil, certs, fmt.Errorf("GET %s: %w", p, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, certs, fmt.Errorf("GET %s: %w", p, err)
	}
	return resp.StatusCode, body, certs, nil
}

// verifyLive checks the CA a server serves: the TLS chain on the
// supervisor port must verify against the datastore's server CA, and GET
// /cacerts must return it byte for byte.
func (c *Target) verifyLive(ctx context.Context, ds *Datastore, row *Row) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	addr := c.Node.K3s.SupervisorEndpoint
	dsCerts, err := k3s.ParseCertsPEM(ds.serverCA())
	if err != nil {
		row.Live = "error"
		row.Problems = append(row.Problems, "the datastore's ServerCA does not parse: "+err.Error())
		return
	}
	// One connection: its chain, then GET /cacerts on it.
	code, body, certs, err := c.supervisorGetChain(ctx, "/cacerts", nil)
	if len(certs) == 0 {
		row.Live = "down"
		if st, serr := c.unitShow(ctx); serr == nil && st.active != "active" {
			row.Live = "down: " + st.describe()
			row.Service = st.describe()
			row.Problems = append(row.Problems, fmt.Sprintf("%s is %s on %s: it does not serve %s (see journalctl -u %s)", c.Node.K3s.Service, st.describe(), c.Node.Name, addr, c.Node.K3s.Service))
			row.Cacerts = "down"
			return
		}
		row.Problems = append(row.Problems, fmt.Sprintf("live %s: %v", addr, err))
	} else {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, ca := range dsCerts {
			roots.AddCert(ca)
		}
		for _, ic := range certs[1:] {
			inter.AddCert(ic)
		}
		leaf := certs[0]
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		switch {
		case verr != nil:
			row.Live = "OLD " + leaf.Issuer.CommonName
			row.Problems = append(row.Problems, fmt.Sprintf("live %s serves a certificate issued by %s that does not verify against the datastore's server CA %s: %v", addr, leaf.Issuer.CommonName, dsCerts[0].Subject.CommonName, verr))
		case leaf.CheckSignatureFrom(dsCerts[0]) != nil:
			row.Live = "prev. issuer"
			row.liveStale = true
			row.Problems = append(row.Problems, fmt.Sprintf("live %s certificate (serial %s) is still issued by %s, not by the datastore's CA %s: K3s issues a new one only when %s/%s exists at its start (create it and restart K3s on %s; rotate-ca does both)",
				addr, serialHex(leaf), leaf.Issuer.CommonName, dsCerts[0].Subject.CommonName, c.sd(), RegenerateFile, c.Node.Name))
		default:
			row.Live = "ok"
		}
	}
	switch {
	case err != nil:
		row.Cacerts = "down"
		row.Problems = append(row.Problems, fmt.Sprintf("GET /cacerts on %s: %v", addr, err))
	case code != http.StatusOK:
		row.Cacerts = fmt.Sprintf("HTTP %d", code)
		row.Problems = append(row.Problems, fmt.Sprintf("GET /cacerts on %s answered HTTP %d", addr, code))
	case !bytes.Equal(body, ds.serverCA()):
		row.Cacerts = "OLD " + caSubject(body)
		row.Problems = append(row.Problems, fmt.Sprintf("/cacerts serves %s, the datastore %s (restart K3s on %s)", caDesc(body), caDesc(ds.serverCA()), c.Node.Name))
	default:
		row.Cacerts = "ok"
	}
}

// verifyAgent compares an agent's server-ca.crt with the datastore's.
func (c *Target) verifyAgent(ctx context.Context, ds *Datastore, row *Row) error {
	p := c.dd() + "/agent/server-ca.crt"
	files, err := c.fetchMap(ctx, p)
	if err != nil {
		return err
	}
	f, ok := files[p]
	switch {
	case !ok:
		row.Agent = "missing"
		row.Problems = append(row.Problems, p+" is missing")
	case !bytes.Equal(f.Data, ds.serverCA()):
		row.Agent = "OLD " + caSubject(f.Data)
		row.Problems = append(row.Problems, fmt.Sprintf("agent server-ca.crt holds %s, the datastore %s (restart %s on %s after the servers)", caDesc(f.Data), caDesc(ds.serverCA()), c.Node.K3s.Service, c.Node.Name))
	default:
		row.Agent = "ok"
	}
	return nil
}

// verifyNodeWaiting is verifyNode that, for up to wait, re-checks a
// server whose only problem is a live certificate of the previous CA:
// running servers adopt the newest serving certificate (the
// kube-system/k3s-serving secret) a few seconds after a peer wrote it.
func (c *Target) verifyNodeWaiting(ctx context.Context, ds *Datastore, live bool, wait time.Duration) Row {
	row := c.verifyNode(ctx, ds, live)
	deadline := time.Now().Add(wait)
	for !row.OK && row.liveStale && len(row.Problems) == 1 && time.Now().Before(deadline) {
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return row
		case <-t.C:
		}
		row = c.verifyNode(ctx, ds, live)
	}
	return row
}

// verifyNode fills the row of one node.
func (c *Target) verifyNode(ctx context.Context, ds *Datastore, live bool) Row {
	row := Row{Node: c.Node.Name, Role: c.Node.Role, Disk: "-", Live: "-", Cacerts: "-", Agent: "-", Datastore: "-", Problems: []string{}, Warnings: []string{}}
	var err error
	if c.Node.Role == inventory.RoleServer {
		err = c.verifyServerDisk(ctx, ds, &row)
		if err == nil && live {
			c.verifyLive(ctx, ds, &row)
		}
	} else {
		err = c.verifyAgent(ctx, ds, &row)
	}
	if err != nil {
		row.Problems = append(row.Problems, err.Error())
		if row.Disk == "-" && c.Node.Role == inventory.RoleServer {
			row.Disk = "error"
		}
	}
	row.OK = len(row.Problems) == 0
	return row
}

// verifyTable renders rows as an aligned table.
func verifyTable(rows []Row) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tDATASTORE\tDISK CA\tLIVE CHAIN\t/cacerts\tAGENT server-ca\tRESULT")
	for _, r := range rows {
		res := "ok"
		if !r.OK {
			res = "STALE"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Node, r.Role, r.Datastore, r.Disk, r.Live, r.Cacerts, r.Agent, res)
	}
	_ = tw.Flush()
	return b.String()
}

// VerifyOptions say what Verify checks.
type VerifyOptions struct {
	// Nodes are checked; Focus (default Nodes) decide the result, the
	// others are only shown. Focus nodes missing from Nodes are added.
	Nodes, Focus []*inventory.Node
	// Via are servers to read the datastore through when no server of
	// Focus and Nodes can (then the run's nodes). Every server of Focus
	// and Nodes reads it itself (DatastoreEach).
	Via []*inventory.Node
	// Expect is the sha256 the datastore's server CA must have (the staged
	// one after a rotation).
	Expect string
	// Live checks the CA every server serves (TLS chain on the supervisor
	// port, GET /cacerts).
	Live bool
	// Fail makes a result that is not OK an error carrying the table.
	Fail bool
	// Quiet prints nothing.
	Quiet bool
	// Wait re-checks, for up to that long, servers whose only problem is a
	// live certificate of the previous CA.
	Wait time.Duration
}

// VerifyResult is what Verify found. Planned is true in check mode when
// the datastore does not hold Expect yet: the CA this run would rotate to
// cannot be checked before the run makes it.
type VerifyResult struct {
	OK        bool      `json:"ok"`
	Rows      []Row     `json:"rows"`
	Stale     []string  `json:"stale"`
	Datastore Datastore `json:"datastore"`
	Table     string    `json:"table"`
	Planned   bool      `json:"planned"`
}

// Verify checks that every server's disk CA set equals the datastore's,
// that every server serves it live (TLS chain on the supervisor port, GET
// /cacerts: a live :6443 certificate must be issued by the datastore's CA
// itself, one of the previous CA is "prev. issuer", not done), and that
// every agent's server-ca.crt equals it. It reads only, and runs in check
// mode too, except that a datastore CA other than o.Expect is then what
// the run would change (see VerifyResult.Planned).
func Verify(ctx context.Context, run Run, op string, o VerifyOptions) (*VerifyResult, error) {
	nodes, focus := o.Nodes, o.Nodes
	if o.Focus != nil {
		focus = o.Focus
		have := map[*inventory.Node]bool{}
		for _, n := range nodes {
			have[n] = true
		}
		for _, n := range focus {
			if !have[n] {
				nodes = append(nodes, n)
			}
		}
	}
	if err := run.CheckStop(); err != nil {
		return nil, err
	}
	each := append(append([]*inventory.Node{}, focus...), nodes...)
	ds, err := DatastoreEach(ctx, run, op, each, append(append([]*inventory.Node{}, o.Via...), run.Nodes()...))
	if err != nil {
		return nil, err
	}
	if o.Expect != "" && ds.ServerCA.SHA256 != o.Expect {
		planned := true
		_ = run.Wet(fmt.Sprintf("verify that %s hold the new server CA (sha256 %s) on disk and live", nodeNames(focus), shortSHA(o.Expect)), func() error {
			planned = false
			return nil
		})
		if planned {
			return &VerifyResult{OK: true, Rows: []Row{}, Stale: []string{}, Datastore: *ds, Planned: true}, nil
		}
	}
	rows, errs := forEachNode(ctx, run, nodes, op, func(c *Target) (Row, error) {
		return c.verifyNodeWaiting(ctx, ds, o.Live, o.Wait), nil
	})
	for i, e := range errs {
		if e != nil {
			rows[i] = Row{Node: nodes[i].Name, Role: nodes[i].Role, Disk: "unreachable", Live: "-", Cacerts: "-", Agent: "-", Datastore: "-", Problems: []string{e.Error()}, Warnings: []string{}}
		}
	}
	return verdict(run, op, o, ds, rows, focus)
}

// verdict judges the rows, prints the table unless quiet and fails when
// asked to.
func verdict(run Run, op string, o VerifyOptions, ds *Datastore, rows []Row, focus []*inventory.Node) (*VerifyResult, error) {
	inFocus := map[string]bool{}
	for _, n := range focus {
		inFocus[n.Name] = true
	}
	res := &VerifyResult{OK: true, Rows: rows, Stale: []string{}, Datastore: *ds}
	var focusStale []string
	for _, r := range rows {
		if !r.OK {
			res.Stale = append(res.Stale, r.Node)
			if inFocus[r.Node] {
				focusStale = append(focusStale, r.Node)
				res.OK = false
			}
		}
	}
	var dsProblem string
	if o.Expect != "" && ds.ServerCA.SHA256 != o.Expect {
		res.OK = false
		dsProblem = fmt.Sprintf("the datastore holds server CA %s, expected sha256 %s (did rotate_ca land?)", caDesc(ds.serverCA()), shortSHA(o.Expect))
	}
	res.Table = verifyTable(rows)
	var detail strings.Builder
	fmt.Fprintf(&detail, "datastore %s (via %s): server CA %s\n", ds.Key, ds.Via, caDesc(ds.serverCA()))
	if dsProblem != "" {
		fmt.Fprintf(&detail, "%s\n", dsProblem)
	}
	detail.WriteString(res.Table)
	for _, r := range rows {
		for _, p := range r.Problems {
			fmt.Fprintf(&detail, "  %s: %s\n", r.Node, p)
		}
		for _, w := range r.Warnings {
			fmt.Fprintf(&detail, "  %s: warning: %s\n", r.Node, w)
		}
	}
	if !o.Quiet {
		for _, line := range strings.Split(strings.TrimRight(detail.String(), "\n"), "\n") {
			run.Output(runner.StreamLog, line)
		}
	}
	if res.OK || !o.Fail {
		return res, nil
	}
	head := op + ": " + dsProblem
	if len(focusStale) > 0 {
		head = fmt.Sprintf("%s: %d node(s) do not hold the datastore's CA %s: %s", op, len(focusStale), caDesc(ds.serverCA()), strings.Join(focusStale, ", "))
		if extra := minus(res.Stale, focusStale); len(extra) > 0 {
			head += fmt.Sprintf(" (also stale: %s)", strings.Join(extra, ", "))
		}
		// Nodes without the datastore's CA: drift (exit 4), not an outage.
		return nil, errspkg.Drift(fmt.Errorf("%s\n%s", head, detail.String()))
	}
	return nil, fmt.Errorf("%s\n%s", head, detail.String())
}

// nodeNames lists node names for messages.
func nodeNames(nodes []*inventory.Node) string {
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return strings.Join(names, ", ")
}

// minus returns the items of a not in b.
func minus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}
