package main

// End-to-end tests of journal, resume and undo, maintenance windows,
// notifications and prompts without a terminal (issue 6), against the lab
// with the caretaker binary. Helpers for processes that run in the
// background (killed mid-run, or holding a lock) live here too.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/runner/journal"
	"github.com/caretaker/caretaker/runner/notify"
)

// liveCaretaker is a caretaker process running in the background whose
// JSON events are read as they come.
type liveCaretaker struct {
	t      testing.TB
	cmd    *exec.Cmd
	mu     sync.Mutex
	events []e2eEvent
	out    bytes.Buffer
	errb   bytes.Buffer
	change chan struct{}
	done   chan struct{}
	code   int
	start  time.Time
}

// startLive starts the caretaker binary with args (env added to the
// test's environment); it is killed when the test ends.
func startLive(t testing.TB, env []string, args ...string) *liveCaretaker {
	t.Helper()
	bin := caretakerBinary(t)
	lc := &liveCaretaker{t: t, change: make(chan struct{}, 1), done: make(chan struct{}), start: time.Now()}
	lc.cmd = exec.Command(bin, args...)
	lc.cmd.Env = append(append(os.Environ(), "NO_COLOR=1"), env...)
	lc.cmd.Stderr = &syncWriter{mu: &lc.mu, w: &lc.errb}
	stdout, err := lc.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := lc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		for sc.Scan() {
			line := sc.Bytes()
			lc.mu.Lock()
			lc.out.Write(line)
			lc.out.WriteByte('\n')
			var raw map[string]any
			if len(line) > 0 && line[0] == '{' && json.Unmarshal(line, &raw) == nil {
				ty, _ := raw["type"].(string)
				lc.events = append(lc.events, e2eEvent{Type: ty, Raw: raw})
			}
			lc.mu.Unlock()
			select {
			case lc.change <- struct{}{}:
			default:
			}
		}
		err := lc.cmd.Wait()
		lc.mu.Lock()
		if xe, ok := err.(*exec.ExitError); ok {
			lc.code = xe.ExitCode()
			if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				lc.code = -int(ws.Signal())
			}
		}
		lc.mu.Unlock()
		close(lc.done)
	}()
	t.Cleanup(func() {
		lc.cmd.Process.Kill()
		<-lc.done
	})
	return lc
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// waitFor waits until an event matches (and returns it) or the process
// ends or timeout passes (then the test fails).
func (lc *liveCaretaker) waitFor(timeout time.Duration, what string, match func(e2eEvent) bool) e2eEvent {
	lc.t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		lc.mu.Lock()
		for ; seen < len(lc.events); seen++ {
			if match(lc.events[seen]) {
				e := lc.events[seen]
				lc.mu.Unlock()
				return e
			}
		}
		lc.mu.Unlock()
		select {
		case <-lc.change:
		case <-lc.done:
			// Drain what is left, then give up.
			lc.mu.Lock()
			for ; seen < len(lc.events); seen++ {
				if match(lc.events[seen]) {
					e := lc.events[seen]
					lc.mu.Unlock()
					return e
				}
			}
			lc.mu.Unlock()
			lc.t.Fatalf("caretaker ended before %s:\n%s", what, lc.result().Describe())
		case <-deadline:
			lc.t.Fatalf("no %s within %s:\n%s", what, timeout, lc.result().Describe())
		}
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (lc *liveCaretaker) kill9() {
	lc.cmd.Process.Signal(syscall.SIGKILL)
	<-lc.done
}

// wait waits for the process to end.
func (lc *liveCaretaker) wait(timeout time.Duration) cliResult {
	lc.t.Helper()
	select {
	case <-lc.done:
	case <-time.After(timeout):
		lc.kill9()
		lc.t.Fatalf("caretaker did not end within %s:\n%s", timeout, lc.result().Describe())
	}
	return lc.result()
}

func (lc *liveCaretaker) result() cliResult {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return cliResult{Code: lc.code, Stdout: lc.out.String(), Stderr: lc.errb.String(), Events: append([]e2eEvent(nil), lc.events...), Took: time.Since(lc.start)}
}

func isOutput(node, contains string) func(e2eEvent) bool {
	return func(e e2eEvent) bool {
		return e.Type == "output" && e.str("node") == node && strings.Contains(e.str("text"), contains)
	}
}

// runID is the run ID of a run's run_started event.
func (r cliResult) runID() string {
	for _, e := range r.Events {
		if e.Type == "run_started" {
			return e.str("run_id")
		}
	}
	return ""
}

// readRunJSON is `caretaker runs RUN -o json`.
func readRunJSON(t *testing.T, stateDir, id string) journal.RunRecord {
	t.Helper()
	res := runCaretakerBinary(t, "runs", id, "--state-dir", stateDir, "-o", "json")
	if res.Code != 0 {
		t.Fatalf("caretaker runs %s: exit %d: %s", id, res.Code, res.Stderr)
	}
	var rec journal.RunRecord
	if err := json.Unmarshal([]byte(res.Stdout), &rec); err != nil {
		t.Fatalf("runs -o json: %v\n%s", err, res.Stdout)
	}
	return rec
}

// holdPlaybook is a mutating two-step playbook whose first step holds the
// run (and its locks) for a while.
const holdPlaybook = `
describe("hold the cluster for a while (tests)")
secs = param("secs", "4s")
def hold(node):
    log("holding")
    sleep(secs)
step("hold", hold, nodes = "servers", once = True)
def after(node):
    log("after")
step("after", after, nodes = "servers", once = True)
`

func writePlaybook(t *testing.T, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type notifyCatcher struct {
	*httptest.Server
	mu  sync.Mutex
	got []notify.Notification
}

func newNotifyCatcher(t *testing.T) *notifyCatcher {
	c := &notifyCatcher{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n notify.Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("notification body: %v", err)
		}
		c.mu.Lock()
		c.got = append(c.got, n)
		c.mu.Unlock()
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *notifyCatcher) events() []notify.Notification {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]notify.Notification(nil), c.got...)
}

