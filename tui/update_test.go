package tui

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/grid"
)

func selected(m *model) (string, string) {
	r, s := m.grid.Selected()
	if r < 0 {
		return "", ""
	}
	return m.grid.Nodes()[r].Name, m.grid.Steps()[s].Name
}

func TestNavigationServersFirst(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	var order []string
	for range 6 {
		n, _ := selected(m)
		order = append(order, n)
		press(m, "j")
	}
	want := []string{"srv-1", "srv-2", "srv-3", "agent-1", "agent-2", "agent-2"}
	if !slices.Equal(order, want) {
		t.Fatalf("j walks %v, want %v (servers first, plan order within a role)", order, want)
	}
	press(m, "k", "up")
	if n, _ := selected(m); n != "srv-3" {
		t.Fatalf("after k, up: selected %s, want srv-3", n)
	}
	press(m, "l", "l")
	if _, s := selected(m); s != "generate_ca" {
		t.Fatalf("after l l: step %s, want generate_ca", s)
	}
}

func TestNextFailedWraps(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	midRun(m)
	send(m, runner.StepDone{Step: 5, Node: "agent-2", Status: runner.StatusFailed, Error: "boom"})
	press(m, "f")
	if n, s := selected(m); n != "srv-2" || s != "strip_server" {
		t.Fatalf("first f: %s/%s, want srv-2/strip_server", n, s)
	}
	press(m, "f")
	if n, s := selected(m); n != "agent-2" || s != "restart" {
		t.Fatalf("second f: %s/%s, want agent-2/restart", n, s)
	}
	press(m, "f")
	if n, _ := selected(m); n != "srv-2" {
		t.Fatalf("third f should wrap to srv-2, got %s", n)
	}
	if !strings.Contains(stripANSI(screen(t, m)), "k3s.strip_server: srv-2") {
		t.Fatal("the failed cell's error should be shown above its output")
	}
}

func TestCellsAndCounts(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	_, total := m.grid.Progress()
	// facts 5 + backup 3 + generate_ca once 1 + strip 3 + rotate 3 + restart 5 + verify 5 + restore 3
	if total != 28 {
		t.Fatalf("total cells %d, want 28 (a once step is one cell)", total)
	}
	midRun(m)
	want := map[grid.State]int{grid.OK: 5, grid.Changed: 4, grid.Skipped: 1, grid.Failed: 1, grid.Running: 1, grid.Pending: 16}
	for st, n := range want {
		if got := m.grid.Count(st); got != n {
			t.Errorf("count %s = %d, want %d", st.Status(), got, n)
		}
	}
	// A once step that runs on another node than planned moves its cell.
	send(m, runner.StepStarted{Step: 2, Node: "srv-3", At: at(1)})
	if c, _ := m.grid.Cell(m.grid.NodeIndex("srv-3"), 2); c.State != grid.Running {
		t.Fatalf("once cell on srv-3 = %v, want running", c.State)
	}
	if c, _ := m.grid.Cell(m.grid.NodeIndex("srv-1"), 2); c.State != grid.NA {
		t.Fatalf("once cell left on srv-1 = %v, want none", c.State)
	}
	if _, total := m.grid.Progress(); total != 28 {
		t.Fatalf("total after moving the once cell = %d, want 28", total)
	}
	// An event for a node the plan did not list gets a row.
	send(m, runner.StepDone{Step: 0, Node: "late-1", Status: runner.StatusOK})
	if m.grid.Shown() != 6 || m.grid.Count(grid.OK) != 6 {
		t.Fatalf("unknown node: %d rows shown, %d ok; want 6 and 6", m.grid.Shown(), m.grid.Count(grid.OK))
	}
	// Events with a step out of range are ignored, not a panic.
	send(m, runner.StepStarted{Step: 99, Node: "srv-1"}, runner.StepDone{Step: -1, Node: "srv-1"})
}

