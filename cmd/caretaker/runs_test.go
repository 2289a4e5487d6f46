package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/journal"
)

// writeJournal fabricates the journal of a run that was killed in step
// "b" on s1, with one undo action.
func writeJournal(t *testing.T, stateDir, id string, finish string) {
	t.Helper()
	meta := journal.NewRunMeta(id, "pb", "t")
	meta.PlaybookRef, meta.Inventory = "ping", "/nonexistent/inv.yaml"
	j, err := journal.Create(stateDir, meta)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.Emit(runner.RunStarted{RunID: id, Playbook: "pb", Cluster: "t", At: time.Now(),
		Steps: []runner.StepInfo{{Index: 0, Name: "a", Nodes: []string{"s1", "a1"}, Mutates: true}, {Index: 1, Name: "b", Nodes: []string{"s1"}, Mutates: true}},
		Nodes: []runner.NodeInfo{{Name: "s1"}, {Name: "a1"}}})
	j.Emit(runner.StepDone{Step: 0, StepName: "a", Node: "s1", Status: runner.StatusChanged})
	j.Emit(runner.StepDone{Step: 0, StepName: "a", Node: "a1", Status: runner.StatusSkipped, Reason: "nothing to do"})
	j.Emit(runner.StepStarted{Step: 1, StepName: "b", Node: "s1"})
	if err := j.RecordUndo(context.Background(), runner.UndoRecord{Step: 1, Node: "s1", Kind: "k3s.restore_server", Data: []byte(`{"node":"s1"}`)}); err != nil {
		t.Fatal(err)
	}
	if finish != "" {
		j.Emit(runner.StepDone{Step: 1, StepName: "b", Node: "s1", Status: runner.StatusOK})
		j.Emit(runner.RunDone{RunID: id, Status: finish})
	}
}

func TestCLIRunsListAndShow(t *testing.T) {
	state := t.TempDir()
	code, out, _ := runCLI(t, "runs", "--state-dir", state)
	if code != 0 || !strings.Contains(out, "no runs journaled") {
		t.Errorf("empty state dir: %d %q", code, out)
	}
	writeJournal(t, state, "20260101-000000-pb-0001", "")
	writeJournal(t, state, "20260101-000100-pb-0002", "ok")

	code, out, errOut := runCLI(t, "runs", "--state-dir", state)
	if code != 0 {
		t.Fatalf("runs: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "RUN") {
		t.Fatalf("runs table:\n%s", out)
	}
	// Newest first; the killed one reads interrupted with 2 of 3 cells done.
	if !strings.Contains(lines[1], "20260101-000100-pb-0002") || !strings.Contains(lines[1], " ok ") || !strings.Contains(lines[1], "3/3") {
		t.Errorf("first row %q", lines[1])
	}
	if !strings.Contains(lines[2], "interrupted") || !strings.Contains(lines[2], "2/3") {
		t.Errorf("second row %q", lines[2])
	}

	code, out, _ = runCLI(t, "runs", "20260101-000000-pb-0001", "--state-dir", state)
	for _, want := range []string{"— interrupted", "1. a  s1  changed", "a1  skipped  nothing to do", "2. b  s1  INTERRUPTED", "#1 k3s.restore_server on s1, step \"b\"", "next: `caretaker resume 20260101-000000-pb-0001` continues it; `caretaker undo 20260101-000000-pb-0001`"} {
		if code != 0 || !strings.Contains(collapse(out), want) {
			t.Errorf("runs RUN lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "runs", "--state-dir", state, "-o", "json")
	var recs []journal.RunRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil || code != 0 || len(recs) != 2 || recs[1].State != journal.RunStateInterrupted || len(recs[1].Undos) != 1 {
		t.Errorf("runs -o json: %v %d %+v", err, code, recs)
	}
	if code, _, errOut := runCLI(t, "runs", "nope", "--state-dir", state); code != exitBadInput || !strings.Contains(errOut, "no journal for run nope") {
		t.Errorf("runs of an unknown run: %d %s", code, errOut)
	}
	if code, _, _ := runCLI(t, "runs", "--state-dir", state, "-o", "yaml"); code != exitBadInput {
		t.Errorf("bad --output: %d", code)
	}
}

// collapse squeezes runs of spaces (tabwriter padding) into two.
func collapse(s string) string {
	var b strings.Builder
	spaces := 0
	for _, r := range s {
		if r == ' ' {
			spaces++
			continue
		}
		if spaces > 0 {
			if spaces == 1 {
				b.WriteByte(' ')
			} else {
				b.WriteString("  ")
			}
			spaces = 0
		}
		b.WriteRune(r)
	}
	return b.String()
}

func TestCLIResumeAndUndoRefusals(t *testing.T) {
	state := t.TempDir()
	writeJournal(t, state, "done-run", "ok")
	writeJournal(t, state, "killed-run", "")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"resume", "missing", "--state-dir", state}, exitBadInput, "no journal for run missing"},
		{[]string{"resume", "done-run", "--state-dir", state}, exitBadInput, "ended ok: nothing to resume"},
		{[]string{"resume", "../x", "--state-dir", state}, exitBadInput, "is not valid"},
		// The journal names an inventory that is gone: say which.
		{[]string{"resume", "killed-run", "--state-dir", state}, exitBadInput, "/nonexistent/inv.yaml"},
		{[]string{"undo", "missing", "--state-dir", state}, exitBadInput, "no journal for run missing"},
		{[]string{"undo", "killed-run", "--state-dir", state}, exitBadInput, "/nonexistent/inv.yaml"},
	} {
		code, _, errOut := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want %d with %q: %s", c.args, code, c.code, c.want, errOut)
		}
	}
}
