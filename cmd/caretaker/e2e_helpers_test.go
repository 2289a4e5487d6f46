package main

// Shared helpers for end-to-end tests: they build the caretaker binary once
// per test binary, start labs (real SSH, real etcd) on their own subnets,
// run the binary against them, parse its JSON events and compare node file
// trees. Other e2e tests of this package reuse them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
	"github.com/caretaker/caretaker/runner/inventory"
)

var (
	e2eBinOnce sync.Once
	e2eBinPath string
	e2eBinErr  error
)

// caretakerBinary builds ./cmd/caretaker once per test binary into a temp
// dir and returns its path.
func caretakerBinary(t testing.TB) string {
	t.Helper()
	e2eBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caretaker-e2e-bin-")
		if err != nil {
			e2eBinErr = err
			return
		}
		out := filepath.Join(dir, "caretaker")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		cmd := exec.Command(goBin, "build", "-o", out, "github.com/caretaker/caretaker/cmd/caretaker")
		if b, err := cmd.CombinedOutput(); err != nil {
			e2eBinErr = fmt.Errorf("build caretaker: %v\n%s", err, b)
			return
		}
		e2eBinPath = out
	})
	if e2eBinErr != nil {
		t.Fatalf("e2e: %v", e2eBinErr)
	}
	return e2eBinPath
}

// e2eLab is a running lab of either engine with its inventory loaded.
// Everything it checks it reads independently of caretaker: node files
// from the node's tree on this host, the datastore straight from etcd at
// a server's address, the live chain from its :6443.
type e2eLab struct {
	lab.Handle
	t        testing.TB
	Inv      *inventory.Inventory
	Cluster  *inventory.Cluster
	StateDir string
}

// startE2ELab starts a lab for the test on a subnet of its own (closed when
// the test ends) and loads its inventory: the simulator, or the real
// engine when o.Engine says so.
func startE2ELab(t testing.TB, o lab.Options) *e2eLab {
	t.Helper()
	l := labtest.StartEngine(t, o)
	return loadE2ELab(t, l)
}

// loadE2ELab wraps a running lab for the test.
func loadE2ELab(t testing.TB, l lab.Handle) *e2eLab {
	t.Helper()
	inv, err := inventory.Load(l.InventoryPath())
	if err != nil {
		t.Fatalf("e2e: load the lab inventory: %v", err)
	}
	c, err := inv.Cluster("")
	if err != nil {
		t.Fatal(err)
	}
	return &e2eLab{Handle: l, t: t, Inv: inv, Cluster: c, StateDir: t.TempDir()}
}

// Node returns a node of the lab's inventory.
func (l *e2eLab) Node(name string) *inventory.Node {
	l.t.Helper()
	for _, n := range l.Cluster.Nodes {
		if n.Name == name {
			return n
		}
	}
	l.t.Fatalf("e2e: no node %q in the lab", name)
	return nil
}

// Nodes returns the names of the lab's nodes with role ("" for all).
func (l *e2eLab) Nodes(role string) []string {
	var out []string
	for _, n := range l.Cluster.Nodes {
		if role == "" || n.Role == role {
			out = append(out, n.Name)
		}
	}
	return out
}

// HostPath maps a path as a node sees it to the host path in the node's
// tree (DIR/<node> is the node's /).
func (l *e2eLab) HostPath(node, p string) string { return filepath.Join(l.NodeRoot(node), p) }

// ReadNodeFile reads a file of a node by the path the node sees.
func (l *e2eLab) ReadNodeFile(node, p string) []byte {
	l.t.Helper()
	b, err := os.ReadFile(l.HostPath(node, p))
	if err != nil {
		l.t.Fatalf("e2e: %s: read %s: %v", node, p, err)
	}
	return b
}

// cliResult is one run of the caretaker binary.
type cliResult struct {
	Code           int
	Stdout, Stderr string
	Events         []e2eEvent
	Took           time.Duration
}

// e2eEvent is one JSON event of --output json.
type e2eEvent struct {
	Type string
	Raw  map[string]any
}

