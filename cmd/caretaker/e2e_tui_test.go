package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/lab"
)

// tmuxSession drives a real terminal: caretaker runs in a tmux pane of a
// fixed size, keys go in with send-keys and the screen comes back with
// capture-pane.
type tmuxSession struct {
	t      *testing.T
	socket string
	name   string
}

func newTmux(t *testing.T, width, height int, command string) *tmuxSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("this test needs tmux (apt-get install tmux); .ci/run installs it")
	}
	s := &tmuxSession{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock"), name: "e2e"}
	s.tmux("new-session", "-d", "-s", s.name, "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), command)
	t.Cleanup(func() { exec.Command("tmux", "-S", s.socket, "kill-server").Run() })
	return s
}

func (s *tmuxSession) tmux(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", s.socket}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *tmuxSession) screen() string { return s.tmux("capture-pane", "-p", "-t", s.name) }

func (s *tmuxSession) keys(keys ...string) {
	s.tmux(append([]string{"send-keys", "-t", s.name}, keys...)...)
}

// waitFor polls the screen until every want appears, or fails with the
// last screen.
func (s *tmuxSession) waitFor(timeout time.Duration, want ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var scr string
	for time.Now().Before(deadline) {
		scr = s.screen()
		if len(containsAll(scr, want...)) == 0 {
			return scr
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("screen never showed %q; last screen:\n%s", containsAll(scr, want...), scr)
	return ""
}

// TestTUIInTmux runs `caretaker run` in a real 120×40 terminal against the
// lab, with a failure injected on server-2: the plan screen, then the grid
// with every node and the failed cell, then the summary, which is printed
// to the terminal again after the program exits.
func TestTUIInTmux(t *testing.T) {
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 2})
	if err := l.fault("server-2", lab.FaultFailStart); err != nil {
		t.Fatal(err)
	}
	pb := filepath.Join(t.TempDir(), "restart.star")
	os.WriteFile(pb, []byte(`describe("restart servers one by one, then agents")
def restart(node):
    node.run("systemctl restart " + node.service)
def check(node):
    node.run("systemctl is-active " + node.service, changes = False)
step("restart", restart, nodes = "servers", serial = 1)
step("check", check, nodes = "all", mutates = False)
`), 0o644)
	cmd := fmt.Sprintf("NO_COLOR=1 %s run %s -i %s --state-dir %s; echo EXIT=$?; sleep 60",
		caretakerBinary(t), pb, l.InventoryPath(), t.TempDir())
	s := newTmux(t, 120, 40, cmd)

	plan := s.waitFor(20*time.Second, "restart", "server-1", "agent-2", "enter")
	if !strings.Contains(plan, "REAL RUN") && !strings.Contains(plan, "real run") {
		t.Errorf("plan screen does not say it is a real run:\n%s", plan)
	}
	s.keys("Enter")
	summary := s.waitFor(60*time.Second, "1 failed", "server-2", "exited with code 1", "caretaker resume")
	_ = summary
	// The grid: every node, server-2's restart failed, server-3 untouched.
	s.keys("Tab")
	grid := s.waitFor(10*time.Second, "server-1", "server-2", "server-3", "agent-1", "agent-2")
	if row := lineWith(grid, "server-2"); !strings.Contains(row, "✗") {
		t.Errorf("server-2's row shows no failed cell: %q\n%s", row, grid)
	}
	if row := lineWith(grid, "server-3 "); strings.ContainsAny(row, "✓●✗") {
		t.Errorf("server-3 was touched after server-2 failed in a serial step: %q", row)
	}
	t.Logf("summary screen:\n%s\ngrid screen:\n%s", summary, grid)
	s.keys("q")
	after := s.waitFor(20*time.Second, "EXIT=1")
	if !strings.Contains(after, "server-2") {
		t.Errorf("the summary printed after exit does not name server-2:\n%s", after)
	}
}

func lineWith(screen, s string) string {
	for _, l := range strings.Split(screen, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
