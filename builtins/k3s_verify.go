package builtins

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// verifyRow is what verify found on one node.
type verifyRow struct {
	node, role string
	// Cells of the table: "ok", "-" (not applicable) or what differs.
	disk, live, cacerts, agent string
	problems                   []string
	warnings                   []string
	ok                         bool
	// previous: a server whose disk CA set is the one the datastore's
	// set rotates from (a rotation in progress, not drift).
	previous bool
	// liveStale: the live certificate is still issued by the previous
	// CA (one the new one cross-signs). Servers converge on the newest
	// serving certificate within seconds of a restart, so a verify that
	// waits re-checks such rows.
	liveStale bool
	// service is the unit's state when K3s is not active on a server
	// ("activating (start)", "failed (failed)", ...): not drift, an outage.
	service string
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
func (c *k3sCall) verifyServerDisk(ds *dsRead, row *verifyRow) error {
	var pats []string
	for _, bf := range k3s.BootstrapFiles {
		if bf.Rotate {
			pats = append(pats, c.sd()+"/"+bf.Path)
		}
	}
	files, err := c.fetchMap(pats...)
	if err != nil {
		return err
	}
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
			row.problems = append(row.problems, fmt.Sprintf("disk %s is missing", bf.Path))
		case !inDS:
			row.warnings = append(row.warnings, fmt.Sprintf("the datastore has no %s", bf.Key))
		case !bytes.Equal(disk.Data, stored.Content):
			differ = append(differ, bf.Path)
			if strings.HasSuffix(bf.Path, ".crt") {
				row.problems = append(row.problems, fmt.Sprintf("disk %s holds %s, the datastore %s", bf.Path, caDesc(disk.Data), caDesc(stored.Content)))
			} else {
				row.problems = append(row.problems, fmt.Sprintf("disk %s differs from the datastore's", bf.Path))
			}
		}
	}
	if len(differ) == 0 {
		row.disk = "ok"
		return nil
	}
	if !bytes.Equal(current[k3s.PathServerCA], ds.serverCA()) {
		row.disk = "OLD " + caSubject(current[k3s.PathServerCA])
	} else {
		row.disk = fmt.Sprintf("%d file(s) differ", len(differ))
	}
	// A rotation in progress: the datastore's set is a valid rotation of
	// what is on disk (K3s's own rotate-ca validation).
	staged := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if f, ok := ds.data[bf.Key]; ok && bf.Rotate {
			staged[bf.Path] = f.Content
		}
	}
	row.previous = len(k3s.ValidateCARotation(current, staged)) == 0
	return nil
}

