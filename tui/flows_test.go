package tui

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/exp/teatest/v2"

	"github.com/caretaker/caretaker/runner"
)

// These flows run the real Bubble Tea program (teatest). They look at the
// model from inside the program's event loop through a filter, so there is
// no data race and no dependence on the renderer's escape sequences.

// probe runs fn on the model inside the event loop.
type probe struct {
	fn   func(*model)
	done chan struct{}
}

func probeFilter(m tea.Model, msg tea.Msg) tea.Msg {
	if p, ok := msg.(probe); ok {
		p.fn(m.(*model))
		close(p.done)
		return nil
	}
	return msg
}

type sender interface{ Send(tea.Msg) }

// inspect runs fn on the live model and waits for it.
func inspect(t *testing.T, p sender, fn func(*model)) {
	t.Helper()
	pr := probe{fn: fn, done: make(chan struct{})}
	p.Send(pr)
	select {
	case <-pr.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the program did not answer a probe within 5s")
	}
}

// waitScreen waits until the rendered screen contains every want.
func waitScreen(t *testing.T, p sender, want ...string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		inspect(t, p, func(m *model) { last = stripANSI(m.View().Content) })
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(last, w)
		}
		if ok {
			return
		}
	}
	t.Fatalf("screen never showed %q; last screen:\n%s", want, last)
}

// syncController is a Controller safe to read from the test goroutine.
type syncController struct {
	mu    sync.Mutex
	calls []string
}

func (c *syncController) Pause()  { c.add("pause") }
func (c *syncController) Resume() { c.add("resume") }
func (c *syncController) Stop(hard bool) {
	if hard {
		c.add("stop(true)")
	} else {
		c.add("stop(false)")
	}
}
func (c *syncController) add(s string) { c.mu.Lock(); c.calls = append(c.calls, s); c.mu.Unlock() }
func (c *syncController) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

func newFlow(t *testing.T, opts Options) (*teatest.TestModel, *pump, chan bool) {
	t.Helper()
	q := newPump()
	started := make(chan bool, 1)
	m := newModel(context.Background(), opts, q, func(v bool) {
		select {
		case started <- v:
		default:
		}
	})
	tm := teatest.NewTestModel(t, m,
		teatest.WithInitialTermSize(100, 30),
		teatest.WithProgramOptions(tea.WithColorProfile(colorprofile.ASCII), tea.WithFilter(probeFilter)))
	t.Cleanup(func() { q.close() })
	return tm, q, started
}

// emitRun sends a short run through the sink: every cell of the rotate
// plan, strip_server failing on srv-2.
func emitRun(s runner.Sink) {
	p := rotatePlan()
	p.At = time.Now()
	s.Emit(p)
	for _, st := range p.Steps {
		nodes := st.Nodes
		if st.Once {
			nodes = nodes[:1]
		}
		for _, n := range nodes {
			s.Emit(runner.StepStarted{Step: st.Index, StepName: st.Name, Node: n, At: time.Now()})
			s.Emit(runner.OutputLine{Step: st.Index, Node: n, Stream: runner.StreamStdout, Text: st.Name + " on " + n, At: time.Now()})
			status, msg := runner.StatusOK, ""
			if st.Name == "strip_server" && n == "srv-2" {
				status, msg = runner.StatusFailed, "permission denied"
			}
			s.Emit(runner.StepDone{Step: st.Index, StepName: st.Name, Node: n, Status: status, Error: msg, At: time.Now()})
		}
	}
}

func TestFlowPlanRunSummary(t *testing.T) {
	c := &syncController{}
	tm, q, started := newFlow(t, Options{Plan: rotatePlan(), Confirm: true, Controller: c})
	waitScreen(t, tm, "8 steps × 5 nodes", "enter start")
	tm.Send(tea.KeyPressMsg{Code: tea.KeyEnter})
	select {
	case v := <-started:
		if !v {
			t.Fatal("enter at the plan must start the run")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("enter did not start the run")
	}
	emitRun(q)
	waitScreen(t, tm, "28/28", "✗1")
	tm.Type("f")
	waitScreen(t, tm, "strip_server · failed", "permission denied")
	d := failedDone()
	q.Emit(d)
	waitScreen(t, tm, "run failed after 1m35s", "caretaker resume 20260314-092653-ab12")
	tm.Type("q")
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*model)
	if fm.done == nil || fm.done.Status != "failed" || fm.quitEarly {
		t.Fatalf("final model: done=%v quitEarly=%v", fm.done, fm.quitEarly)
	}
	if s := fm.summaryText(); !strings.Contains(s, "srv-2  strip_server: k3s.strip_server") {
		t.Fatalf("summary text:\n%s", s)
	}
	if len(c.get()) != 0 {
		t.Fatalf("a run that ends by itself must not be stopped: %v", c.get())
	}
}

