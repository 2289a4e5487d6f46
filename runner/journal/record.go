package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/gofrs/flock"

	"github.com/caretaker/caretaker/runner"
	errspkg "github.com/caretaker/caretaker/runner/errs"
)

// Undo is an undo action read back from a journal.
type Undo struct {
	Seq      int       `json:"seq"`
	Attempt  int       `json:"attempt"`
	Step     int       `json:"step"`
	StepName string    `json:"step_name"`
	Node     string    `json:"node"`
	Kind     string    `json:"kind"`
	Data     []byte    `json:"-"`
	At       time.Time `json:"at"`
}

// StepResult is the last recorded result of a step on a node.
type StepResult struct {
	Step     int           `json:"step"`
	StepName string        `json:"step_name"`
	Node     string        `json:"node"`
	Status   runner.Status `json:"status"`
	Error    string        `json:"error,omitempty"`
	Reason   string        `json:"reason,omitempty"`
	Attempt  int           `json:"attempt"`
	Duration time.Duration `json:"duration_ns"`
	At       time.Time     `json:"at"`
}

// RunDoneEntry is the end of an attempt as recorded.
type RunDoneEntry struct {
	Attempt  int                   `json:"attempt"`
	Status   string                `json:"status"`
	Error    string                `json:"error,omitempty"`
	Counts   map[runner.Status]int `json:"counts,omitempty"`
	Duration time.Duration         `json:"duration_ns"`
	At       time.Time             `json:"at"`
}

