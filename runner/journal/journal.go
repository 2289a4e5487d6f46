package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"

	"github.com/caretaker/caretaker/runner"
	errspkg "github.com/caretaker/caretaker/runner/errs"
)

// The journal of a run lives in <state dir>/runs/<run ID>/:
//
//	journal.jsonl  one JSON object per line, appended and fsynced as the
//	               run goes (see JournalEntry); 0600
//	lock           flock held by the process writing the journal, so a
//	               reader can tell a running run from a killed one
//
// The first entry ("run") carries the run's header: how to load the same
// plan again (playbook, inventory, cluster, parameters) and the plan
// itself. Every attempt (the first run, then each `caretaker resume`)
// appends "attempt", then "step_started", "undo", "step_done" and "note"
// entries, and "run_done" when it ends. A process killed with -9 leaves
// no "run_done": its run reads back as "interrupted".

const (
	journalFile = "journal.jsonl"
	runLockFile = "lock"
	runsDir     = "runs"
)

// Run states as `caretaker runs` shows them. A finished attempt has the
// status of its RunDone ("ok", "failed", "aborted").
const (
	RunStateRunning     = "running"     // a process is writing the journal now
	RunStateInterrupted = "interrupted" // the process died without finishing (kill -9, crash, power)
)

// RunMeta is the header of a journal: what ran, against what, and how to
// load the same plan again for `caretaker resume`.
type RunMeta struct {
	RunID string `json:"run_id"`
	// Playbook is the plan's display name; PlaybookRef is what resolves it
	// again: a shipped playbook's name or an absolute .star path.
	Playbook    string `json:"playbook"`
	PlaybookRef string `json:"playbook_ref,omitempty"`
	// Inventory is the absolute path of the inventory file.
	Inventory string   `json:"inventory,omitempty"`
	Cluster   string   `json:"cluster"`
	Limit     string   `json:"limit,omitempty"`
	LibDirs   []string `json:"lib_dirs,omitempty"`
	// Params are the -p key=value pairs as given; ParamValues every
	// parameter's effective value (for display).
	Params      map[string]string `json:"params,omitempty"`
	ParamValues map[string]string `json:"param_values,omitempty"`
	Check       bool              `json:"check,omitempty"`
	// Sources are the sha256 of the playbook and its modules at the start
	// (Plan.Sources).
	Sources map[string]string `json:"sources,omitempty"`
	// UndoOf is set on the journal of an undo run: the run it undoes, and
	// UndoSeqs the undo actions of that run, one per step, in step order.
	UndoOf   string `json:"undo_of,omitempty"`
	UndoSeqs []int  `json:"undo_seqs,omitempty"`
	// Steps and Nodes are the plan (filled from RunStarted).
	Steps []runner.StepInfo `json:"steps,omitempty"`
	Nodes []runner.NodeInfo `json:"nodes,omitempty"`
	// Who started it.
	User    string    `json:"user,omitempty"`
	Host    string    `json:"host,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
}

func (m *RunMeta) stepName(i int) string {
	if i >= 0 && i < len(m.Steps) {
		return m.Steps[i].Name
	}
	return fmt.Sprintf("#%d", i)
}

// Entry is one line of journal.jsonl. Type says which fields are
// set: "run" (Meta), "attempt", "step_started" and "step_done" (Step,
// StepName, Node; Status, Error, Reason and Duration for step_done),
// "undo" (Seq, Step, Node, Kind, Data), "share" (Kind is the key, Data
// the value, see journal_values.go), "note" (Node, Text), "run_done"
// (Status, Error, Counts, Duration).
type Entry struct {
	Type    string    `json:"type"`
	At      time.Time `json:"at"`
	Attempt int       `json:"attempt"`
	Meta    *RunMeta  `json:"meta,omitempty"`

	Step     int    `json:"step"`
	StepName string `json:"step_name,omitempty"`
	Node     string `json:"node,omitempty"`
	Status   string `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
	Reason   string `json:"reason,omitempty"`

	Seq  int             `json:"seq,omitempty"`
	Kind string          `json:"kind,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	// DataB64 holds undo data that is not valid JSON.
	DataB64 []byte `json:"data_b64,omitempty"`

	Text     string                `json:"text,omitempty"`
	Counts   map[runner.Status]int `json:"counts,omitempty"`
	Duration time.Duration         `json:"duration_ns,omitempty"`
	// Params, on an "attempt" entry, are the -p pairs that attempt ran
	// with when `resume -p` corrected them; later resumes use them.
	Params map[string]string `json:"params,omitempty"`
}

// File writes the journal of one run. It is both the run's Journal
// (undo records) and a Sink (put it first in a MultiSink): every entry is
// written and fsynced before Emit or RecordUndo returns, so the runner
// moves on only once the entry is on disk. It holds the run's lock file
// until Close.
type File struct {
	mu      sync.Mutex
	dir     string
	path    string
	meta    RunMeta
	attempt int
	seq     int
	f       *os.File
	lock    *flock.Flock
	started bool // the header (or the attempt entry) is written
	resumed bool
	err     error
	closed  bool
	// newParams are the corrected -p pairs of a resumed attempt (nil: the
	// journaled ones).
	newParams map[string]string

	// Group commit: entries are written under mu and made durable by
	// flush, where one fsync covers every entry written before it, so
	// nodes finishing at once share a sync instead of queueing for one
	// each. Every Emit and RecordUndo still returns only once its entry
	// is on disk.
	syncMu  sync.Mutex
	written uint64 // entries written (under mu)
	synced  uint64 // entries known durable (under syncMu)
}

// RunDir is the directory of a run's journal.
func RunDir(stateDir, runID string) string { return filepath.Join(stateDir, runsDir, runID) }

func checkRunID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, `/\`) || strings.HasPrefix(id, ".") {
		return fmt.Errorf("run ID %q is not valid (see `caretaker runs`): %w", id, errspkg.ErrBadInput)
	}
	return nil
}

// NewRunMeta fills the who-started-it fields of a header: the user, the
// host and the process ID.
func NewRunMeta(runID, playbook, cluster string) RunMeta {
	m := RunMeta{RunID: runID, Playbook: playbook, Cluster: cluster, PID: os.Getpid(), Started: time.Now()}
	m.User, m.Host = runner.Operator()
	return m
}

// Create starts the journal of a new run under stateDir and takes
// its lock. Nothing is written until the run starts (the RunStarted
// event): a run the operator declines at the plan screen leaves no
// journal once Close removes the empty directory.
func Create(stateDir string, meta RunMeta) (*File, error) {
	if err := checkRunID(meta.RunID); err != nil {
		return nil, err
	}
	dir := RunDir(stateDir, meta.RunID)
	if _, err := os.Stat(filepath.Join(dir, journalFile)); err == nil {
		return nil, fmt.Errorf("journal %s already exists: run IDs must be unique", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the journal directory: %w (is --state-dir writable?)", err)
	}
	j := &File{dir: dir, path: filepath.Join(dir, journalFile), meta: meta, attempt: 1}
	if err := j.takeLock(); err != nil {
		return nil, err
	}
	return j, nil
}

// Resume reopens the journal of an earlier run to append a new
// attempt (`caretaker resume`, or an undo run continuing). It takes the
// run's lock, so it fails with ErrLocked while another process is still
// writing that run.
func Resume(stateDir, runID string) (*File, *RunRecord, error) {
	if err := checkRunID(runID); err != nil {
		return nil, nil, err
	}
	dir := RunDir(stateDir, runID)
	if _, err := os.Stat(filepath.Join(dir, journalFile)); err != nil {
		return nil, nil, fmt.Errorf("no journal for run %s in %s: %w (see `caretaker runs`, or give --state-dir)", runID, filepath.Join(stateDir, runsDir), errspkg.ErrBadInput)
	}
	j := &File{dir: dir, path: filepath.Join(dir, journalFile), resumed: true}
	if err := j.takeLock(); err != nil {
		return nil, nil, err
	}
	rec, err := readRun(dir, false)
	if err != nil {
		j.lock.Unlock()
		return nil, nil, err
	}
	j.meta = rec.Meta
	j.attempt = rec.Attempts + 1
	for _, u := range rec.Undos {
		j.seq = max(j.seq, u.Seq)
	}
	return j, rec, nil
}

func (j *File) takeLock() error {
	j.lock = flock.New(filepath.Join(j.dir, runLockFile), flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o600))
	// A short wait covers `caretaker runs` probing the lock just now.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	ok, err := j.lock.TryLockContext(ctx, 25*time.Millisecond)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("lock the journal %s: %w", j.dir, err)
	}
	if !ok {
		return fmt.Errorf("run %s is in progress in another caretaker process (its journal %s is locked); wait for it to end or stop it: %w", filepath.Base(j.dir), j.dir, errspkg.ErrLocked)
	}
	return nil
}

// LockRun takes the lock of a run's journal without writing to it: `caretaker
// undo` holds it while it undoes the run so that no resume runs it at the
// same time. It fails with ErrLocked while the run is in progress.
func LockRun(stateDir, runID string) (unlock func(), err error) {
	if err := checkRunID(runID); err != nil {
		return nil, err
	}
	dir := RunDir(stateDir, runID)
	if _, err := os.Stat(filepath.Join(dir, journalFile)); err != nil {
		return nil, fmt.Errorf("no journal for run %s in %s: %w (see `caretaker runs`, or give --state-dir)", runID, filepath.Join(stateDir, runsDir), errspkg.ErrBadInput)
	}
	j := &File{dir: dir}
	if err := j.takeLock(); err != nil {
		return nil, err
	}
	return func() { j.lock.Unlock() }, nil
}

// RunID is the run the journal belongs to.
func (j *File) RunID() string { return j.meta.RunID }

// Path is the journal file.
func (j *File) Path() string { return j.path }

// Dir is the run's directory in the state directory.
func (j *File) Dir() string { return j.dir }

// Attempt is the attempt this journal writes (1 for a new run).
func (j *File) Attempt() int { return j.attempt }

// Err is the first error writing the journal, if any. A run whose journal
// cannot be written must not start another step (see BeforeStep).
func (j *File) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// BeforeStep refuses to start a step once the journal could not be
// written: without a journal the run could neither be resumed nor undone.
func (j *File) BeforeStep(*runner.Step) error {
	if err := j.Err(); err != nil {
		return fmt.Errorf("journal %s cannot be written, not starting another step: %w", j.path, err)
	}
	return nil
}

// Emit records the events that matter for resume and undo: run start,
// step start and result, notes and the run's end. Output lines are not
// journaled (the terminal view keeps a log of them).
func (j *File) Emit(ev runner.Event) {
	switch ev.(type) {
	case runner.RunStarted, runner.StepStarted, runner.StepDone, runner.Note, runner.RunDone:
	default:
		return
	}
	j.mu.Lock()
	j.emitLocked(ev)
	j.mu.Unlock()
	j.flush()
}

func (j *File) emitLocked(ev runner.Event) {
	switch e := ev.(type) {
	case runner.RunStarted:
		if !j.resumed {
			j.meta.Steps, j.meta.Nodes, j.meta.ParamValues = e.Steps, e.Nodes, e.Params
			if j.meta.Cluster == "" {
				j.meta.Cluster = e.Cluster
			}
			if j.meta.Playbook == "" {
				j.meta.Playbook = e.Playbook
			}
			j.meta.Check = e.Check
			if !e.At.IsZero() {
				j.meta.Started = e.At
			}
		}
		j.ensureStartedLocked()
	case runner.StepStarted:
		j.appendLocked(Entry{Type: "step_started", At: e.At, Step: e.Step, StepName: e.StepName, Node: e.Node})
	case runner.StepDone:
		j.appendLocked(Entry{Type: "step_done", At: e.At, Step: e.Step, StepName: e.StepName, Node: e.Node, Status: string(e.Status), Error: e.Error, Reason: e.Reason, Duration: e.Duration})
	case runner.Note:
		j.appendLocked(Entry{Type: "note", At: e.At, Node: e.Node, Text: e.Text})
	case runner.RunDone:
		j.appendLocked(Entry{Type: "run_done", At: e.At, Status: e.Status, Error: e.Error, Counts: e.Counts, Duration: e.Duration})
	}
}

// RecordUndo appends an undo action and syncs it before returning.
func (j *File) RecordUndo(ctx context.Context, u runner.UndoRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	j.mu.Lock()
	j.seq++
	e := Entry{Type: "undo", At: u.At, Seq: j.seq, Step: u.Step, StepName: j.meta.stepName(u.Step), Node: u.Node, Kind: u.Kind}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	if json.Valid(u.Data) {
		e.Data = compactJSON(u.Data)
	} else {
		e.DataB64 = u.Data
	}
	j.appendLocked(e)
	j.mu.Unlock()
	j.flush()
	if err := j.Err(); err != nil {
		return fmt.Errorf("record undo action %s for %s in journal %s: %w", u.Kind, u.Node, j.path, err)
	}
	return nil
}

// flush makes every entry written so far durable. Callers that arrive while
// a sync runs wait for it and then find their entry already covered, or
// sync once for all of them.
func (j *File) flush() {
	j.mu.Lock()
	target, f := j.written, j.f
	j.mu.Unlock()
	if f == nil {
		return
	}
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced >= target {
		return
	}
	j.mu.Lock()
	upto := j.written
	closed := j.closed
	j.mu.Unlock()
	if closed {
		return // Close synced the file
	}
	if err := f.Sync(); err != nil {
		j.mu.Lock()
		if j.err == nil {
			j.err = fmt.Errorf("sync journal: %w", err)
		}
		j.mu.Unlock()
		return
	}
	j.synced = upto
}

func compactJSON(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return append(json.RawMessage(nil), b...)
	}
	return buf.Bytes()
}