func TestFilterByStatusFollowsEvents(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	midRun(m)
	press(m, "/")
	typeText(m, "run")
	press(m, "enter")
	if m.grid.Shown() != 1 {
		t.Fatalf("/run shows %d nodes, want 1 (srv-1 is running)", m.grid.Shown())
	}
	send(m, runner.StepStarted{Step: 5, Node: "agent-1", At: at(70)})
	if m.grid.Shown() != 2 {
		t.Fatalf("after agent-1 starts, /run shows %d nodes, want 2", m.grid.Shown())
	}
	press(m, "/", "backspace", "backspace", "backspace")
	typeText(m, "agent")
	press(m, "esc")
	if m.grid.Filter() != "run" {
		t.Fatalf("esc should restore the filter, got %q", m.grid.Filter())
	}
	press(m, "esc")
	if m.grid.Filter() != "" || m.grid.Shown() != 5 {
		t.Fatalf("esc on the grid clears the filter: %q, %d shown", m.grid.Filter(), m.grid.Shown())
	}
	press(m, "/")
	typeText(m, "srv server")
	if m.grid.Shown() != 3 {
		t.Fatalf("/srv server shows %d, want 3", m.grid.Shown())
	}
}

func TestPauseAndAbort(t *testing.T) {
	c := &fakeController{}
	m := newTest(t, Options{Plan: rotatePlan(), Controller: c}, 80, 24)
	midRun(m)
	press(m, "p")
	if !strings.Contains(stripANSI(screen(t, m)), "pausing…") {
		t.Fatal("header should say pausing… until the runner reports RunPaused")
	}
	send(m, runner.RunPaused{At: at(70)})
	if !strings.Contains(stripANSI(screen(t, m)), "paused") {
		t.Fatal("header should say paused")
	}
	press(m, "p")
	send(m, runner.RunResumed{At: at(80)})

	press(m, "q")
	if m.modal != modalAbort {
		t.Fatal("q should ask before aborting")
	}
	press(m, "n")
	if m.modal != modalNone {
		t.Fatal("n should keep the run going")
	}
	press(m, "q", "enter") // enter is No
	press(m, "ctrl+c", "y")
	if m.stopping != 1 {
		t.Fatalf("after y the run should be stopping softly, stopping=%d", m.stopping)
	}
	press(m, "ctrl+c")
	want := []string{"pause", "resume", "stop(false)", "stop(true)"}
	if !slices.Equal(c.calls, want) {
		t.Fatalf("controller calls %v, want %v", c.calls, want)
	}
	if !strings.Contains(stripANSI(screen(t, m)), "aborting…") {
		t.Fatal("header should say aborting…")
	}
	send(m, runner.RunDone{Status: "aborted", At: at(90)})
	if m.phase != phaseDone || !strings.Contains(stripANSI(screen(t, m)), "run aborted") {
		t.Fatal("RunDone should show the summary")
	}
}

func TestCtrlCTwiceAbortsAtOnce(t *testing.T) {
	c := &fakeController{}
	m := newTest(t, Options{Plan: rotatePlan(), Controller: c}, 80, 24)
	midRun(m)
	press(m, "ctrl+c", "ctrl+c")
	if !slices.Equal(c.calls, []string{"stop(true)"}) {
		t.Fatalf("controller calls %v, want [stop(true)]", c.calls)
	}
}

func TestPrompt(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	midRun(m)
	destructive := destructivePrompt()
	reply1 := make(chan bool, 1)
	destructive.reply = reply1
	reply2 := make(chan bool, 1)
	plain := promptMsg{q: runner.Prompt{ID: 2, Node: "srv-2", Question: "continue?", Default: true}, reply: reply2}
	reply3 := make(chan bool, 1)
	third := promptMsg{q: runner.Prompt{ID: 3, Node: "srv-3", Question: "really?", Default: true}, reply: reply3}
	send(m, destructive, plain, third)
	if !strings.Contains(stripANSI(screen(t, m)), "2 more waiting") {
		t.Fatal("the modal should count the questions waiting")
	}
	press(m, "j") // ignored under the modal
	if n, _ := selected(m); n != "srv-1" {
		t.Fatalf("keys under a modal must not move the grid; selected %s", n)
	}
	press(m, "enter") // enter on a destructive question is No
	if v := <-reply1; v {
		t.Fatal("enter on a destructive question must answer No")
	}
	press(m, "enter")
	if v := <-reply2; !v {
		t.Fatal("enter on a harmless question takes its default (yes)")
	}
	// A question withdrawn (its ctx ended) disappears.
	send(m, promptCancelMsg{id: 3, reply: reply3})
	if m.modal != modalNone || len(m.prompts) != 0 {
		t.Fatalf("withdrawn question still shown: modal=%v prompts=%d", m.modal, len(m.prompts))
	}
	if n, _ := selected(m); n != "srv-3" {
		t.Fatalf("the last question shown was srv-3's; selected %s", n)
	}
}

func TestSaveLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.log")
	m := newTest(t, Options{Plan: rotatePlan(), LogPath: path}, 80, 24)
	midRun(m)
	press(m, "s")
	if m.input.kind != inputSave || m.input.value != path {
		t.Fatalf("s should offer %s, got %+v", path, m.input)
	}
	_, cmd := m.Update(keyMsg("enter"))
	if cmd == nil {
		t.Fatal("enter should start saving")
	}
	msg := cmd()
	send(m, msg)
	if sm := msg.(savedMsg); sm.err != nil || sm.lines == 0 {
		t.Fatalf("save: %+v", sm)
	}
	if !strings.Contains(stripANSI(screen(t, m)), "log saved to "+path) {
		t.Fatal("the footer should confirm the save")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("log mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{
		"2026-03-14T09:26:54.000Z srv-1 1:facts step ▸ step 1/8 facts",
		"2026-03-14T09:27:03.000Z srv-2 4:strip_server stderr sed: /etc/rancher/k3s/config.yaml: Permission denied",
		"2026-03-14T09:27:03.200Z srv-2 4:strip_server step ✗ failed after 1.2s: k3s.strip_server: srv-2: /etc/rancher/k3s/config.yaml: permission denied (check sudo for the ssh user)",
	}
	for _, w := range want {
		if !slices.Contains(lines, w) {
			t.Errorf("log lacks line %q", w)
		}
	}
	if lines[0] != want[0] {
		t.Errorf("log starts with %q, want %q (arrival order)", lines[0], want[0])
	}
	// A path that cannot be written reports an error with what to do.
	sm := saveSnapshot(context.Background(), m.snapshot(), filepath.Join(dir, "missing", "x.log"))
	if sm.err == nil || !strings.Contains(sm.err.Error(), "choose another path") {
		t.Fatalf("save to a missing dir: %v", sm.err)
	}
}

func TestOutputIsCleaned(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	send(m, runner.OutputLine{Step: 0, Node: "srv-1", Text: "\x1b[2J\x1b[31mred\x1b[0m\tx\r\a"})
	got := m.log.lines(m.grid.NodeIndex("srv-1"))
	if len(got) != 1 || got[0].Text != "red x" {
		t.Fatalf("cleaned line %q, want %q", got, "red x")
	}
}

func TestSummaryText(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan(), Confirm: true}, 80, 24)
	if s := m.summaryText(); s != "" {
		t.Fatalf("no summary before the run starts, got %q", s)
	}
	press(m, "enter")
	midRun(m)
	send(m, runner.Note{Text: "refresh kubeconfigs: the cluster CA changed"}, failedDone())
	s := m.summaryText()
	for _, w := range []string{
		"caretaker rotate-ca · cluster prod-eu\n",
		"run failed after 1m35s · run 20260314-092653-ab12\n",
		"✓ 5 ok   ● 4 changed   - 1 skipped   ✗ 1 failed\n",
		"  srv-2  strip_server: k3s.strip_server: srv-2: /etc/rancher/k3s/config.yaml: permission denied (check sudo for the ssh user)\n",
		"journal    /var/lib/caretaker/runs/20260314-092653-ab12/journal.jsonl\n",
		"fix the cause, then: caretaker resume 20260314-092653-ab12",
		"read the failed node's error above and its output in the journal\n",
	} {
		if !strings.Contains(s, w) {
			t.Errorf("summary lacks %q:\n%s", w, s)
		}
	}
	if strings.Contains(s, "\x1b") || strings.Contains(s, "second line") {
		t.Errorf("summary must be plain text with first error lines only:\n%s", s)
	}
	// Notes from RunDone win over the Note events (the runner collects them).
	if strings.Contains(s, "refresh kubeconfigs") {
		t.Errorf("RunDone.Notes should replace the streamed notes:\n%s", s)
	}
}

