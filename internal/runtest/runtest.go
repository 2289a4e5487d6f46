// Package runtest runs playbooks for tests of the engine and its parts
// (runner, runner/notify, runner/window): a four-node inventory whose
// nodes are fake executors, the core builtins, and the events of the run
// collected for assertions. Test support only.
package runtest

import (
	"context"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// Inventory is the fixture's cluster "t": servers s1, s2 (group etcd), s3
// and agent a1.
const Inventory = `
clusters:
  - name: t
    nodes:
      - {name: s1, address: 10.0.0.1, role: server, groups: [etcd]}
      - {name: s2, address: 10.0.0.2, role: server, groups: [etcd]}
      - {name: s3, address: 10.0.0.3, role: server}
      - {name: a1, address: 10.0.0.9, role: agent}
`

// Fixture loads and runs playbooks against fake nodes and records every
// event of its runs.
type Fixture struct {
	T       *testing.T
	Cluster *inventory.Cluster
	Fakes   map[string]*fake.Executor

	mu     sync.Mutex
	events []runner.Event
}

// NewFixture builds a fixture on Inventory with one fake executor per node.
func NewFixture(t *testing.T) *Fixture {
	t.Helper()
	inv, err := inventory.Parse("inv.yaml", []byte(Inventory))
	if err != nil {
		t.Fatal(err)
	}
	f := &Fixture{T: t, Cluster: inv.Clusters[0], Fakes: map[string]*fake.Executor{}}
	for _, n := range f.Cluster.Nodes {
		f.Fakes[n.Name] = fake.New(n.Name)
	}
	return f
}

// Load loads src as the playbook pb.star with the core builtins and assert.
func (f *Fixture) Load(src string, params map[string]string, limit string) (*runner.Plan, error) {
	pre, err := builtins.All(builtins.Assert)
	if err != nil {
		f.T.Fatal(err)
	}
	fsys := fstest.MapFS{"pb.star": {Data: []byte(src)}}
	return runner.Load(runner.LoadOptions{Path: "pb.star", FS: fsys, Params: params, Predeclared: pre, Cluster: f.Cluster, Limit: limit})
}

// MustLoad is Load that fails the test on an error.
func (f *Fixture) MustLoad(src string) *runner.Plan {
	f.T.Helper()
	p, err := f.Load(src, nil, "")
	if err != nil {
		f.T.Fatal(err)
	}
	return p
}

// Run executes plan on the fake nodes; opts.Sink, when set, also gets
// every event.
func (f *Fixture) Run(plan *runner.Plan, opts runner.RunOptions) (runner.RunDone, error) {
	opts.Connect = func(ctx context.Context, n *inventory.Node) (transport.Executor, error) { return f.Fakes[n.Name], nil }
	opts.NodeValue = builtins.NodeValue
	next := opts.Sink
	opts.Sink = runner.SinkFunc(func(e runner.Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
		if next != nil {
			next.Emit(e)
		}
	})
	return runner.NewRun(plan, opts).Execute(context.Background())
}

// Events returns a copy of the events recorded so far.
func (f *Fixture) Events() []runner.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]runner.Event(nil), f.events...)
}

// Reset forgets the recorded events.
func (f *Fixture) Reset() {
	f.mu.Lock()
	f.events = nil
	f.mu.Unlock()
}

// Status is the final status of step on node (StatusPending if it never
// finished).
func (f *Fixture) Status(step, node string) runner.Status {
	for _, e := range f.Events() {
		if d, ok := e.(runner.StepDone); ok && d.StepName == step && d.Node == node {
			return d.Status
		}
	}
	return runner.StatusPending
}

// Output lists "node: text" of the output lines of stream ("" for all).
func (f *Fixture) Output(stream string) []string {
	var out []string
	for _, e := range f.Events() {
		if o, ok := e.(runner.OutputLine); ok && (stream == "" || o.Stream == stream) {
			out = append(out, o.Node+": "+o.Text)
		}
	}
	return out
}
