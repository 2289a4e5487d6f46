package runner_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

func TestFailurePolicyStop(t *testing.T) {
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
def restart(node):
    if node.name == "s2":
        fail("s2 did not come back")
    log("restarted")
def after(node):
    log("after")
step("restart", restart, nodes="servers", serial=1)
step("after", after, nodes="all")
`)
	done, err := f.Run(plan, runner.RunOptions{})
	if err == nil || done.Status != "failed" {
		t.Fatalf("status = %s err = %v, want failed", done.Status, err)
	}
	if f.Status("restart", "s1") != runner.StatusOK || f.Status("restart", "s2") != runner.StatusFailed {
		t.Errorf("s1=%s s2=%s", f.Status("restart", "s1"), f.Status("restart", "s2"))
	}
	if f.Status("restart", "s3") != runner.StatusPending {
		t.Errorf("s3 was touched after s2 failed in a serial step: %s", f.Status("restart", "s3"))
	}
	if f.Status("after", "s1") != runner.StatusPending {
		t.Errorf("a later step ran after a failure")
	}
	if len(done.Failed) != 1 || !strings.Contains(done.Failed[0].Error, "pb.star:4:13: s2 did not come back") {
		t.Errorf("failed = %+v", done.Failed)
	}
}

func TestFailurePolicyContinueAndMaxFailed(t *testing.T) {
	src := `
def first(node):
    if node.name in ("s2", "a1"):
        fail("broken")
def second(node):
    pass
step("first", first, nodes="all")
step("second", second, nodes="all")
`
	f := runtest.NewFixture(t)
	done, err := f.Run(f.MustLoad(src), runner.RunOptions{Failure: runner.FailurePolicy{Continue: true}})
	if err == nil || done.Status != "failed" {
		t.Fatalf("status %s, want failed", done.Status)
	}
	if f.Status("second", "s1") != runner.StatusOK || f.Status("second", "s2") != runner.StatusSkipped {
		t.Errorf("continue: second s1=%s s2=%s, want ok and skipped", f.Status("second", "s1"), f.Status("second", "s2"))
	}
	if done.Counts[runner.StatusFailed] != 2 || done.Counts[runner.StatusSkipped] != 2 {
		t.Errorf("counts = %v", done.Counts)
	}
	f2 := runtest.NewFixture(t)
	f2.Run(f2.MustLoad(src), runner.RunOptions{Failure: runner.FailurePolicy{MaxFailed: 1}})
	if f2.Status("second", "s1") != runner.StatusPending {
		t.Errorf("max-failed 1 with 2 failures: second step still ran")
	}
	f3 := runtest.NewFixture(t)
	f3.Run(f3.MustLoad(src), runner.RunOptions{Failure: runner.FailurePolicy{MaxFailed: 2}})
	if f3.Status("second", "s1") != runner.StatusOK {
		t.Errorf("max-failed 2 with 2 failures: second step did not run")
	}
}

func TestSerialLimit(t *testing.T) {
	for _, serial := range []int{0, 1, 2} {
		f := runtest.NewFixture(t)
		var cur, peak atomic.Int32
		for _, fk := range f.Fakes {
			fk.OnFunc(`^work$`, func(string, []byte, io.Writer, io.Writer) int {
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(30 * time.Millisecond)
				cur.Add(-1)
				return 0
			})
		}
		plan := f.MustLoad(`
def body(node):
    node.run("work")
step("w", body, nodes="all", serial=` + string(rune('0'+serial)) + `)
`)
		if _, err := f.Run(plan, runner.RunOptions{}); err != nil {
			t.Fatal(err)
		}
		want := int32(serial)
		if serial == 0 {
			want = 4
		}
		if peak.Load() != want {
			t.Errorf("serial=%d: peak concurrency %d, want %d", serial, peak.Load(), want)
		}
	}
}

func TestStopAndCancel(t *testing.T) {
	f := runtest.NewFixture(t)
	started := make(chan struct{}, 8)
	var finished atomic.Int32
	for _, fk := range f.Fakes {
		fk.OnFunc(`^slow$`, func(string, []byte, io.Writer, io.Writer) int {
			started <- struct{}{}
			time.Sleep(150 * time.Millisecond)
			finished.Add(1)
			return 0
		})
	}
	plan := f.MustLoad(`
def body(node):
    node.run("slow")
    node.run("slow")
step("a", body, nodes="servers", serial=1)
step("b", body, nodes="all")
`)
	r := runner.NewRun(plan, runner.RunOptions{
		Connect:   func(ctx context.Context, n *inventory.Node) (transport.Executor, error) { return f.Fakes[n.Name], nil },
		NodeValue: builtins.NodeValue,
	})
	go func() {
		<-started
		r.Stop(false) // graceful: the running command finishes, nothing new starts
	}()
	done, err := r.Execute(context.Background())
	if !errors.Is(err, errs.ErrAborted) || done.Status != "aborted" {
		t.Fatalf("err = %v status = %s, want aborted", err, done.Status)
	}
	if finished.Load() != 1 {
		t.Errorf("graceful stop: %d commands finished, want exactly the running one", finished.Load())
	}

	// Hard stop cancels a running sleep at once.
	f2 := runtest.NewFixture(t)
	plan2 := f2.MustLoad(`
def body(node):
    sleep("30s")
step("a", body, nodes="s1")
`)
	r2 := runner.NewRun(plan2, runner.RunOptions{Connect: func(ctx context.Context, n *inventory.Node) (transport.Executor, error) { return f2.Fakes[n.Name], nil }, NodeValue: builtins.NodeValue})
	time.AfterFunc(50*time.Millisecond, func() { r2.Stop(true) })
	start := time.Now()
	done2, _ := r2.Execute(context.Background())
	if time.Since(start) > 5*time.Second || done2.Status != "aborted" {
		t.Errorf("hard stop took %s, status %s", time.Since(start), done2.Status)
	}
}

func TestStepTimeoutAndMaxSteps(t *testing.T) {
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
def slow(node):
    sleep("10s")
def spin(node):
    x = 0
    while True:
        x += 1
step("slow", slow, nodes="s1", timeout="100ms")
`)
	done, _ := f.Run(plan, runner.RunOptions{})
	if len(done.Failed) != 1 || !strings.Contains(done.Failed[0].Error, "timed out after 100ms") {
		t.Errorf("timeout failure = %+v", done.Failed)
	}
	f2 := runtest.NewFixture(t)
	plan2 := f2.MustLoad(`
def spin(node):
    x = 0
    while True:
        x += 1
step("spin", spin, nodes="s1")
`)
	done2, _ := f2.Run(plan2, runner.RunOptions{MaxSteps: 10000})
	if len(done2.Failed) != 1 || !strings.Contains(done2.Failed[0].Error, `the body of step "spin" ran 10000 Starlark operations`) || !strings.Contains(done2.Failed[0].Error, "endless loop") {
		t.Errorf("max steps failure = %+v", done2.Failed)
	}
}
