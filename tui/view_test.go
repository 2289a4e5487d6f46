package tui

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/golden"

	"github.com/caretaker/caretaker/runner"
)

// sizes are the two fixed terminal sizes of the golden tests.
var sizes = [][2]int{{80, 24}, {160, 48}}

// failedDone is the RunDone of midRun's run once it stops on srv-2.
func failedDone() runner.RunDone {
	id := "20260314-092653-ab12"
	return runner.RunDone{
		RunID:  id,
		Status: "failed",
		Counts: map[runner.Status]int{runner.StatusOK: 5, runner.StatusChanged: 4, runner.StatusSkipped: 1, runner.StatusFailed: 1},
		Failed: []runner.StepDone{{Step: 3, StepName: "strip_server", Node: "srv-2", Status: runner.StatusFailed,
			Error: "k3s.strip_server: srv-2: /etc/rancher/k3s/config.yaml: permission denied (check sudo for the ssh user)\nsecond line"}},
		Notes:    []string{"backups of server/tls and tokens in /var/lib/caretaker/runs/" + id + "/backups"},
		Journal:  "/var/lib/caretaker/runs/" + id + "/journal.jsonl",
		StateDir: "/var/lib/caretaker",
		Duration: 95 * time.Second,
		At:       at(95),
	}
}

func destructivePrompt() promptMsg {
	return promptMsg{q: runner.Prompt{ID: 1, Step: 4, Node: "srv-1", Destructive: true,
		Question: "Rotate the cluster CA on srv-1 now? Agents reconnect with the new CA; undoing needs the backup."},
		reply: make(chan bool, 1)}
}

// TestView compares whole screens with golden files at 80×24 and 160×48.
func TestView(t *testing.T) {
	cases := []struct {
		name  string
		opts  Options
		drive func(m *model)
		want  []string // also asserted directly, so a bad -update is caught
	}{
		{"plan", Options{Plan: rotatePlan(), Confirm: true}, func(m *model) {},
			[]string{"8 steps × 5 nodes", "backup_certs", "once", "REAL RUN", "enter start"}},
		{"plan_check", Options{Plan: withParams(rotatePlan()), Confirm: true, Check: true}, func(m *model) {},
			[]string{"CHECK", "check mode: steps only report", "params ca=new-root.pem force=false"}},
		{"running", Options{Plan: rotatePlan()}, midRun,
			[]string{"servers (3)", "agents (2)", "✗", "⠋ 23s", "39% 11/28", "waiting for the API"}},
		{"prompt", Options{Plan: rotatePlan()}, func(m *model) { midRun(m); send(m, destructivePrompt()) },
			[]string{"this is destructive", "enter No", "srv-1 · step 5 rotate_ca"}},
		{"abort", Options{Plan: rotatePlan(), Controller: &fakeController{}}, func(m *model) { midRun(m); press(m, "q") },
			[]string{"Abort the run?", "ctrl+c: abort now"}},
		{"help", Options{Plan: rotatePlan()}, func(m *model) { midRun(m); press(m, "?") },
			[]string{"next failed", "save log", "pause/resume"}},
		{"filter_failed", Options{Plan: rotatePlan()}, func(m *model) { midRun(m); press(m, "/"); typeText(m, "fail") },
			[]string{"servers (1)", "/fail█", "Permission denied"}},
		{"failed_cell", Options{Plan: rotatePlan()}, func(m *model) { midRun(m); press(m, "f") },
			[]string{"srv-2 (server 10.0.0.12)", "4/8 strip_server · failed after 1.2s:"}},
		{"pane_scrolled", Options{Plan: rotatePlan()}, func(m *model) {
			midRun(m)
			for i := range 60 {
				send(m, runner.OutputLine{Step: 5, Node: "srv-1", Stream: runner.StreamStdout, Text: fmt.Sprintf("line %02d\tof \x1b[31mrestart\x1b[0m output", i), At: at(70)})
			}
			press(m, "tab", "k", "k", "k")
		}, []string{"line 56 of restart output", "esc/tab grid"}},
		{"summary_failed", Options{Plan: rotatePlan()}, func(m *model) { midRun(m); send(m, failedDone()) },
			[]string{"run failed after 1m35s", "failed (1)", "srv-2", "journal", "caretaker resume 20260314-092653-ab12"}},
		{"summary_check_ok", Options{Plan: rotatePlan(), Check: true}, func(m *model) {
			send(m, rotatePlan(), runner.RunDone{RunID: "r1", Status: "ok", Counts: map[runner.Status]int{runner.StatusOK: 28}, Duration: 12 * time.Second})
		}, []string{"run ok after 12s", "check mode, nothing was changed", "run again without --check"}},
		{"nodes_1000_bottom", Options{Plan: bigPlan(1000, 10)}, func(m *model) { press(m, "G") },
			[]string{"node-0999", "1000/1000"}},
	}
	for _, tc := range cases {
		for _, sz := range sizes {
			t.Run(fmt.Sprintf("%s/%dx%d", tc.name, sz[0], sz[1]), func(t *testing.T) {
				m := newTest(t, tc.opts, sz[0], sz[1])
				tc.drive(m)
				got := screen(t, m)
				checkScreen(t, got, sz[0], sz[1])
				plain := stripANSI(got)
				for _, w := range tc.want {
					if !strings.Contains(plain, w) {
						t.Errorf("screen lacks %q:\n%s", w, plain)
					}
				}
				golden.RequireEqual(t, got)
			})
		}
	}
}

// checkScreen asserts the screen fills the terminal and never overflows it.
func checkScreen(t *testing.T, s string, w, h int) {
	t.Helper()
	lines := strings.Split(s, "\n")
	if len(lines) != h {
		t.Errorf("screen has %d lines, want %d", len(lines), h)
	}
	for i, l := range lines {
		if n := displayWidth(l); n > w {
			t.Errorf("line %d is %d columns wide, more than %d: %q", i+1, n, w, stripANSI(l))
		}
	}
}

// TestResize checks that the layout follows the window: beside at 160
// columns, stacked at 80, and that nothing overflows in between.
func TestResize(t *testing.T) {
	m := newTest(t, Options{Plan: rotatePlan()}, 160, 48)
	midRun(m)
	wide := stripANSI(screen(t, m))
	if !strings.Contains(wide, "│▸ step 1/8 facts") {
		t.Fatalf("at 160 columns the output should be beside the grid:\n%s", wide)
	}
	for _, w := range []int{150, 120, 119, 100, 80, 60, 40} {
		for _, h := range []int{48, 24, 12} {
			send(m, sizeMsg(w, h))
			checkScreen(t, screen(t, m), w, h)
		}
	}
	// Absurdly small windows, with a modal open, must not panic or overflow.
	send(m, destructivePrompt())
	for _, sz := range [][2]int{{1, 1}, {5, 2}, {20, 5}, {30, 8}} {
		send(m, sizeMsg(sz[0], sz[1]))
		checkScreen(t, screen(t, m), sz[0], sz[1])
	}
	press(m, "n")
	send(m, sizeMsg(80, 24))
	narrow := stripANSI(screen(t, m))
	if strings.Contains(narrow, "│") || !strings.Contains(narrow, "\n srv-1 (server 10.0.0.11)") {
		t.Fatalf("at 80 columns the output should be below the grid:\n%s", narrow)
	}
}

func withParams(p runner.RunStarted) runner.RunStarted {
	p.Params = map[string]string{"force": "false", "ca": "new-root.pem"}
	return p
}
