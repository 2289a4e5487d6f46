package main

// Acceptance (both engines): health judged per server. A garbled server
// token, a wrong etcd_endpoint for one server and a stopped K3s on one
// server are each named with the reason by `caretaker check` (exit 1,
// never drift), and rotate-ca's preflight refuses them before anything
// changes. On the real engine these are real K3s's own behaviours: its
// etcd stops with it, and its token is what opens the datastore.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

func accServerHealth(t *testing.T, l *e2eLab) {
	const broken = "server-2"
	inv := l.InventoryPath()
	unchanged := l.watchTrees(t)

	// A garbled token: server-2 would not come back from a restart.
	tokenPath := filepath.Join(k3sops.ServerDir(l.Node(broken)), "token")
	restore := l.replaceNodeFile(t, broken, tokenPath, []byte("K10dead::server:x\n"))
	unchanged.reset()
	c := l.check(t, inv)
	pre := l.runCaretaker(l.rotateArgs("--check")...)
	unchanged.verify("garbled token")
	restore()
	if row := checkRow(c, broken); c.Code != exitFailed || c.rep.Status != "broken" || c.rep.CA.Via == broken || row.Datastore != "token" ||
		len(containsAll(strings.Join(c.rep.Problems, "\n"), broken+": "+tokenPath, "would not come back from a restart")) > 0 {
		t.Errorf("garbled token on %s: check exit %d, status %s, via %s, row %+v: %s", broken, c.Code, c.rep.Status, c.rep.CA.Via, row, c.rep.Summary)
	}
	l.wantPreflightRefusal(t, pre, broken+" cannot read the datastore itself")

	// A wrong etcd_endpoint for server-2 only: the others read the
	// datastore, server-2 is named, and "via" is the server used.
	wrong := l.withNodeEtcdEndpoint(t, broken, l.NodeAddress(broken)+":1")
	unchanged.reset()
	c = l.check(t, wrong)
	pre = runCaretakerBinary(t, "run", "rotate-ca", "-i", wrong, "--check", "--yes", "-o", "json", "--state-dir", l.StateDir)
	unchanged.verify("wrong etcd_endpoint")
	if row := checkRow(c, broken); c.Code != exitFailed || c.rep.Status != "unreachable" || c.rep.CA.Via != "server-1" || row.Datastore != "unreadable" ||
		!strings.Contains(strings.Join(row.Problems, "\n"), l.NodeAddress(broken)+":1") {
		t.Errorf("wrong etcd_endpoint on %s: check exit %d, status %s, via %s, row %+v: %s", broken, c.Code, c.rep.Status, c.rep.CA.Via, row, c.rep.Summary)
	}
	l.wantPreflightRefusal(t, pre, broken+" cannot read the datastore itself")

	// K3s stopped on server-2: an outage (exit 1), not drift (4).
	l.nodeExec(t, broken, "systemctl stop "+l.Node(broken).K3s.Service)
	unchanged.reset()
	c = l.check(t, inv)
	pre = l.runCaretaker(l.rotateArgs("--check")...)
	unchanged.verify("stopped K3s")
	l.nodeExec(t, broken, "systemctl start "+l.Node(broken).K3s.Service)
	if row := checkRow(c, broken); c.Code != exitFailed || c.rep.Status != "down" || row.Service == "" || !strings.Contains(c.rep.Summary, "K3s is not running on "+broken) {
		t.Errorf("K3s stopped on %s: check exit %d, status %s, row %+v: %s", broken, c.Code, c.rep.Status, row, c.rep.Summary)
	}
	l.wantPreflightRefusal(t, pre, "K3s is not active or not serving on "+broken)
	l.waitHealthy(t, 3*time.Minute)
}

// checkRow is the CA row of node in a check report.
func checkRow(c checkRun, node string) k3sops.Row {
	for _, r := range c.rep.CA.Nodes {
		if r.Node == node {
			return r
		}
	}
	return k3sops.Row{}
}