func TestSummaryWhenLeftEarly(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	midRun(m)
	s := m.summaryText()
	if !strings.Contains(s, "the TUI was closed before the run finished") || !strings.Contains(s, "· 17 not run") {
		t.Fatalf("summary of an unfinished run:\n%s", s)
	}
}

func TestNewPlanFromRunStarted(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	send(m, bigPlan(3, 2))
	if m.grid.Shown() != 3 || len(m.grid.Steps()) != 2 {
		t.Fatalf("a different RunStarted should replace the plan: %d nodes, %d steps", m.grid.Shown(), len(m.grid.Steps()))
	}
	if m.runID != "bench" {
		t.Fatalf("run id %q", m.runID)
	}
}

func TestNoColor(t *testing.T) {
	for env, want := range map[string]bool{"NO_COLOR=1": true, "NO_COLOR=yes": true, "NO_COLOR=": false, "NO_COLORS=1": false} {
		if got := noColor([]string{"TERM=xterm", env}); got != want {
			t.Errorf("noColor(%s) = %v, want %v", env, got, want)
		}
	}
}

func TestLightBackground(t *testing.T) {
	dark := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	light := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	light.setDark(false)
	midRun(dark)
	midRun(light)
	d, l := dark.View().Content, light.View().Content
	if d == l {
		t.Fatal("light and dark backgrounds should use different colours")
	}
	if stripANSI(d) != stripANSI(l) {
		t.Fatal("the text must not depend on the background")
	}
}

func TestPump(t *testing.T) {
	q := newPump()
	for i := range 1000 {
		q.Emit(runner.OutputLine{Node: "n", Text: "x", Step: i})
	}
	start := time.Now()
	msg := q.next()()
	b, ok := msg.(batchMsg)
	if !ok || len(b) != 1000 {
		t.Fatalf("one batch of 1000 events expected, got %T len %d", msg, len(b))
	}
	if b[999].(runner.OutputLine).Step != 999 {
		t.Fatal("events must keep their order")
	}
	q.recycle(b)
	q.Emit(runner.RunPaused{})
	if msg := q.next()(); len(msg.(batchMsg)) != 1 {
		t.Fatal("second batch")
	}
	if time.Since(start) < frameInterval {
		t.Fatal("batches must be at least a frame apart")
	}
	q.close()
	q.Emit(runner.RunResumed{}) // after close: dropped, must not block
	if msg := q.next()(); msg != nil {
		t.Fatalf("a closed pump delivers nothing, got %v", msg)
	}
}

func TestSummaryKeys(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 80, 24)
	midRun(m)
	send(m, failedDone())
	if !m.summary {
		t.Fatal("RunDone shows the summary")
	}
	press(m, "f")
	if n, s := selected(m); m.summary || n != "srv-2" || s != "strip_server" {
		t.Fatalf("f on the summary should show the failed cell on the grid: summary=%v %s/%s", m.summary, n, s)
	}
	press(m, "tab")
	if !m.summary {
		t.Fatal("tab goes back to the summary")
	}
	_, cmd := m.Update(keyMsg("q"))
	if cmd == nil || cmd() != tea.Quit() {
		t.Fatal("q on the summary quits")
	}
}

