package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/caretaker/caretaker/runner"
)

// readRun parses a journal; probe says whether to try the run's lock to
// tell a running run from an interrupted one.
func readRun(dir string, probe bool) (*RunRecord, error) {
	path := filepath.Join(dir, journalFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	rd := &runReader{rec: &RunRecord{Path: path, done: map[stepKey]StepResult{}, shared: map[string][]sharedEntry{}}}
	rec := rd.rec
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 64<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			// A process killed while writing leaves a partial last line.
			if lineNo == countLines(data) && !bytes.HasSuffix(data, []byte("\n")) {
				rec.Truncated = true
				break
			}
			return nil, fmt.Errorf("journal %s:%d: %w (the journal is damaged)", path, lineNo, err)
		}
		if err := rd.apply(e); err != nil {
			return nil, fmt.Errorf("journal %s:%d: %w", path, lineNo, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	if !rd.haveHeader {
		return nil, fmt.Errorf("journal %s has no header: it is empty or damaged", path)
	}
	rd.finish()
	if probe && rec.State == RunStateInterrupted && runLocked(dir) {
		rec.State = RunStateRunning
	}
	return rec, nil
}

// runReader folds journal entries into a RunRecord.
type runReader struct {
	rec        *RunRecord
	started    map[stepKey]StepResult // steps of the last attempt without a result
	haveHeader bool
}

// apply folds one entry into the record.
func (rd *runReader) apply(e Entry) error {
	rec := rd.rec
	if e.At.After(rec.Updated) {
		rec.Updated = e.At
	}
	switch e.Type {
	case "run":
		if e.Meta == nil {
			return fmt.Errorf("run entry without header")
		}
		rec.Meta = *e.Meta
		rd.haveHeader = true
	case "attempt":
		rec.Attempts = max(rec.Attempts, e.Attempt)
		if e.Params != nil {
			rec.Meta.Params = e.Params
			if rec.Meta.ParamValues == nil {
				rec.Meta.ParamValues = map[string]string{}
			}
			for k, v := range e.Params {
				rec.Meta.ParamValues[k] = v
			}
		}
		rd.started = map[stepKey]StepResult{}
	case "step_started":
		if rd.started == nil {
			rd.started = map[stepKey]StepResult{}
		}
		rd.started[stepKey{e.Step, e.Node}] = StepResult{Step: e.Step, StepName: e.StepName, Node: e.Node, Status: runner.StatusRunning, Attempt: e.Attempt, At: e.At}
	case "step_done":
		rd.stepDone(e)
	case "undo":
		u := Undo{Seq: e.Seq, Attempt: e.Attempt, Step: e.Step, StepName: e.StepName, Node: e.Node, Kind: e.Kind, At: e.At}
		if len(e.Data) > 0 {
			u.Data = []byte(e.Data)
		} else {
			u.Data = e.DataB64
		}
		rec.Undos = append(rec.Undos, u)
	case "share":
		rec.shared[e.Kind] = append(rec.shared[e.Kind], sharedEntry{data: e.Data, step: e.Step, node: e.Node})
	case "note":
		txt := e.Text
		if e.Node != "" {
			txt = e.Node + ": " + txt
		}
		rec.Notes = append(rec.Notes, txt)
	case "run_done":
		rec.LastDone = &RunDoneEntry{Attempt: e.Attempt, Status: e.Status, Error: e.Error, Counts: e.Counts, Duration: e.Duration, At: e.At}
	}
	return nil
}

// stepDone records a step's result; a step skipped as "done in an earlier
// run" keeps its earlier ok/changed result.
func (rd *runReader) stepDone(e Entry) {
	k := stepKey{e.Step, e.Node}
	delete(rd.started, k)
	res := StepResult{Step: e.Step, StepName: e.StepName, Node: e.Node, Status: runner.Status(e.Status), Error: e.Error, Reason: e.Reason, Attempt: e.Attempt, Duration: e.Duration, At: e.At}
	if prev, ok := rd.rec.done[k]; ok && res.Status == runner.StatusSkipped && (prev.Status == runner.StatusOK || prev.Status == runner.StatusChanged) {
		return
	}
	rd.rec.done[k] = res
}

// finish orders the results and unfinished steps and sets the state.
func (rd *runReader) finish() {
	rec := rd.rec
	for _, r := range rec.done {
		rec.Results = append(rec.Results, r)
	}
	sort.Slice(rec.Results, func(a, b int) bool {
		ra, rb := rec.Results[a], rec.Results[b]
		if ra.Step != rb.Step {
			return ra.Step < rb.Step
		}
		return nodeOrder(rec.Meta.Nodes, ra.Node) < nodeOrder(rec.Meta.Nodes, rb.Node)
	})
	for _, s := range rd.started {
		rec.Started = append(rec.Started, s)
	}
	sort.Slice(rec.Started, func(a, b int) bool {
		if rec.Started[a].Step != rec.Started[b].Step {
			return rec.Started[a].Step < rec.Started[b].Step
		}
		return rec.Started[a].Node < rec.Started[b].Node
	})
	rec.State = RunStateInterrupted
	if rec.LastDone != nil && rec.LastDone.Attempt == rec.Attempts {
		rec.State = rec.LastDone.Status
		rec.Started = nil
	}
}