func windowSpec(from, to time.Time) string {
	return fmt.Sprintf("%s-%s UTC", from.UTC().Format("15:04:05"), to.UTC().Format("15:04:05"))
}

// Acceptance: --window refuses to start outside the window (exit 5) and
// starts no step after it closes (the run stops cleanly, exit 5, and can
// be resumed); --notify-url gets a JSON POST for the refusal and at the
// end of each run.
func TestE2EWindowAndNotify(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 1, Agents: 0})
	hook := newNotifyCatcher(t)
	pb := writePlaybook(t, "hold.star", holdPlaybook)
	now := time.Now()

	// Outside: the window opens in an hour.
	out := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", l.StateDir,
		"--window", windowSpec(now.Add(time.Hour), now.Add(2*time.Hour)), "--notify-url", hook.URL+"/hook")
	t.Logf("refused took %s", out.Took)
	if out.Code != exitWindow || !strings.Contains(out.Stderr, "outside the maintenance window") || !strings.Contains(out.Stderr, "opens next at") || len(out.Events) != 0 {
		t.Errorf("run outside the window: %s", out.Describe())
	}
	if runs, _ := journal.ListRuns(l.StateDir); len(runs) != 0 {
		t.Errorf("a refused run left a journal: %v", runs)
	}

	// Inside, but the window closes while the first step holds: the second
	// step never starts.
	start := time.Now()
	res := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", l.StateDir, "-p", "secs=5s",
		"--window", windowSpec(start.Add(-time.Minute), start.Add(3*time.Second)), "--notify-url", hook.URL+"/hook")
	t.Logf("window run took %s", res.Took)
	if res.Code != exitWindow || res.RunStatus() != "aborted" {
		t.Fatalf("run whose window closes: %s", res.Describe())
	}
	if res.StepStatus("hold", "server-1") != "changed" && res.StepStatus("hold", "server-1") != "ok" {
		t.Errorf("the first step did not finish: %s", res.Describe())
	}
	if res.Started("after", "server-1") {
		t.Error("a step started after the window closed")
	}
	var doneErr string
	for _, e := range res.Events {
		if e.Type == "run_done" {
			doneErr = e.str("error")
		}
	}
	if missing := containsAll(doneErr, "maintenance window", "closed", `not starting step "after"`, "caretaker resume"); len(missing) > 0 {
		t.Errorf("run_done error %q lacks %q", doneErr, missing)
	}
	id := res.runID()
	if rec := readRunJSON(t, l.StateDir, id); rec.State != "aborted" {
		t.Errorf("the stopped run reads %q, want aborted", rec.State)
	}
	// Resumable: the next run (no window now) does only what is left.
	resumed := runCaretakerBinary(t, "resume", id, "--state-dir", l.StateDir, "--yes", "-o", "json")
	t.Logf("resume took %s", resumed.Took)
	if resumed.Code != 0 || resumed.StepStatus("hold", "server-1") != "skipped" || resumed.StepStatus("after", "server-1") != "ok" {
		t.Errorf("resume after the window closed: %s", resumed.Describe())
	}

	got := hook.events()
	kinds := map[string]notify.Notification{}
	for _, n := range got {
		kinds[n.Event+"/"+n.Status] = n
	}
	if n, ok := kinds["run_refused/refused"]; !ok || !strings.Contains(n.Error, "outside the maintenance window") {
		t.Errorf("no refusal notification: %+v", got)
	}
	if n, ok := kinds["run_done/aborted"]; !ok || n.RunID != id || n.Cluster != "lab" || !strings.Contains(n.Text, "caretaker resume "+id) || !strings.HasSuffix(n.Journal, "journal.jsonl") {
		t.Errorf("no run_done notification for the stopped run: %+v", got)
	}
}

const confirmPlaybook = `
def ask(node):
    if not confirm("restart everything?"):
        fail("declined")
    log("confirmed")
step("ask", ask, nodes = "servers", once = True)
`