// RunRecord is a run read back from its journal.
type RunRecord struct {
	Meta RunMeta `json:"meta"`
	// Path is the journal file.
	Path string `json:"path"`
	// State is RunStateRunning, RunStateInterrupted or the status of the
	// last attempt's RunDone ("ok", "failed", "aborted").
	State    string `json:"state"`
	Attempts int    `json:"attempts"`
	// Results holds the last result per step and node, in plan order.
	Results []StepResult `json:"results,omitempty"`
	// Started are steps started in the last attempt without a result: the
	// step (and node) a killed run was in.
	Started  []StepResult  `json:"in_progress,omitempty"`
	Undos    []Undo        `json:"undos,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
	LastDone *RunDoneEntry `json:"last_done,omitempty"`
	Updated  time.Time     `json:"updated"`
	// Truncated is true when the last line was cut short (the process
	// died while writing it); it is ignored.
	Truncated bool `json:"truncated,omitempty"`

	done   map[stepKey]StepResult
	shared map[string][]sharedEntry
}

type stepKey struct {
	step int
	node string
}

// Completed reports whether the step ended ok or changed on the node in
// some attempt: `caretaker resume` skips it.
func (r *RunRecord) Completed(step int, node string) bool {
	res, ok := r.done[stepKey{step, node}]
	return ok && (res.Status == runner.StatusOK || res.Status == runner.StatusChanged)
}

// ResumeDone is the RunOptions.Done of a resumed run of plan: a step that
// changes nodes (mutates=True) is skipped where it ended ok or changed in
// an earlier attempt; a read-only step runs again, because later steps
// may rely on what it found (its result, the values it shared) and
// running it costs nothing but time.
func (r *RunRecord) ResumeDone(plan *runner.Plan) func(step int, node string) bool {
	return func(step int, node string) bool {
		if step < 0 || step >= len(plan.Steps) || !plan.Steps[step].Mutates {
			return false
		}
		return r.Completed(step, node)
	}
}

// Resumable says whether `caretaker resume` can continue the run, and if
// not, why.
func (r *RunRecord) Resumable() error {
	switch r.State {
	case RunStateRunning:
		return fmt.Errorf("run %s is still running (pid %d on %s): %w", r.Meta.RunID, r.Meta.PID, r.Meta.Host, errspkg.ErrLocked)
	case "ok":
		return fmt.Errorf("run %s ended ok: nothing to resume: %w", r.Meta.RunID, errspkg.ErrBadInput)
	}
	if r.Meta.UndoOf != "" {
		return fmt.Errorf("run %s undid run %s: run `caretaker undo %s` again to finish it: %w", r.Meta.RunID, r.Meta.UndoOf, r.Meta.UndoOf, errspkg.ErrBadInput)
	}
	if r.Meta.PlaybookRef == "" {
		return fmt.Errorf("run %s does not say where its playbook came from, so it cannot be loaded again: %w", r.Meta.RunID, errspkg.ErrBadInput)
	}
	if r.Meta.Check {
		return fmt.Errorf("run %s was a check-mode run: run it again instead of resuming it: %w", r.Meta.RunID, errspkg.ErrBadInput)
	}
	return nil
}

// CheckPlan verifies that plan has the steps the journal recorded, in the
// same order: resume skips steps by index, so a playbook edited since the
// run could skip the wrong ones.
func (r *RunRecord) CheckPlan(plan *runner.Plan) error {
	if len(plan.Steps) != len(r.Meta.Steps) {
		return fmt.Errorf("playbook %s now has %d steps, run %s had %d: it changed since the run, so the run cannot be resumed safely: %w", plan.File, len(plan.Steps), r.Meta.RunID, len(r.Meta.Steps), errspkg.ErrBadInput)
	}
	for i, s := range plan.Steps {
		if s.Name != r.Meta.Steps[i].Name {
			return fmt.Errorf("step %d of playbook %s is now %q, run %s had %q: the playbook changed since the run, so the run cannot be resumed safely: %w", i+1, plan.File, s.Name, r.Meta.RunID, r.Meta.Steps[i].Name, errspkg.ErrBadInput)
		}
	}
	return nil
}

// UndoOrder lists the seq numbers of the run's undo actions in the order
// an undo run replays them (latest first); see UndoPlan.
func (r *RunRecord) UndoOrder() []int {
	out := make([]int, 0, len(r.Undos))
	for i := len(r.Undos) - 1; i >= 0; i-- {
		out = append(out, r.Undos[i].Seq)
	}
	return out
}

// ReadRun reads the journal of one run.
func ReadRun(stateDir, runID string) (*RunRecord, error) {
	if err := checkRunID(runID); err != nil {
		return nil, err
	}
	dir := RunDir(stateDir, runID)
	if _, err := os.Stat(filepath.Join(dir, journalFile)); err != nil {
		return nil, fmt.Errorf("no journal for run %s in %s: %w (see `caretaker runs`, or give --state-dir)", runID, filepath.Join(stateDir, runsDir), errspkg.ErrBadInput)
	}
	return readRun(dir, true)
}

// ListRuns reads every journal under stateDir, newest first. Journals
// that cannot be read are returned as errors beside the runs that can.
func ListRuns(stateDir string) ([]*RunRecord, error) {
	entries, err := os.ReadDir(filepath.Join(stateDir, runsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	var out []*RunRecord
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(stateDir, runsDir, e.Name())
		if _, err := os.Stat(filepath.Join(dir, journalFile)); err != nil {
			continue // created but never started, or being created now
		}
		rec, err := readRun(dir, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Meta.Started.After(out[b].Meta.Started) })
	return out, errors.Join(errs...)
}

func countLines(data []byte) int {
	n := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		n++
	}
	return n
}

func nodeOrder(nodes []runner.NodeInfo, name string) int {
	for i, n := range nodes {
		if n.Name == name {
			return i
		}
	}
	return len(nodes)
}

// runLocked reports whether a process holds the run's lock.
func runLocked(dir string) bool {
	l := flock.New(filepath.Join(dir, runLockFile), flock.SetFlag(os.O_RDONLY), flock.SetPermissions(0o600))
	ok, err := l.TryRLock()
	if err != nil {
		return false // no lock file: nobody holds it
	}
	if ok {
		l.Unlock()
		return false
	}
	return true
}

// UndoRun is the run's recorded undo actions, for UndoPlan.
func (r *RunRecord) UndoRun() runner.UndoRun {
	u := runner.UndoRun{RunID: r.Meta.RunID, Playbook: r.Meta.Playbook, File: r.Path}
	for _, a := range r.Undos {
		name := a.StepName
		if name == "" {
			name = r.Meta.stepName(a.Step)
		}
		u.Actions = append(u.Actions, runner.UndoAction{Seq: a.Seq, Step: a.Step, StepName: name, Node: a.Node, Kind: a.Kind, Data: a.Data, At: a.At})
	}
	return u
}
