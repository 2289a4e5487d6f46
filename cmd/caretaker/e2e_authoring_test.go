package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/lab"
)

// TestE2EAuthoringJourney does what a platform engineer new to caretaker
// does (issue 13's proof): scaffold a playbook, edit it, test it, plan it,
// rehearse it with --check, break a node with `caretaker exec`, run the
// playbook for real on the lab, read the step results from the JSON
// events, check with exec that the node is back, and undo the edit's
// recorded command; then schedule it: the printed units pass
// systemd-analyze verify on a root where caretaker is installed, and the
// service's command line runs the playbook on the lab.
func TestE2EAuthoringJourney(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 1, Agents: 1})
	inv := l.InventoryPath()
	dir := filepath.Join(t.TempDir(), "team")
	state := []string{"--state-dir", l.StateDir}

	if r := runCaretakerBinary(t, "new", "playbook", "fix-nodes", "--dir", dir); r.Code != 0 {
		t.Fatalf("new playbook: %s", r.Describe())
	}
	// The edit: a marker file written with a recorded undo.
	pb := filepath.Join(dir, "fix-nodes.star")
	src, err := os.ReadFile(pb)
	if err != nil {
		t.Fatal(err)
	}
	edited := string(src) + `
def mark(node):
    node.run("touch /var/tmp/fixed-by-caretaker", undo = "rm -f /var/tmp/fixed-by-caretaker")

step("mark", mark, nodes = "all", doc = "leave a marker (undone by caretaker undo)")
`
	if err := os.WriteFile(pb, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	// The fake cluster knows K3s's commands, not the team's: the test
	// stubs them.
	tp := filepath.Join(dir, "fix-nodes_test.star")
	tsrc, err := os.ReadFile(tp)
	if err != nil {
		t.Fatal(err)
	}
	stubbed := strings.ReplaceAll(string(tsrc), "    c = fake.cluster(servers = 1, agents = 1)\n", "    c = fake.cluster(servers = 1, agents = 1)\n    c.on(\"^(touch|rm -f) /var/tmp/\")\n")
	if stubbed == string(tsrc) {
		t.Fatal("the generated test has no fake.cluster(servers = 1, agents = 1) line to stub after")
	}
	if r := runCaretakerBinary(t, "test", dir); r.Code != 1 || !strings.Contains(r.Stdout, "cluster.on(PATTERN") {
		t.Errorf("the edited playbook with an unknown command: want a failing test naming cluster.on: %s", r.Describe())
	}
	if err := os.WriteFile(tp, []byte(stubbed), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCaretakerBinary(t, "test", dir); r.Code != 0 || !strings.Contains(r.Stdout, "PASS: 3 test(s)") {
		t.Fatalf("caretaker test of the edited playbook: %s", r.Describe())
	}
	if r := runCaretakerBinary(t, "plan", pb, "-i", inv); r.Code != 0 || !strings.Contains(r.Stdout, "3. mark [changes nodes]") {
		t.Fatalf("plan: %s", r.Describe())
	}

	// Break the agent, rehearse, then repair for real.
	if r := runCaretakerBinary(t, "exec", "-i", inv, "--limit", "agent-1", "--changes", "--yes", "-o", "json", "--state-dir", l.StateDir, "--", "systemctl", "stop", "k3s-agent"); r.Code != 0 || r.StepStatus("exec", "agent-1") != "changed" {
		t.Fatalf("exec --changes: %s", r.Describe())
	}
	before := snapshotTree(t, l.NodeRoot("agent-1"))
	if r := runCaretakerBinary(t, append([]string{"run", pb, "-i", inv, "--check", "--yes", "-o", "json"}, state...)...); r.Code != 0 {
		t.Fatalf("--check: %s", r.Describe())
	}
	if d := diffTrees(before, snapshotTree(t, l.NodeRoot("agent-1"))); len(d) > 0 {
		t.Errorf("--check changed agent-1: %v", d)
	}
	res := runCaretakerBinary(t, append([]string{"run", pb, "-i", inv, "--yes", "-o", "json"}, state...)...)
	if res.Code != 0 || res.StepStatus("repair", "agent-1") != "changed" || res.StepStatus("repair", "server-1") != "skipped" {
		t.Fatalf("real run: %s", res.Describe())
	}
	states := map[string]string{}
	for _, e := range res.Events {
		if e.Type == "step_done" && e.str("step_name") == "report" {
			var r struct{ Service, State string }
			b, _ := json.Marshal(e.Raw["result"])
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("report result %s: %v", b, err)
			}
			states[e.str("node")] = r.Service + "=" + r.State
		}
	}
	if states["agent-1"] != "k3s-agent=inactive" || states["server-1"] != "k3s=active" {
		t.Errorf("step results of report: %v", states)
	}
	for sel, svc := range map[string]string{"servers": "k3s", "agents": "k3s-agent"} {
		if r := runCaretakerBinary(t, "exec", "-i", inv, "--limit", sel, "-o", "json", "--state-dir", l.StateDir, "--", "systemctl", "is-active", svc); r.Code != 0 {
			t.Errorf("exec after the repair: %s should be active on the %s: %s", svc, sel, r.Describe())
		}
	}
	if _, err := os.Stat(l.HostPath("agent-1", "/var/tmp/fixed-by-caretaker")); err != nil {
		t.Fatalf("marker: %v", err)
	}
	if r := runCaretakerBinary(t, append([]string{"undo", res.runID(), "--yes", "-i", inv, "-o", "json"}, state...)...); r.Code != 0 {
		t.Fatalf("undo: %s", r.Describe())
	}
	for _, n := range []string{"server-1", "agent-1"} {
		if _, err := os.Stat(l.HostPath(n, "/var/tmp/fixed-by-caretaker")); !os.IsNotExist(err) {
			t.Errorf("undo left the marker on %s: %v", n, err)
		}
	}
	scheduleJourney(t, l, pb)
}