// ensureStartedLocked writes the header (a new run) or the attempt entry
// (a resumed run) once.
func (j *File) ensureStartedLocked() {
	if j.started || j.err != nil {
		return
	}
	j.started = true
	if j.f == nil {
		f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			j.err = fmt.Errorf("open journal: %w", err)
			return
		}
		j.f = f
	}
	now := time.Now()
	if !j.resumed {
		meta := j.meta
		j.writeLocked(Entry{Type: "run", At: now, Attempt: j.attempt, Meta: &meta})
		syncDir(j.dir)
	}
	j.writeLocked(Entry{Type: "attempt", At: now, Attempt: j.attempt, Text: fmt.Sprintf("pid %d", os.Getpid()), Params: j.newParams})
}

// CorrectParams records, before a resumed run starts, the -p pairs it runs
// with instead of those journaled (`resume -p`); later resumes use them.
func (j *File) CorrectParams(params map[string]string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.newParams = params
	j.meta.Params = params
}

func (j *File) appendLocked(e Entry) {
	if j.closed {
		return
	}
	j.ensureStartedLocked()
	e.Attempt = j.attempt
	j.writeLocked(e)
}

func (j *File) writeLocked(e Entry) {
	if j.err != nil || j.f == nil {
		return
	}
	line, err := json.Marshal(e)
	if err != nil {
		j.err = fmt.Errorf("encode journal entry %s: %w", e.Type, err)
		return
	}
	if _, err := j.f.Write(append(line, '\n')); err != nil {
		j.err = fmt.Errorf("write journal: %w", err)
		return
	}
	j.written++
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: the file itself was synced before its rename
		d.Close()
	}
}

// Close closes the journal file and releases the run's lock. A new run
// that never started leaves nothing behind.
func (j *File) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	var errs []error
	if j.f != nil {
		errs = append(errs, j.f.Sync(), j.f.Close())
	} else if !j.resumed {
		os.Remove(filepath.Join(j.dir, runLockFile))
		os.Remove(j.dir)
	}
	if j.lock != nil {
		errs = append(errs, j.lock.Unlock())
	}
	return errors.Join(errs...)
}
