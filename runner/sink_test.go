package runner_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/runner"
)

// TestPlainSinkSaysEachThingOnce: a failed cell's error and a note appear
// once in plain output, in the summary at the end; the live line of the
// failed cell points there.
func TestPlainSinkSaysEachThingOnce(t *testing.T) {
	var out bytes.Buffer
	s := runner.NewPlainSink(&out, false)
	at := time.Now()
	failed := runner.StepDone{Step: 0, StepName: "servers", Node: "server-2", Status: runner.StatusFailed, Error: "k3s.restart: k3s did not come back on server-2", At: at}
	s.Emit(runner.RunStarted{RunID: "r1", Playbook: "p", Cluster: "c", Steps: []runner.StepInfo{{Index: 0, Name: "servers"}}, At: at})
	s.Emit(runner.Note{Node: "server-2", Text: "K3s did not come back on server-2: repair it first", At: at})
	s.Emit(failed)
	s.Emit(runner.RunDone{RunID: "r1", Status: "failed", Counts: map[runner.Status]int{runner.StatusFailed: 1}, Failed: []runner.StepDone{failed},
		Notes: []string{"K3s did not come back on server-2: repair it first"}, At: at})
	got := out.String()
	for _, once := range []string{"k3s did not come back on server-2", "repair it first"} {
		if n := strings.Count(got, once); n != 1 {
			t.Errorf("%q appears %d times, want once:\n%s", once, n, got)
		}
	}
	if !strings.Contains(got, "[servers] server-2: FAILED in 0s (the error is in the summary at the end)") || !strings.Contains(got, "  FAILED server-2 [servers]: k3s.restart") {
		t.Errorf("want a live FAILED line pointing at the summary and the error in the summary:\n%s", got)
	}
}