func TestFlowAbortWithConfirmation(t *testing.T) {
	c := &syncController{}
	tm, q, _ := newFlow(t, Options{Plan: rotatePlan(), Controller: c})
	p := rotatePlan()
	p.At = time.Now()
	q.Emit(p)
	q.Emit(runner.StepStarted{Step: 0, Node: "srv-1", At: time.Now()})
	waitScreen(t, tm, "running")
	tm.Type("q")
	waitScreen(t, tm, "Abort the run?")
	tm.Type("n")
	waitScreen(t, tm, "running")
	if got := c.get(); len(got) != 0 {
		t.Fatalf("n must not stop the run: %v", got)
	}
	tm.Type("q")
	waitScreen(t, tm, "Abort the run?")
	tm.Type("y")
	waitScreen(t, tm, "stopping…")
	if got := c.get(); !slices.Equal(got, []string{"stop(false)"}) {
		t.Fatalf("controller calls %v, want [stop(false)]", got)
	}
	tm.Send(tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl})
	waitScreen(t, tm, "aborting…")
	if got := c.get(); !slices.Equal(got, []string{"stop(false)", "stop(true)"}) {
		t.Fatalf("controller calls %v, want a hard stop after ctrl+c", got)
	}
	q.Emit(runner.RunDone{RunID: "r9", Status: "aborted", At: time.Now()})
	waitScreen(t, tm, "run aborted", "caretaker resume r9")
	tm.Type("q")
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*model)
	if fm.done == nil || fm.done.Status != "aborted" {
		t.Fatalf("final status %v", fm.done)
	}
}

func TestFlowPromptAnswered(t *testing.T) {
	tm, q, _ := newFlow(t, Options{Plan: rotatePlan(), Controller: &syncController{}})
	prog := &Program{pump: q, done: make(chan struct{})}
	defer close(prog.done)
	q.Emit(rotatePlan())
	ask := func(ctx context.Context, p runner.Prompt) chan error {
		res := make(chan error, 1)
		go func() {
			v, err := prog.Prompter().Confirm(ctx, p)
			if err == nil && !v {
				err = io.EOF // stands for "answered no"
			}
			res <- err
		}()
		return res
	}
	res := ask(context.Background(), runner.Prompt{ID: 1, Node: "srv-1", Step: 4, Question: "rotate the CA now?", Destructive: true})
	waitScreen(t, tm, "destructive", "rotate the CA now?")
	tm.Type("y")
	if err := <-res; err != nil {
		t.Fatalf("y should answer yes, got %v", err)
	}
	res = ask(context.Background(), runner.Prompt{ID: 2, Node: "srv-2", Question: "restart srv-2?", Destructive: true, Default: true})
	waitScreen(t, tm, "restart srv-2?")
	tm.Send(tea.KeyPressMsg{Code: tea.KeyEnter})
	if err := <-res; err != io.EOF {
		t.Fatalf("enter on a destructive question should answer no, got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res = ask(ctx, runner.Prompt{ID: 3, Node: "srv-3", Question: "timed out?"})
	waitScreen(t, tm, "timed out?")
	cancel()
	if err := <-res; err != context.Canceled {
		t.Fatalf("a cancelled question returns ctx.Err(), got %v", err)
	}
	var modal modal
	for range 100 {
		inspect(t, tm, func(m *model) { modal = m.modal })
		if modal == modalNone {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if modal != modalNone {
		t.Fatal("the modal of a withdrawn question should close")
	}
	q.Emit(runner.RunDone{Status: "ok", At: time.Now()})
	waitScreen(t, tm, "run ok")
	tm.Type("q")
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
}
