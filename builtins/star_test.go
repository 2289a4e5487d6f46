package builtins_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

const starInventory = `
clusters:
  - name: t
    nodes:
      - {name: s1, address: 10.0.0.1, role: server, groups: [etcd], labels: {zone: a}}
      - {name: s2, address: 10.0.0.2, role: server}
      - {name: a1, address: 10.0.0.9, role: agent}
`

// fakeShell answers the few shell commands core.star uses.
func fakeShell(fk *fake.Executor) {
	fk.On(`^echo hi$`, fake.Reply{Stdout: "hi\n"})
	fk.On(`^exit 3$`, fake.Reply{Stderr: "boom\n", Code: 3})
	fk.OnFunc(`^cat$`, func(_ string, stdin []byte, stdout, _ io.Writer) int {
		stdout.Write(stdin)
		return 0
	})
}

// TestCoreStar runs testdata/core.star as a playbook against fake nodes and
// requires every step to end as the file intends.
func TestCoreStar(t *testing.T) {
	inv, err := inventory.Parse("inv.yaml", []byte(starInventory))
	if err != nil {
		t.Fatal(err)
	}
	cluster := inv.Clusters[0]
	fakes := map[string]*fake.Executor{}
	for _, n := range cluster.Nodes {
		fk := fake.New(n.Name)
		fk.SetFile("/etc/hostname", []byte(n.Name+"\n"), 0o644)
		fakeShell(fk)
		fakes[n.Name] = fk
	}
	pre, err := builtins.Predeclared()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := runner.Load(runner.LoadOptions{Path: "testdata/core.star", Predeclared: pre, Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs, notes []string
	statuses := map[string]runner.Status{}
	var failures []string
	sink := runner.SinkFunc(func(e runner.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e := e.(type) {
		case runner.StepDone:
			statuses[e.StepName+"@"+e.Node] = e.Status
			if e.Status == runner.StatusFailed {
				failures = append(failures, fmt.Sprintf("%s@%s: %s\n%s", e.StepName, e.Node, e.Error, e.Detail))
			}
		case runner.OutputLine:
			if e.Stream == runner.StreamLog {
				logs = append(logs, e.Text)
			}
		case runner.Note:
			notes = append(notes, e.Text)
		}
	})
	_, err = runner.NewRun(plan, runner.RunOptions{
		Connect:   func(ctx context.Context, n *inventory.Node) (transport.Executor, error) { return fakes[n.Name], nil },
		NodeValue: builtins.NodeValue,
		Sink:      sink,
		Failure:   runner.FailurePolicy{Continue: true},
	}).Execute(context.Background())
	for _, f := range failures {
		t.Error(f)
	}
	if err != nil && len(failures) == 0 {
		t.Fatal(err)
	}
	want := map[string]runner.Status{
		"attrs@s1": runner.StatusOK, "files@s1": runner.StatusChanged, "commands@s1": runner.StatusOK,
		"helpers@s1": runner.StatusOK, "other nodes@s2": runner.StatusOK, "skipping@a1": runner.StatusSkipped,
	}
	for k, w := range want {
		if statuses[k] != w {
			t.Errorf("%s: status %q, want %q", k, statuses[k], w)
		}
	}
	if !strings.Contains(strings.Join(logs, "\n"), "a 1 True") || len(notes) != 1 || notes[0] != "remember s1" {
		t.Errorf("log/note output wrong: logs=%q notes=%q", logs, notes)
	}
	if data, _ := fakes["s1"].File("/etc/new"); string(data) != "hello\n" {
		t.Errorf("node.write did not reach the executor: %q", data)
	}
}

// TestBuiltinsOutsideStep: builtins that act called while the playbook
// loads fail with a message saying where they may be called (nodes() may
// be called then: TestNodesAtLoadTime in cmd/caretaker).
func TestBuiltinsOutsideStep(t *testing.T) {
	inv, _ := inventory.Parse("inv.yaml", []byte(starInventory))
	pre, _ := builtins.Predeclared()
	for src, want := range map[string]string{
		"x = nodes()[0].run(\"true\")\n": "can only be called inside a step body",
		"sleep(\"1s\")\n":                "sleep: can only be called inside a step body",
		"x = confirm(\"ok\")\n":          "confirm: can only be called inside a step body",
	} {
		dir := t.TempDir()
		path := dir + "/pb.star"
		if err := writeFile(path, src); err != nil {
			t.Fatal(err)
		}
		_, err := runner.Load(runner.LoadOptions{Path: path, Predeclared: pre, Cluster: inv.Clusters[0]})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "pb.star:1:") {
			t.Errorf("%q: err = %v, want %q with the file position", src, err, want)
		}
	}
}
