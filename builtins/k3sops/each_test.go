package k3sops_test

// Health judged per server: Verify reads the datastore through every
// server, each with its own token and etcd endpoint, on fake executors
// whose tunnels reach a real (embedded) etcd (builtins/k3stest).

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/builtins/k3stest"
	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

var env *k3stest.Env

func TestMain(m *testing.M) {
	e, err := k3stest.NewEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	_ = e.Close()
	os.Exit(code)
}

// verifyAll runs k3sops.Verify over every node of the cluster as a
// one-step run (as `caretaker check` does) and returns its result.
func verifyAll(t *testing.T, c *k3stest.Cluster) *k3sops.VerifyResult {
	t.Helper()
	var (
		mu  sync.Mutex
		res *k3sops.VerifyResult
	)
	nodes := c.Inventory.Nodes
	step := &runner.Step{Name: "verify", Selector: "server-1", Nodes: []*inventory.Node{nodes[0]}, Once: true,
		Func: func(ctx context.Context, e *runner.Env) error {
			r, err := k3sops.Verify(ctx, e, "k3s.verify", k3sops.VerifyOptions{Nodes: nodes, Live: true, Quiet: true})
			mu.Lock()
			res = r
			mu.Unlock()
			return err
		}}
	plan := &runner.Plan{Playbook: "t", Cluster: c.Inventory, Nodes: nodes, Steps: []*runner.Step{step}}
	done, err := runner.NewRun(plan, runner.RunOptions{Pool: c.Pool(), Sink: runner.SinkFunc(func(runner.Event) {})}).Execute(context.Background())
	if err != nil || res == nil {
		t.Fatalf("verify: %v (%+v)", err, done.Failed)
	}
	return res
}

func rowOf(res *k3sops.VerifyResult, node string) k3sops.Row {
	for _, r := range res.Rows {
		if r.Node == node {
			return r
		}
	}
	return k3sops.Row{}
}

// TestVerifyReadsTheDatastoreThroughEveryServer: every server reads the
// datastore itself; one with a wrong etcd endpoint, wherever it is in the
// inventory, is named with the reason while the others read it; "via" is
// the server actually used; a garbled token is told apart ("token").
func TestVerifyReadsTheDatastoreThroughEveryServer(t *testing.T) {
	c, err := k3stest.NewCluster(env, k3stest.Options{Servers: 3, Agents: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res := verifyAll(t, c)
	if !res.OK || res.Datastore.Via != "server-1" || strings.Join(res.Datastore.Readers, ",") != "server-1,server-2,server-3" || len(res.Datastore.Failed) != 0 {
		t.Fatalf("healthy: ok=%v via=%s readers=%v failed=%v\n%s", res.OK, res.Datastore.Via, res.Datastore.Readers, res.Datastore.Failed, res.Table)
	}
	for _, r := range res.Rows {
		want := map[string]string{inventory.RoleServer: "ok", inventory.RoleAgent: "-"}[r.Role]
		if r.Datastore != want {
			t.Errorf("healthy: %s datastore %q, want %q", r.Node, r.Datastore, want)
		}
	}

	for _, broken := range []string{"server-2", "server-1"} {
		n := c.Node(broken)
		good := n.K3s.EtcdEndpoint
		n.K3s.EtcdEndpoint = "127.0.0.1:1"
		res = verifyAll(t, c)
		n.K3s.EtcdEndpoint = good
		wantVia := map[string]string{"server-2": "server-1", "server-1": "server-2"}[broken]
		row := rowOf(res, broken)
		if res.OK || res.Datastore.Via != wantVia || row.OK || row.Datastore != "unreadable" || len(row.Problems) != 1 ||
			!strings.Contains(row.Problems[0], "cannot read the datastore itself with its own token and etcd endpoint (read via "+wantVia+" instead)") || !strings.Contains(row.Problems[0], "127.0.0.1:1") {
			t.Errorf("wrong etcd endpoint on %s: ok=%v via=%s row %+v\n%s", broken, res.OK, res.Datastore.Via, row, res.Table)
		}
		for _, r := range res.Rows {
			if r.Node != broken && !r.OK {
				t.Errorf("wrong etcd endpoint on %s: %s is not ok: %v", broken, r.Node, r.Problems)
			}
		}
	}

	ex := c.Execs["server-3"]
	tokenPath := k3sops.ServerDir(c.Node("server-3")) + "/" + k3s.PathToken
	orig, _ := ex.File(tokenPath)
	ex.SetFile(tokenPath, []byte("K10dead::server:x\n"), 0o600)
	res = verifyAll(t, c)
	ex.SetFile(tokenPath, orig, 0o600)
	row := rowOf(res, "server-3")
	if res.OK || res.Datastore.Via != "server-1" || row.Datastore != "token" || len(row.Problems) != 1 || !strings.Contains(row.Problems[0], "would not come back from a restart") {
		t.Errorf("garbled token on server-3: ok=%v via=%s row %+v", res.OK, res.Datastore.Via, row)
	}
	if strings.Contains(res.Table+strings.Join(row.Problems, ""), "server:x") {
		t.Errorf("the garbled token shows in the result")
	}
}
