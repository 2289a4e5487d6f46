package journal

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/caretaker/caretaker/runner"
)

// TestJournalGroupCommit: many nodes finishing at once share fsyncs, and
// still every entry is in the file, whole, when its Emit returns.
func TestJournalGroupCommit(t *testing.T) {
	state := t.TempDir()
	j, err := Create(state, NewRunMeta("20260101-000000-gc-0001", "gc", "c"))
	if err != nil {
		t.Fatal(err)
	}
	j.Emit(runner.RunStarted{RunID: "20260101-000000-gc-0001", Playbook: "gc", Cluster: "c", At: time.Now()})
	const n = 200
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			node := fmt.Sprintf("n%03d", i)
			j.Emit(runner.StepDone{Step: 0, StepName: "s", Node: node, Status: runner.StatusOK, At: time.Now()})
			// Once Emit returned, the entry is in the file.
			if !journalHas(t, j.Path(), node) {
				t.Errorf("entry of %s not in the journal after Emit returned", node)
			}
		}(i)
	}
	wg.Wait()
	if err := j.Err(); err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	written := j.written
	j.mu.Unlock()
	j.syncMu.Lock()
	synced := j.synced
	j.syncMu.Unlock()
	if synced != written {
		t.Errorf("synced %d of %d entries", synced, written)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	rec, err := ReadRun(state, "20260101-000000-gc-0001")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if !rec.Completed(0, fmt.Sprintf("n%03d", i)) {
			t.Fatalf("node n%03d not recorded as completed", i)
		}
	}
}

func journalHas(t *testing.T, path, node string) bool {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Entry
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "step_done" && e.Node == node {
			return true
		}
	}
	return false
}