func (e e2eEvent) str(k string) string {
	s, _ := e.Raw[k].(string)
	return s
}

// runCaretaker runs the binary with args (and --state-dir of the lab when
// args hold none) and parses JSON events from stdout when present.
func (l *e2eLab) runCaretaker(args ...string) cliResult {
	l.t.Helper()
	has := false
	for _, a := range args {
		if a == "--state-dir" || strings.HasPrefix(a, "--state-dir=") {
			has = true
		}
	}
	if !has && len(args) > 0 && args[0] == "run" {
		args = append(args, "--state-dir", l.StateDir)
	}
	return runCaretakerBinary(l.t, args...)
}

// runCaretakerBinary runs the caretaker binary with a 3-minute limit.
func runCaretakerBinary(t testing.TB, args ...string) cliResult {
	t.Helper()
	return runCaretakerBinaryFor(t, 3*time.Minute, args...)
}

// runCaretakerBinaryFor runs the caretaker binary with a time limit.
func runCaretakerBinaryFor(t testing.TB, limit time.Duration, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, caretakerBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	start := time.Now()
	err := cmd.Run()
	res := cliResult{Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	var xe *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &xe):
		res.Code = xe.ExitCode()
	default:
		t.Fatalf("e2e: run caretaker %s: %v", strings.Join(args, " "), err)
	}
	sc := bufio.NewScanner(strings.NewReader(res.Stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var raw map[string]any
		if json.Unmarshal(line, &raw) != nil {
			continue
		}
		ty, _ := raw["type"].(string)
		res.Events = append(res.Events, e2eEvent{Type: ty, Raw: raw})
	}
	return res
}

// StepStatus returns the final status of step on node ("" if it never
// finished there).
func (r cliResult) StepStatus(step, node string) string {
	for _, e := range r.Events {
		if e.Type == "step_done" && e.str("step_name") == step && e.str("node") == node {
			return e.str("status")
		}
	}
	return ""
}

// StepError returns the error of step on node.
func (r cliResult) StepError(step, node string) string {
	for _, e := range r.Events {
		if e.Type == "step_done" && e.str("step_name") == step && e.str("node") == node {
			return e.str("error") + "\n" + e.str("detail")
		}
	}
	return ""
}

// Started reports whether step started on node.
func (r cliResult) Started(step, node string) bool {
	for _, e := range r.Events {
		if e.Type == "step_started" && e.str("step_name") == step && e.str("node") == node {
			return true
		}
	}
	return false
}

// Output returns the output lines of a node (every step; "" for all nodes).
func (r cliResult) Output(node string) []string {
	var out []string
	for _, e := range r.Events {
		if e.Type == "output" && (node == "" || e.str("node") == node) {
			out = append(out, e.str("text"))
		}
	}
	return out
}

// Notes returns the run's notes.
func (r cliResult) Notes() []string {
	var out []string
	for _, e := range r.Events {
		if e.Type == "note" {
			out = append(out, e.str("text"))
		}
	}
	return out
}

// RunStatus is the status of the run_done event.
func (r cliResult) RunStatus() string {
	for _, e := range r.Events {
		if e.Type == "run_done" {
			return e.str("status")
		}
	}
	return ""
}

// Describe summarizes a run for failure messages.
func (r cliResult) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "exit %d after %s\n", r.Code, r.Took.Round(time.Millisecond))
	for _, e := range r.Events {
		switch e.Type {
		case "step_done":
			fmt.Fprintf(&b, "  [%s] %s: %s %s %s\n", e.str("step_name"), e.str("node"), e.str("status"), e.str("reason"), e.str("error"))
		case "note":
			fmt.Fprintf(&b, "  note: %s\n", e.str("text"))
		case "output":
			fmt.Fprintf(&b, "    %s | %s\n", e.str("node"), e.str("text"))
		}
	}
	if len(r.Events) == 0 {
		b.WriteString(r.Stdout)
	}
	if r.Stderr != "" {
		b.WriteString("stderr: " + r.Stderr)
	}
	return b.String()
}