// scheduleJourney is the last step of the authoring journey: schedule the
// playbook as the README shows, with no --binary. This binary is a build
// output, so the units name the installed path and schedule print says so;
// the units are verified where caretaker is installed there, and the
// service's ExecStart, run with this binary in place of the installed one,
// runs the playbook on the lab.
func scheduleJourney(t *testing.T, l *e2eLab, pb string) {
	t.Helper()
	const installed = "/usr/local/bin/caretaker"
	r := runCaretakerBinary(t, "schedule", "print", "--playbook", pb, "-i", l.InventoryPath(), "--on", "Mon..Fri 22:30", "--state-dir", l.StateDir)
	if r.Code != 0 || !strings.Contains(r.Stderr, "the units run "+installed) {
		t.Fatalf("schedule print: %s", r.Describe())
	}
	units := verifyScheduleUnits(t, r.Stdout, map[string]string{caretakerBinary(t): installed})
	want := []string{
		"/etc/systemd/system/caretaker-fix-nodes-prune.service", "/etc/systemd/system/caretaker-fix-nodes-prune.timer",
		"/etc/systemd/system/caretaker-fix-nodes.service", "/etc/systemd/system/caretaker-fix-nodes.timer",
	}
	if !slices.Equal(units, want) {
		t.Errorf("schedule print units %v, want %v", units, want)
	}
	if !strings.Contains(r.Stdout, "\n30 22 * * 1-5 "+installed+" run "+pb+" ") {
		t.Errorf("schedule print: no crontab line for Mon..Fri 22:30:\n%s", r.Stdout)
	}
	var argv []string
	for _, line := range strings.Split(printedFiles(r.Stdout)["/etc/systemd/system/caretaker-fix-nodes.service"], "\n") {
		if cmd, ok := strings.CutPrefix(line, "ExecStart="); ok && !strings.ContainsAny(cmd, `"\$%`) {
			argv = strings.Fields(cmd)
		}
	}
	if len(argv) < 2 || argv[0] != installed {
		t.Fatalf("the service's ExecStart (unquoted, %s first) not found:\n%s", installed, r.Stdout)
	}
	if run := runCaretakerBinary(t, argv[1:]...); run.Code != 0 || run.RunStatus() != "ok" || run.StepStatus("mark", "agent-1") != "changed" {
		t.Errorf("the scheduled command %v: %s", argv, run.Describe())
	}
}