// supervisorConn opens a TLS connection to the node's supervisor through
// its tunnel. The certificate is not checked during the handshake: the
// caller verifies the chain against the datastore's CA explicitly.
func (c *k3sCall) supervisorConn(ctx context.Context, client *tls.Certificate) (*tls.Conn, error) {
	addr := c.node.K3s.SupervisorEndpoint
	raw, err := c.ex.Dial(ctx, "tcp", addr)
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
func (c *k3sCall) supervisorGet(ctx context.Context, p string, client *tls.Certificate) (int, []byte, error) {
	code, body, _, err := c.supervisorGetChain(ctx, p, client)
	return code, body, err
}

// supervisorGetChain is supervisorGet that also returns the certificate
// chain the supervisor served.
func (c *k3sCall) supervisorGetChain(ctx context.Context, p string, client *tls.Certificate) (int, []byte, []*x509.Certificate, error) {
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
	req, _ := http.NewRequest(http.MethodGet, "https://"+c.node.K3s.SupervisorEndpoint+p, nil)
	req.Close = true
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
func (c *k3sCall) verifyLive(ds *dsRead, row *verifyRow) {
	ctx, cancel := context.WithTimeout(c.ctx(), 20*time.Second)
	defer cancel()
	addr := c.node.K3s.SupervisorEndpoint
	dsCerts, err := k3s.ParseCertsPEM(ds.serverCA())
	if err != nil {
		row.live = "error"
		row.problems = append(row.problems, "the datastore's ServerCA does not parse: "+err.Error())
		return
	}
	// One connection: its chain, then GET /cacerts on it.
	code, body, certs, err := c.supervisorGetChain(ctx, "/cacerts", nil)
	if len(certs) == 0 {
		row.live = "down"
		if st, serr := c.unitShow(ctx); serr == nil && st.active != "active" {
			row.live = "down: " + st.describe()
			row.service = st.describe()
			row.problems = append(row.problems, fmt.Sprintf("%s is %s on %s: it does not serve %s (see journalctl -u %s)", c.node.K3s.Service, st.describe(), c.node.Name, addr, c.node.K3s.Service))
			row.cacerts = "down"
			return
		}
		row.problems = append(row.problems, fmt.Sprintf("live %s: %v", addr, err))
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
			row.live = "OLD " + leaf.Issuer.CommonName
			row.problems = append(row.problems, fmt.Sprintf("live %s serves a certificate issued by %s that does not verify against the datastore's server CA %s: %v", addr, leaf.Issuer.CommonName, dsCerts[0].Subject.CommonName, verr))
		case leaf.CheckSignatureFrom(dsCerts[0]) != nil:
			row.live = "prev. issuer"
			row.liveStale = true
			row.problems = append(row.problems, fmt.Sprintf("live %s certificate (serial %s) is still issued by %s, not by the datastore's CA %s: K3s issues a new one only when %s/%s exists at its start (create it and restart K3s on %s; rotate-ca does both)",
				addr, serialHex(leaf), leaf.Issuer.CommonName, dsCerts[0].Subject.CommonName, c.sd(), RegenerateFile, c.node.Name))
		default:
			row.live = "ok"
		}
	}
	switch {
	case err != nil:
		row.cacerts = "down"
		row.problems = append(row.problems, fmt.Sprintf("GET /cacerts on %s: %v", addr, err))
	case code != http.StatusOK:
		row.cacerts = fmt.Sprintf("HTTP %d", code)
		row.problems = append(row.problems, fmt.Sprintf("GET /cacerts on %s answered HTTP %d", addr, code))
	case !bytes.Equal(body, ds.serverCA()):
		row.cacerts = "OLD " + caSubject(body)
		row.problems = append(row.problems, fmt.Sprintf("/cacerts serves %s, the datastore %s (restart K3s on %s)", caDesc(body), caDesc(ds.serverCA()), c.node.Name))
	default:
		row.cacerts = "ok"
	}
}

// verifyAgent compares an agent's server-ca.crt with the datastore's.
func (c *k3sCall) verifyAgent(ds *dsRead, row *verifyRow) error {
	p := c.dd() + "/agent/server-ca.crt"
	files, err := c.fetchMap(p)
	if err != nil {
		return err
	}
	f, ok := files[p]
	switch {
	case !ok:
		row.agent = "missing"
		row.problems = append(row.problems, p+" is missing")
	case !bytes.Equal(f.Data, ds.serverCA()):
		row.agent = "OLD " + caSubject(f.Data)
		row.problems = append(row.problems, fmt.Sprintf("agent server-ca.crt holds %s, the datastore %s (restart %s on %s after the servers)", caDesc(f.Data), caDesc(ds.serverCA()), c.node.K3s.Service, c.node.Name))
	default:
		row.agent = "ok"
	}
	return nil
}

// verifyNodeWaiting is verifyNode that, for up to wait, re-checks a
// server whose only problem is a live certificate of the previous CA:
// running servers adopt the newest serving certificate (the
// kube-system/k3s-serving secret) a few seconds after a peer wrote it.
func (c *k3sCall) verifyNodeWaiting(ds *dsRead, live bool, wait time.Duration) verifyRow {
	row := c.verifyNode(ds, live)
	deadline := time.Now().Add(wait)
	for !row.ok && row.liveStale && len(row.problems) == 1 && time.Now().Before(deadline) {
		t := time.NewTimer(time.Second)
		select {
		case <-c.ctx().Done():
			t.Stop()
			return row
		case <-t.C:
		}
		row = c.verifyNode(ds, live)
	}
	return row
}

// verifyNode fills the row of one node.
func (c *k3sCall) verifyNode(ds *dsRead, live bool) verifyRow {
	row := verifyRow{node: c.node.Name, role: c.node.Role, disk: "-", live: "-", cacerts: "-", agent: "-"}
	var err error
	if c.node.Role == inventory.RoleServer {
		err = c.verifyServerDisk(ds, &row)
		if err == nil && live {
			c.verifyLive(ds, &row)
		}
	} else {
		err = c.verifyAgent(ds, &row)
	}
	if err != nil {
		row.problems = append(row.problems, err.Error())
		if row.disk == "-" && c.node.Role == inventory.RoleServer {
			row.disk = "error"
		}
	}
	row.ok = len(row.problems) == 0
	return row
}

// verifyTable renders rows as an aligned table.
func verifyTable(rows []verifyRow) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tDISK CA\tLIVE CHAIN\t/cacerts\tAGENT server-ca\tRESULT")
	for _, r := range rows {
		res := "ok"
		if !r.ok {
			res = "STALE"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.node, r.role, r.disk, r.live, r.cacerts, r.agent, res)
	}
	tw.Flush()
	return b.String()
}