// configSources reads every K3s config source of a node (unit and its
// drop-ins, config.yaml and its drop-ins, the env files), by path.
func (l *e2eLab) configSources(node string) map[string][]byte {
	l.t.Helper()
	n := l.Node(node)
	out := map[string][]byte{}
	add := func(p string) {
		if b, err := os.ReadFile(l.HostPath(node, p)); err == nil {
			out[p] = b
		}
	}
	add(n.K3s.UnitFile)
	add(n.K3s.ConfigFile)
	for _, pat := range []string{n.K3s.UnitFile + ".d/*.conf", n.K3s.ConfigFile + ".d/*.yaml", n.K3s.ConfigFile + ".d/*.yml"} {
		ms, _ := filepath.Glob(l.HostPath(node, pat))
		for _, m := range ms {
			rel, _ := filepath.Rel(l.NodeRoot(node), m)
			add("/" + rel)
		}
	}
	for _, p := range n.K3s.EnvFiles {
		add(p)
	}
	return out
}

// allConfigSources is configSources of every node, keyed node/path.
func (l *e2eLab) allConfigSources() map[string][]byte {
	out := map[string][]byte{}
	for _, n := range l.Nodes("") {
		for p, b := range l.configSources(n) {
			out[n+" "+p] = b
		}
	}
	return out
}

// sameSources compares two allConfigSources results.
func sameSources(a, b map[string][]byte) []string {
	var diff []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			diff = append(diff, "missing "+k)
		} else if !bytes.Equal(v, w) {
			diff = append(diff, "changed "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diff = append(diff, "added "+k)
		}
	}
	sort.Strings(diff)
	return diff
}

// Token is the cluster token as server-1 keeps it (SD/token). Tests only:
// never log it.
func (l *e2eLab) Token() string {
	l.t.Helper()
	s := l.Nodes(inventory.RoleServer)[0]
	return strings.TrimSpace(string(l.ReadNodeFile(s, filepath.Join(l.Node(s).K3s.DataDir, "server", "token"))))
}

// etcdClient connects straight to the cluster's etcd members at the
// servers' addresses (not through caretaker), with the etcd client
// certificate of the first server that has one.
func (l *e2eLab) etcdClient() *clientv3.Client {
	l.t.Helper()
	var eps []string
	var cfg *tls.Config
	for _, s := range l.Nodes(inventory.RoleServer) {
		eps = append(eps, net.JoinHostPort(l.NodeAddress(s), "2379"))
		if cfg != nil {
			continue
		}
		dir := filepath.Join(l.NodeRoot(s), l.Node(s).K3s.DataDir, "server", "tls", "etcd")
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
		if err != nil {
			continue // the server has not started yet
		}
		caPEM, err := os.ReadFile(filepath.Join(dir, "server-ca.crt"))
		if err != nil {
			continue
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
	}
	if cfg == nil {
		l.t.Fatal("e2e: no server has an etcd client certificate")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop(), TLS: cfg})
	if err != nil {
		l.t.Fatalf("e2e: etcd client: %v", err)
	}
	l.t.Cleanup(func() { cli.Close() })
	return cli
}

// datastore reads and decrypts the cluster's bootstrap data straight from
// etcd (not through caretaker), with a server's etcd client certificate
// and the cluster token.
func (l *e2eLab) datastore() k3s.BootstrapData {
	l.t.Helper()
	cli := l.etcdClient()
	pass, err := k3s.NormalizeToken(l.Token())
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k3s.StorageKey(pass))
	if err != nil || len(resp.Kvs) != 1 {
		l.t.Fatalf("e2e: read the bootstrap key: %v (%v)", err, resp)
	}
	plain, err := k3s.Decrypt(pass, string(resp.Kvs[0].Value))
	if err != nil {
		l.t.Fatalf("e2e: decrypt the bootstrap data: %v", err)
	}
	d, err := k3s.UnmarshalBootstrap(plain)
	if err != nil {
		l.t.Fatal(err)
	}
	return d
}

