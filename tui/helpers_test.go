package tui

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"

	"github.com/caretaker/caretaker/runner"
)

// t0 is the fixed clock of the tests.
var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// rotatePlan is a plan shaped like the CA rotation: 3 servers, 2 agents.
func rotatePlan() runner.RunStarted {
	servers := []string{"srv-1", "srv-2", "srv-3"}
	all := []string{"srv-1", "srv-2", "srv-3", "agent-1", "agent-2"}
	return runner.RunStarted{
		RunID:    "20260314-092653-ab12",
		Playbook: "rotate-ca",
		Cluster:  "prod-eu",
		Steps: []runner.StepInfo{
			{Index: 0, Name: "facts", Nodes: all, Doc: "collect versions and config sources"},
			{Index: 1, Name: "backup_certs", Nodes: servers, Mutates: true, Doc: "archive server/tls and tokens"},
			{Index: 2, Name: "generate_ca", Nodes: servers, Once: true, Mutates: true},
			{Index: 3, Name: "strip_server", Nodes: servers, Serial: 1, Mutates: true},
			{Index: 4, Name: "rotate_ca", Nodes: servers, Serial: 1, Mutates: true},
			{Index: 5, Name: "restart", Nodes: all, Serial: 1, Mutates: true},
			{Index: 6, Name: "verify", Nodes: all},
			{Index: 7, Name: "restore_server", Nodes: servers, Mutates: true},
		},
		Nodes: []runner.NodeInfo{
			{Name: "agent-1", Role: "agent", Address: "10.0.0.21"},
			{Name: "srv-1", Role: "server", Address: "10.0.0.11"},
			{Name: "srv-2", Role: "server", Address: "10.0.0.12"},
			{Name: "agent-2", Role: "agent", Address: "10.0.0.22"},
			{Name: "srv-3", Role: "server", Address: "10.0.0.13"},
		},
		At: t0,
	}
}

// bigPlan has n nodes (a tenth of them servers) and s steps.
func bigPlan(n, s int) runner.RunStarted {
	p := runner.RunStarted{RunID: "bench", Playbook: "big", Cluster: "huge", At: t0}
	var names []string
	for i := range n {
		role := "agent"
		if i%10 == 0 {
			role = "server"
		}
		name := fmt.Sprintf("node-%04d", i)
		names = append(names, name)
		p.Nodes = append(p.Nodes, runner.NodeInfo{Name: name, Role: role})
	}
	for i := range s {
		p.Steps = append(p.Steps, runner.StepInfo{Index: i, Name: fmt.Sprintf("step_%02d", i), Nodes: names, Mutates: i%2 == 1})
	}
	return p
}

// fakeController records the calls of the TUI.
type fakeController struct {
	calls []string
}

func (c *fakeController) Pause()  { c.calls = append(c.calls, "pause") }
func (c *fakeController) Resume() { c.calls = append(c.calls, "resume") }
func (c *fakeController) Stop(hard bool) {
	c.calls = append(c.calls, fmt.Sprintf("stop(%v)", hard))
}

// newTest builds a model at a size with the fixed clock.
func newTest(t testing.TB, opts Options, w, h int) *model {
	t.Helper()
	m := newModel(context.Background(), opts, nil, nil)
	m.now = func() time.Time { return t0.Add(83 * time.Second) }
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	return m
}

// send feeds messages through Update.
func send(m *model, msgs ...tea.Msg) {
	for _, msg := range msgs {
		m.Update(msg)
	}
}

// press types keys: single characters, or names like "enter", "ctrl+c".
func press(m *model, keys ...string) {
	for _, k := range keys {
		m.Update(keyMsg(k))
	}
}