// Acceptance: without a terminal and without --yes, a playbook that
// prompts fails at once with a clear message; with --yes it runs.
func TestE2EPromptWithoutTerminal(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 1, Agents: 0})
	pb := writePlaybook(t, "ask.star", confirmPlaybook)
	for _, output := range []string{"json", "plain"} {
		res := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "-o", output, "--state-dir", l.StateDir)
		if res.Code != exitFailed || res.Took > 20*time.Second {
			t.Errorf("-o %s: exit %d after %s, want 1 at once", output, res.Code, res.Took)
		}
		if missing := containsAll(res.Stderr, `step "ask" on server-1 asked for confirmation`, "no terminal", "add --yes"); len(missing) > 0 {
			t.Errorf("-o %s: stderr lacks %q:\n%s", output, missing, res.Stderr)
		}
		if !strings.Contains(res.Stdout, "confirmation needed but no terminal to ask (use --yes)") {
			t.Errorf("-o %s: the step's failure does not say why:\n%s", output, res.Stdout)
		}
		if output == "json" && res.StepStatus("ask", "server-1") != "failed" {
			t.Errorf("step ask = %q", res.StepStatus("ask", "server-1"))
		}
	}
	ok := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "-o", "json", "--yes", "--state-dir", l.StateDir)
	if ok.Code != 0 || !strings.Contains(strings.Join(ok.Output("server-1"), "\n"), "confirmed") {
		t.Errorf("with --yes: %s", ok.Describe())
	}
}

// resumeParamsPlaybook changes server-1, then fails while its duration
// parameter is too short; mode is a parameter that may not change once
// the first step is done.
const resumeParamsPlaybook = `
mode = param("mode", "a", choices = ["a", "b"])
wait = param("wait", "1s", type = "duration")
def first(node):
    node.run("true")
def second(node):
    if wait == "1s":
        fail("wait %s is too short" % wait)
    log("mode %s wait %s" % (mode, wait))
step("first", first, nodes = "server-1")
step("second", second, nodes = "server-1")
`

// TestE2EResumeCorrectsParameters: resume -p takes a corrected duration,
// says what changed and journals it; it refuses to change a parameter the
// finished change depended on, and a bad corrected value like a bad -p.
func TestE2EResumeCorrectsParameters(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 1, Agents: 0})
	pb := writePlaybook(t, "fix.star", resumeParamsPlaybook)
	first := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "-o", "json", "--yes", "--state-dir", l.StateDir)
	if first.Code != exitFailed || first.StepStatus("first", "server-1") != "changed" {
		t.Fatalf("first run: %s", first.Describe())
	}
	var runID string
	for _, e := range first.Events {
		if e.Type == "run_started" {
			runID = e.str("run_id")
		}
	}
	refused := runCaretakerBinary(t, "resume", runID, "-p", "mode=b", "-o", "plain", "--yes", "--state-dir", l.StateDir)
	if refused.Code != exitBadInput || !strings.Contains(refused.Stderr, "resume -p mode: refused: 1 change(s) of run "+runID+" are already done") {
		t.Errorf("resume -p mode=b: exit %d, stderr %s", refused.Code, refused.Stderr)
	}
	bad := runCaretakerBinary(t, "resume", runID, "-p", "wait=banana", "-o", "plain", "--yes", "--state-dir", l.StateDir)
	if bad.Code != exitBadInput || !strings.Contains(bad.Stderr, `"banana" is not a duration`) {
		t.Errorf("resume -p wait=banana: exit %d, stderr %s", bad.Code, bad.Stderr)
	}
	fixed := runCaretakerBinary(t, "resume", runID, "-p", "wait=2s", "-o", "json", "--yes", "--state-dir", l.StateDir)
	if fixed.Code != exitOK || !strings.Contains(fixed.Stderr, "parameters corrected for this attempt: wait 1s → 2s") ||
		!strings.Contains(strings.Join(fixed.Output("server-1"), "\n"), "mode a wait 2s") {
		t.Errorf("resume -p wait=2s: %s\n%s", fixed.Describe(), fixed.Stderr)
	}
	if strings.Contains(fixed.Stderr, "playbook changed") {
		t.Errorf("resume of an unchanged playbook says it changed: %s", fixed.Stderr)
	}
	shown := runCaretakerBinary(t, "runs", runID, "--state-dir", l.StateDir)
	if !strings.Contains(shown.Stdout, "wait=2s") {
		t.Errorf("runs show does not list the corrected parameter:\n%s", shown.Stdout)
	}

	// The operator fixes the playbook instead: resume says it runs the
	// changed source.
	second := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "-o", "json", "--yes", "--state-dir", l.StateDir)
	if second.Code != exitFailed {
		t.Fatalf("second run: %s", second.Describe())
	}
	if err := os.WriteFile(pb, []byte(strings.Replace(resumeParamsPlaybook, `if wait == "1s":`, `if wait == "0s":`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	edited := runCaretakerBinary(t, "resume", second.runID(), "-o", "json", "--yes", "--state-dir", l.StateDir)
	if edited.Code != exitOK || !strings.Contains(edited.Stderr, "the playbook changed since run "+second.runID()+" started: "+pb+" changed") {
		t.Errorf("resume of an edited playbook: %s\n%s", edited.Describe(), edited.Stderr)
	}
}