func TestFlashFades(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan(), Controller: &fakeController{}}, 80, 24)
	midRun(m)
	press(m, "p")
	if !strings.Contains(stripANSI(screen(t, m)), "pausing before the next step") {
		t.Fatal("p should explain itself in the footer")
	}
	now := m.now()
	m.now = func() time.Time { return now.Add(flashFor + time.Second) }
	if s := stripANSI(screen(t, m)); strings.Contains(s, "pausing before the next step") || !strings.Contains(s, "q abort • ? help") {
		t.Fatalf("the message should give way to the help after %v:\n%s", flashFor, s)
	}
}

func TestNextStepsInCheckMode(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan(), Check: true}, 80, 24)
	midRun(m)
	send(m, failedDone())
	s := m.summaryText()
	if strings.Contains(s, "caretaker resume") || !strings.Contains(s, "run the check again") {
		t.Fatalf("a failed check has nothing to resume:\n%s", s)
	}
}

// TestPromptShowsItsNode: while a node's question is open, the grid selects
// that node and step and the output pane shows its output, not the node that
// finished before it (issue 13). Before, the pane stayed on the old node.
func TestPromptShowsItsNode(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 160, 48)
	send(m, rotatePlan())
	send(m,
		runner.StepStarted{Step: 4, StepName: "rotate_ca", Node: "srv-1", At: at(1)},
		runner.OutputLine{Step: 4, Node: "srv-1", Stream: runner.StreamStdout, Text: "srv-1 rotated", At: at(2)},
		runner.StepDone{Step: 4, StepName: "rotate_ca", Node: "srv-1", Status: runner.StatusChanged, Duration: time.Second, At: at(2)},
		runner.StepStarted{Step: 4, StepName: "rotate_ca", Node: "srv-2", At: at(3)},
		runner.OutputLine{Step: 4, Node: "srv-2", Stream: runner.StreamStdout, Text: "srv-2 backup checked", At: at(3)},
	)
	if n, _ := selected(m); n != "srv-1" {
		t.Fatalf("before the prompt: selected %s, want srv-1 (the first row)", n)
	}
	q2 := runner.Prompt{ID: 1, Step: 4, Node: "srv-2", Question: "Rotate srv-2 now?", Default: true, At: at(4)}
	reply2 := make(chan bool, 1)
	// As from the runner: the Prompt event, then the question itself.
	send(m, q2, promptMsg{q: q2, reply: reply2})
	if m.modal != modalPrompt {
		t.Fatal("the question should be on screen")
	}
	if n, s := selected(m); n != "srv-2" || s != "rotate_ca" {
		t.Fatalf("while srv-2's question is open: selected %s/%s, want srv-2/rotate_ca", n, s)
	}
	out := stripANSI(screen(t, m))
	if !strings.Contains(out, "srv-2 backup checked") || strings.Contains(out, "srv-1 rotated") {
		t.Fatalf("the pane should show srv-2's output, not srv-1's:\n%s", out)
	}

	// A filter that hides the asked node is cleared; answering moves on to
	// the next question's node.
	q3 := runner.Prompt{ID: 2, Step: 4, Node: "srv-3", Question: "Rotate srv-3 now?", Default: true, At: at(5)}
	reply3 := make(chan bool, 1)
	send(m, q3, promptMsg{q: q3, reply: reply3})
	if n, _ := selected(m); n != "srv-2" {
		t.Fatalf("a queued question must not move the selection off the one on screen; selected %s", n)
	}
	m.grid.SetFilter("srv-2")
	press(m, "y")
	if v := <-reply2; !v {
		t.Fatal("y should answer yes")
	}
	if n, s := selected(m); n != "srv-3" || s != "rotate_ca" {
		t.Fatalf("after answering, the next question's node: selected %s/%s, want srv-3/rotate_ca", n, s)
	}
	if m.grid.Filter() != "" {
		t.Fatalf("the filter hiding srv-3 should be cleared, got %q", m.grid.Filter())
	}
	press(m, "n")
	<-reply3

	// The operator's selection is theirs again once no question is open.
	press(m, "k")
	if n, _ := selected(m); n != "srv-2" {
		t.Fatalf("after the questions, k: selected %s, want srv-2", n)
	}
}