func keyMsg(k string) tea.KeyPressMsg {
	switch k {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "up":
		return tea.KeyPressMsg{Code: tea.KeyUp}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	r := []rune(k)
	if len(r) != 1 {
		panic("keyMsg: unknown key " + k)
	}
	return tea.KeyPressMsg{Code: r[0], Text: k}
}

// typeText sends each rune of s as a key press.
func typeText(m *model, s string) {
	for _, r := range s {
		m.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
	}
}

// screen renders the view through the ASCII colour profile: colours are
// dropped, attributes (bold, reverse) kept, so goldens are stable.
func screen(t testing.TB, m *model) string {
	t.Helper()
	var b bytes.Buffer
	w := colorprofile.NewWriter(&b, nil)
	w.Profile = colorprofile.ASCII
	if _, err := w.WriteString(m.View().Content); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// at returns t0 plus seconds.
func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// midRun drives the rotate plan into the middle of a run: facts done
// everywhere, backups done, the CA generated, strip_server failed on srv-2,
// restart running on srv-1, some output.
func midRun(m *model) {
	p := rotatePlan()
	send(m, p)
	for i, n := range []string{"srv-1", "srv-2", "srv-3", "agent-1", "agent-2"} {
		send(m,
			runner.StepStarted{Step: 0, StepName: "facts", Node: n, At: at(1)},
			runner.OutputLine{Step: 0, Node: n, Stream: runner.StreamLog, Text: "k3s v1.31.4+k3s1, bootstrap bug: yes", At: at(2)},
			runner.StepDone{Step: 0, StepName: "facts", Node: n, Status: runner.StatusOK, Duration: time.Duration(900+i*100) * time.Millisecond, At: at(2)},
		)
	}
	for _, n := range []string{"srv-1", "srv-2", "srv-3"} {
		send(m,
			runner.StepStarted{Step: 1, StepName: "backup_certs", Node: n, At: at(3)},
			runner.OutputLine{Step: 1, Node: n, Stream: runner.StreamStdout, Text: "wrote /var/lib/caretaker/backup-" + n + ".tar.gz (sha256 9f2c…)", At: at(5)},
			runner.StepDone{Step: 1, StepName: "backup_certs", Node: n, Status: runner.StatusChanged, Duration: 2 * time.Second, At: at(5)},
		)
	}
	send(m,
		runner.StepStarted{Step: 2, StepName: "generate_ca", Node: "srv-1", At: at(6)},
		runner.StepDone{Step: 2, StepName: "generate_ca", Node: "srv-1", Status: runner.StatusChanged, Duration: 1500 * time.Millisecond, At: at(7.5)},
		runner.StepStarted{Step: 3, StepName: "strip_server", Node: "srv-1", At: at(8)},
		runner.StepDone{Step: 3, StepName: "strip_server", Node: "srv-1", Status: runner.StatusSkipped, Reason: "no server option set", At: at(8.2), Duration: 200 * time.Millisecond},
		runner.StepStarted{Step: 3, StepName: "strip_server", Node: "srv-2", At: at(9)},
		runner.OutputLine{Step: 3, Node: "srv-2", Stream: runner.StreamStderr, Text: "sed: /etc/rancher/k3s/config.yaml: Permission denied", At: at(10)},
		runner.StepDone{Step: 3, StepName: "strip_server", Node: "srv-2", Status: runner.StatusFailed,
			Error:  "k3s.strip_server: srv-2: /etc/rancher/k3s/config.yaml: permission denied (check sudo for the ssh user)",
			Detail: "Traceback (most recent call last):\n  rotate-ca.star:41:22: in strip\n  <builtin>: in k3s.strip_server", Duration: 1200 * time.Millisecond, At: at(10.2)},
		runner.StepStarted{Step: 5, StepName: "restart", Node: "srv-1", At: at(60)},
		runner.OutputLine{Step: 5, Node: "srv-1", Stream: runner.StreamStdout, Text: "systemctl restart k3s", At: at(61)},
		runner.OutputLine{Step: 5, Node: "srv-1", Stream: runner.StreamLog, Text: "waiting for the API on :6443", At: at(62)},
	)
}

func sizeMsg(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }

func stripANSI(s string) string { return ansi.Strip(s) }

func displayWidth(s string) int { return ansi.StringWidth(s) }