// k3s.verify(nodes=None, expect="", focus=None, live=True, fail=True, quiet=False, wait="0s"):
// every server's disk CA set equals the datastore's, every server serves
// it live (TLS chain on the supervisor port, GET /cacerts), every agent's
// server-ca.crt equals it. expect is the sha256 the datastore's server CA
// must have (the staged one after a rotation). focus limits which nodes
// decide the result (the others are still shown). Returns
// struct(ok, rows, stale, datastore, table); fails with the table when not
// ok and fail is True (the error carries the table). quiet=True prints
// nothing. A live :6443 certificate must be issued by the datastore's
// CA itself: one of the previous CA ("prev. issuer") is not done. wait
// re-checks, for up to that long, servers whose only problem is such a
// certificate (servers converge on the newest one seconds after a
// restart).
func k3sVerify(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		nodesArg, focusArg starlark.Value = starlark.None, starlark.None
		expect             string
		live, fail         = true, true
		quiet              bool
		wait               Duration
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "nodes?", &nodesArg, "expect?", &expect, "focus?", &focusArg, "live?", &live, "fail?", &fail, "quiet?", &quiet, "wait?", &wait); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	nodes, err := nodeList(env, nodesArg)
	if err != nil {
		return nil, fmt.Errorf("%s: nodes: %w", b.Name(), err)
	}
	focus := nodes
	if focusArg != starlark.None {
		if focus, err = nodeList(env, focusArg); err != nil {
			return nil, fmt.Errorf("%s: focus: %w", b.Name(), err)
		}
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
	if err := env.CheckStop(); err != nil {
		return nil, err
	}
	candidates := append(append(append([]*inventory.Node{}, focus...), env.Node), nodes...)
	candidates = append(candidates, env.Nodes()...)
	ds, err := datastoreVia(env, b.Name(), candidates)
	if err != nil {
		return nil, err
	}
	dsFP, err := k3s.CAFingerprints(ds.serverCA())
	if err != nil {
		return nil, fmt.Errorf("%s: the datastore's ServerCA: %w", b.Name(), err)
	}
	rows, errs := forEachNode(env, nodes, b.Name(), func(c *k3sCall) (verifyRow, error) {
		return c.verifyNodeWaiting(ds, live, time.Duration(wait)), nil
	})
	for i, e := range errs {
		if e != nil {
			rows[i] = verifyRow{node: nodes[i].Name, role: nodes[i].Role, disk: "unreachable", live: "-", cacerts: "-", agent: "-", problems: []string{e.Error()}}
		}
	}
	inFocus := map[string]bool{}
	for _, n := range focus {
		inFocus[n.Name] = true
	}
	ok := true
	var stale, focusStale []string
	for _, r := range rows {
		if !r.ok {
			stale = append(stale, r.node)
			if inFocus[r.node] {
				focusStale = append(focusStale, r.node)
				ok = false
			}
		}
	}
	var dsProblem string
	if expect != "" && dsFP.SHA256 != expect {
		ok = false
		dsProblem = fmt.Sprintf("the datastore holds server CA %s, expected sha256 %s (did rotate_ca land?)", caDesc(ds.serverCA()), shortSHA(expect))
	}

	table := verifyTable(rows)
	var detail strings.Builder
	fmt.Fprintf(&detail, "datastore %s (via %s): server CA %s\n", ds.key, ds.via, caDesc(ds.serverCA()))
	if dsProblem != "" {
		fmt.Fprintf(&detail, "%s\n", dsProblem)
	}
	detail.WriteString(table)
	for _, r := range rows {
		for _, p := range r.problems {
			fmt.Fprintf(&detail, "  %s: %s\n", r.node, p)
		}
		for _, w := range r.warnings {
			fmt.Fprintf(&detail, "  %s: warning: %s\n", r.node, w)
		}
	}
	if !quiet {
		for _, line := range strings.Split(strings.TrimRight(detail.String(), "\n"), "\n") {
			env.Output(runner.StreamLog, line)
		}
	}

	var rowVals []starlark.Value
	for _, r := range rows {
		rowVals = append(rowVals, structOf("row", starlark.StringDict{
			"node": starlark.String(r.node), "role": starlark.String(r.role), "ok": starlark.Bool(r.ok),
			"disk": starlark.String(r.disk), "live": starlark.String(r.live), "cacerts": starlark.String(r.cacerts),
			"agent": starlark.String(r.agent), "problems": strList(r.problems), "warnings": strList(r.warnings),
			"previous": starlark.Bool(r.previous), "service": starlark.String(r.service),
		}))
	}
	dsv, err := datastoreValue(ds)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if !ok && fail {
		var head string
		switch {
		case len(focusStale) > 0:
			head = fmt.Sprintf("%s: %d node(s) do not hold the datastore's CA %s: %s", b.Name(), len(focusStale), caDesc(ds.serverCA()), strings.Join(focusStale, ", "))
			if extra := minus(stale, focusStale); len(extra) > 0 {
				head += fmt.Sprintf(" (also stale: %s)", strings.Join(extra, ", "))
			}
		default:
			head = b.Name() + ": " + dsProblem
		}
		return nil, fmt.Errorf("%s\n%s", head, detail.String())
	}
	return structOf("verify", starlark.StringDict{
		"ok":        starlark.Bool(ok),
		"rows":      starlark.NewList(rowVals),
		"stale":     strList(stale),
		"datastore": dsv,
		"table":     starlark.String(table),
	}), nil
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

// checkRow is one certificate of one node.
type checkRow struct {
	node string
	k3s.CertStatus
}

// k3s.check(nodes=None, warn_days=120, fail=False, quiet=False): the
// expiry of every certificate on every node, as `k3s certificate check`
// lists them (CA chains included); rows are struct(node, file, subject,
// issuer, usages, expires, residual_days, status, serial, ca); quiet=True
// does not print the table. Returns struct(ok, rows, counts, table); ok is False
// when a certificate is expired, not yet valid or within warn_days of
// expiry, and then fail=True fails the step.
func k3sCheck(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		nodesArg starlark.Value = starlark.None
		warnDays                = k3s.CertificateRenewDays
		fail     bool
		quiet    bool
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "nodes?", &nodesArg, "warn_days?", &warnDays, "fail?", &fail, "quiet?", &quiet); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	nodes, err := nodeList(env, nodesArg)
	if err != nil {
		return nil, fmt.Errorf("%s: nodes: %w", b.Name(), err)
	}
	now := time.Now()
	warn := time.Duration(warnDays) * 24 * time.Hour
	results, errs := forEachNode(env, nodes, b.Name(), func(c *k3sCall) ([]k3s.CertStatus, error) {
		services := k3s.CheckServices(c.node.Role == inventory.RoleServer)
		rel, err := k3s.FilesForServices(services)
		if err != nil {
			return nil, c.errorf("%w", err)
		}
		var pats []string
		for _, p := range rel {
			pats = append(pats, c.dd()+"/"+p)
		}
		files, err := c.fetch(pats...)
		if err != nil {
			return nil, err
		}
		m := map[string][]byte{}
		for _, f := range files {
			m[f.Path] = f.Data
		}
		return k3s.CheckCertificates(m, now, warn), nil
	})
	if err := firstErr(errs); err != nil {
		return nil, err
	}
	var rows []checkRow
	for i, certs := range results {
		for _, cs := range certs {
			rows = append(rows, checkRow{node: nodes[i].Name, CertStatus: cs})
		}
	}
	counts := map[string]int{}
	var b2 strings.Builder
	tw := tabwriter.NewWriter(&b2, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tFILENAME\tSUBJECT\tEXPIRES\tRESIDUAL\tSTATUS")
	var rowVals []starlark.Value
	ok := true
	for _, r := range rows {
		counts[r.Status]++
		if r.Status != k3s.StatusOK {
			ok = false
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%dd\t%s\n", r.node, r.Filename, r.Subject, r.ExpiryTime.UTC().Format("2006-01-02 15:04 MST"), int(r.ResidualTime.Hours()/24), r.Status)
		rowVals = append(rowVals, structOf("cert", starlark.StringDict{
			"node": starlark.String(r.node), "file": starlark.String(r.Filename), "subject": starlark.String(r.Subject),
			"issuer": starlark.String(r.Issuer), "usages": strList(r.Usages),
			"expires":       starlark.String(r.ExpiryTime.UTC().Format(time.RFC3339)),
			"residual_days": starlark.MakeInt(int(r.ResidualTime.Hours() / 24)),
			"status":        starlark.String(r.Status),
			"serial":        starlark.String(r.Serial),
			"ca":            starlark.Bool(r.IsCA),
		}))
	}
	tw.Flush()
	table := b2.String()
	if !quiet {
		for _, line := range strings.Split(strings.TrimRight(table, "\n"), "\n") {
			env.Output(runner.StreamLog, line)
		}
	}
	countDict := starlark.NewDict(len(counts))
	for k, v := range counts {
		countDict.SetKey(starlark.String(k), starlark.MakeInt(v))
	}
	if !ok && fail {
		var bad []string
		for _, r := range rows {
			if r.Status != k3s.StatusOK {
				bad = append(bad, fmt.Sprintf("%s %s (%s): %s %s", r.node, r.Filename, r.Subject, r.Status, r.ExpiryTime.UTC().Format(time.RFC3339)))
			}
		}
		sort.Strings(bad)
		return nil, fmt.Errorf("%s: %d certificate(s) need attention (expired, not yet valid or expiring within %d days): %s\n%s", b.Name(), len(bad), warnDays, strings.Join(bad, "; "), table)
	}
	return structOf("check", starlark.StringDict{
		"ok":     starlark.Bool(ok),
		"rows":   starlark.NewList(rowVals),
		"counts": countDict,
		"table":  starlark.String(table),
	}), nil
}