// liveCA returns, for a server, the PEM of the certificate chain its
// supervisor serves (leaf first) and the body of GET /cacerts, reached
// directly at its supervisor endpoint.
func (l *e2eLab) liveCA(node string, trust []byte) (chain []*x509.Certificate, cacerts []byte, verifyErr error) {
	l.t.Helper()
	n := l.Node(node)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(trust)
	var verr error
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified below against trust, without host names
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, verr = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return nil
		},
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	_ = n
	resp, err := client.Get("https://" + net.JoinHostPort(l.NodeAddress(node), "6443") + "/cacerts")
	if err != nil {
		l.t.Fatalf("e2e: GET /cacerts on %s: %v", node, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.TLS.PeerCertificates, body, verr
}

// assertClusterHoldsCA checks, independently of caretaker, that every
// server's disk CA set, the datastore, every live chain and /cacerts and
// every agent's server-ca.crt hold want (the datastore's server CA bundle).
func (l *e2eLab) assertClusterHoldsCA(want []byte) {
	l.t.Helper()
	ds := l.datastore()
	if !bytes.Equal(ds[k3s.KeyServerCA].Content, want) {
		l.t.Errorf("the datastore's server CA is %s, want %s", caName(ds[k3s.KeyServerCA].Content), caName(want))
	}
	for _, name := range l.Nodes(inventory.RoleServer) {
		n := l.Node(name)
		sd := filepath.Join(n.K3s.DataDir, "server")
		for _, bf := range k3s.BootstrapFiles {
			if !bf.Rotate {
				continue
			}
			disk := l.ReadNodeFile(name, filepath.Join(sd, bf.Path))
			if !bytes.Equal(disk, ds[bf.Key].Content) {
				l.t.Errorf("%s: disk %s differs from the datastore's %s", name, bf.Path, bf.Key)
			}
		}
		chain, cacerts, verr := l.liveCA(name, want)
		if verr != nil {
			l.t.Errorf("%s: the live chain (issued by %s) does not verify against the new CA: %v", name, chain[0].Issuer.CommonName, verr)
		}
		if !bytes.Equal(cacerts, want) {
			l.t.Errorf("%s: /cacerts serves %s, want %s", name, caName(cacerts), caName(want))
		}
	}
	for _, name := range l.Nodes(inventory.RoleAgent) {
		n := l.Node(name)
		got := l.ReadNodeFile(name, filepath.Join(n.K3s.DataDir, "agent", "server-ca.crt"))
		if !bytes.Equal(got, want) {
			l.t.Errorf("%s: agent/server-ca.crt holds %s, want %s", name, caName(got), caName(want))
		}
	}
}

// serverCA is the server CA bundle on a server's disk.
func (l *e2eLab) serverCA(node string) []byte {
	n := l.Node(node)
	return l.ReadNodeFile(node, filepath.Join(n.K3s.DataDir, "server", k3s.PathServerCA))
}

func caName(b []byte) string {
	fp, err := k3s.CAFingerprints(b)
	if err != nil {
		return fmt.Sprintf("unreadable (%d bytes)", len(b))
	}
	return fmt.Sprintf("%s (sha256 %.12s)", fp.Subject, fp.SHA256)
}

// containsAll reports the wanted substrings missing from s.
func containsAll(s string, want ...string) []string {
	var missing []string
	for _, w := range want {
		if !strings.Contains(s, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// fault injects a fault into a node's K3s service (lab.FaultFailStart,
// lab.FaultHangStart, lab.FaultClear) on either engine.
func (l *e2eLab) fault(node, f string) error {
	return l.InjectFault(context.Background(), node, f)
}

// serviceState is `systemctl is-active` of the node's K3s service, asked
// on the node directly.
func (l *e2eLab) serviceState(node string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, _, err := l.Exec(ctx, node, "systemctl is-active "+l.Node(node).K3s.Service)
	if err != nil {
		l.t.Fatalf("e2e: %s: systemctl is-active: %v", node, err)
	}
	return strings.TrimSpace(out)
}
