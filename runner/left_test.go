package runner_test

import (
	"context"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// memJournal keeps undo records in memory.
type memJournal struct {
	mu    sync.Mutex
	undos []runner.UndoRecord
}

func (j *memJournal) RecordUndo(_ context.Context, u runner.UndoRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.undos = append(j.undos, u)
	return nil
}

// TestStoppedRunSaysWhereEachNodeIsLeft (issue 12): after a graceful stop
// in the middle of a step, RunDone.Left and the summary say per node what
// finished, what the stopped step changed before it stopped (the change
// under way finishes), what is recorded for undo and not put back, and
// which steps resume runs there.
func TestStoppedRunSaysWhereEachNodeIsLeft(t *testing.T) {
	f := runtest.NewFixture(t)
	inChange := make(chan struct{}, 1)
	for _, fk := range f.Fakes {
		fk.On(`^(prep|change-1|change-2|change-3|look)$`, fake.Reply{})
	}
	f.Fakes["s1"].OnFunc(`^change-2$`, func(string, []byte, io.Writer, io.Writer) int {
		inChange <- struct{}{}
		time.Sleep(100 * time.Millisecond)
		return 0
	})
	plan := f.MustLoad(`
def prep(node):
    node.run("prep")
step("prep", prep, nodes="servers")
def body(node):
    node.run("change-1", undo="revert-1")
    node.run("change-2")
    node.run("change-3")
step("a", body, nodes="servers", serial=1)
def look(node):
    node.run("look", changes=False)
step("look", look, nodes="all", mutates=False)
`)
	r := runner.NewRun(plan, runner.RunOptions{
		Connect:   func(ctx context.Context, n *inventory.Node) (transport.Executor, error) { return f.Fakes[n.Name], nil },
		NodeValue: builtins.NodeValue,
		Journal:   &memJournal{},
	})
	go func() {
		<-inChange
		r.Stop(false)
	}()
	done, _ := r.Execute(context.Background())
	if done.Status != "aborted" {
		t.Fatalf("status %s, want aborted: %s", done.Status, runner.Summary(done))
	}
	want := []runner.NodeLeft{
		{Node: "s1", Done: []string{"prep"}, Stopped: "a", How: "stopped by the operator",
			Changes:  []string{"run on s1: change-1", "run on s1: change-2"},
			Standing: []string{"a node.run command whose undo is `revert-1`"},
			Resume:   []string{"a (again from its start)", "look"}},
		{Node: "s2", Done: []string{"prep"}, Resume: []string{"a", "look"}},
		{Node: "s3", Done: []string{"prep"}, Resume: []string{"a", "look"}},
		{Node: "a1", Resume: []string{"look"}},
	}
	if !reflect.DeepEqual(done.Left, want) {
		t.Errorf("Left:\n got %+v\nwant %+v", done.Left, want)
	}
	sum := runner.Summary(done)
	for _, line := range []string{
		"    s1: step a stopped by the operator after: run on s1: change-1; run on s1: change-2; the rest of that step did not run\n" +
			"      finished before: prep\n" +
			"      not put back yet: a node.run command whose undo is `revert-1`\n" +
			"      resume runs there: a (again from its start), look\n",
		"    s2: finished prep\n      resume runs there: a, look\n",
		"    a1: not touched by this attempt\n      resume runs there: look\n",
	} {
		if !strings.Contains(sum, line) {
			t.Errorf("summary lacks %q:\n%s", line, sum)
		}
	}
	if strings.Contains(sum, "change-3") {
		t.Errorf("the summary names a change that never ran:\n%s", sum)
	}
}