// wantPreflightRefusal wants a rotate-ca --check run that failed in
// preflight saying want, with no later step started.
func (l *e2eLab) wantPreflightRefusal(t *testing.T, res cliResult, want string) {
	t.Helper()
	if res.Code != exitFailed || res.StepStatus("preflight", "server-1") != "failed" || !strings.Contains(res.StepError("preflight", "server-1"), want) || res.Started("backup", "server-1") {
		t.Errorf("rotate-ca --check: want preflight to refuse with %q:\n%s", want, res.Describe())
	}
	l.assertNoSecret(res)
}

// nodeExec runs a command on a node directly (not through caretaker).
func (l *e2eLab) nodeExec(t *testing.T, node, cmd string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, errOut, code, err := l.Exec(ctx, node, cmd); err != nil || code != 0 {
		t.Fatalf("%s: %s: exit %d %v\n%s%s", node, cmd, code, err, out, errOut)
	}
}

// waitHealthy waits until `caretaker check` says healthy (after a fault
// was taken away).
func (l *e2eLab) waitHealthy(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c := l.check(t, l.InventoryPath())
		if c.Code == exitOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster is not healthy again after %s: %s", limit, c.rep.Summary)
		}
		time.Sleep(2 * time.Second)
	}
}

// withNodeEtcdEndpoint is a copy of the lab's inventory where node's
// k3s.etcd_endpoint is endpoint.
func (l *e2eLab) withNodeEtcdEndpoint(t *testing.T, node, endpoint string) string {
	t.Helper()
	data, err := os.ReadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	n := findNodeMapping(&doc, node)
	if n == nil {
		t.Fatalf("no node %s in the inventory", node)
	}
	k3sMap := mappingValue(n, "k3s")
	if k3sMap == nil {
		k3sMap = &yaml.Node{Kind: yaml.MappingNode}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "k3s"}, k3sMap)
	}
	if v := mappingValue(k3sMap, "etcd_endpoint"); v != nil {
		v.Value = endpoint
	} else {
		k3sMap.Content = append(k3sMap.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "etcd_endpoint"}, &yaml.Node{Kind: yaml.ScalarNode, Value: endpoint})
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(l.InventoryPath()), fmt.Sprintf("inventory-%s-etcd.yaml", node))
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// findNodeMapping finds the mapping of the node named name in a YAML tree.
func findNodeMapping(n *yaml.Node, name string) *yaml.Node {
	if n.Kind == yaml.MappingNode {
		if v := mappingValue(n, "name"); v != nil && v.Value == name && mappingValue(n, "role") != nil {
			return n
		}
	}
	for _, c := range n.Content {
		if m := findNodeMapping(c, name); m != nil {
			return m
		}
	}
	return nil
}

// mappingValue is the value of key in a YAML mapping, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// treeWatch snapshots every node's tree and reports what changed.
type treeWatch struct {
	t      *testing.T
	l      *e2eLab
	before map[string]treeSnapshot
}

// watchTrees starts watching the node trees (see reset and verify).
func (l *e2eLab) watchTrees(t *testing.T) *treeWatch {
	w := &treeWatch{t: t, l: l}
	w.reset()
	return w
}

// reset takes the snapshot that verify compares with.
func (w *treeWatch) reset() {
	w.before = map[string]treeSnapshot{}
	for _, n := range w.l.Nodes("") {
		w.before[n] = w.l.snapshotNode(n)
	}
}

// verify fails the test when a node's files differ from the snapshot.
func (w *treeWatch) verify(what string) {
	w.t.Helper()
	for _, n := range w.l.Nodes("") {
		if d := diffTrees(w.before[n], w.l.snapshotNode(n)); len(d) > 0 {
			w.t.Errorf("%s: %s changed on %s: %v", what, "caretaker", n, d)
		}
	}
}
