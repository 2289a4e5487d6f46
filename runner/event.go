package runner

import (
	"context"
	"encoding/json"
	"time"
)

// Status is the outcome of one step on one node.
type Status string

// The statuses a cell of the run grid can have. Pending and Running are only
// seen by live views; a StepDone carries one of the four final ones.
const (
	StatusPending Status = "pending"
	StatusRunning Status = "running"
	StatusOK      Status = "ok"
	StatusChanged Status = "changed"
	StatusSkipped Status = "skipped"
	StatusFailed  Status = "failed"
)

// Final reports whether s is one of ok, changed, skipped, failed.
func (s Status) Final() bool {
	return s == StatusOK || s == StatusChanged || s == StatusSkipped || s == StatusFailed
}

// Event is one thing that happened in a run. Events are plain, copyable
// values (no pointers into the runner), safe to send across goroutines and to
// encode as JSON; the TUI uses them directly as tea.Msg values.
type Event interface {
	// EventType is the "type" field of the JSON encoding, e.g. "step_done".
	EventType() string
}

// StepInfo describes one declared step of a plan.
type StepInfo struct {
	Index   int      `json:"index"`
	Name    string   `json:"name"`
	Nodes   []string `json:"nodes"`
	Serial  int      `json:"serial,omitempty"` // 0: all nodes at once
	Mutates bool     `json:"mutates"`          // the step declares that it changes nodes
	Once    bool     `json:"once,omitempty"`   // runs once, on the first node, not per node
	Pos     string   `json:"pos"`              // file:line:col of the declaration
	Doc     string   `json:"doc,omitempty"`
}

// NodeInfo describes a node taking part in a run.
type NodeInfo struct {
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	Address string   `json:"address"`
	Groups  []string `json:"groups,omitempty"`
}

// RunStarted is the first event of a run and carries the whole plan.
type RunStarted struct {
	RunID    string            `json:"run_id"`
	Playbook string            `json:"playbook"`
	Cluster  string            `json:"cluster"`
	Check    bool              `json:"check"`
	Params   map[string]string `json:"params,omitempty"`
	Steps    []StepInfo        `json:"steps"`
	Nodes    []NodeInfo        `json:"nodes"`
	At       time.Time         `json:"at"`
}

// Planned is what `caretaker plan -o json` prints: the plan a run would
// start with, without a run ID (nothing ran). At is when it was made.
type Planned struct {
	Playbook string            `json:"playbook"`
	Cluster  string            `json:"cluster"`
	Params   map[string]string `json:"params,omitempty"`
	Steps    []StepInfo        `json:"steps"`
	Nodes    []NodeInfo        `json:"nodes"`
	At       time.Time         `json:"at"`
}

// StepStarted says a step began on a node.
type StepStarted struct {
	Step     int       `json:"step"`
	StepName string    `json:"step_name"`
	Node     string    `json:"node"`
	At       time.Time `json:"at"`
}

// Output streams. Stdout and Stderr come from commands; Log from log(); Check
// from a mutating call in check mode ("would write ...").
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamLog    = "log"
	StreamCheck  = "check"
)

// OutputLine is one line of output of a step on a node. Lines never carry
// secrets: builtins redact tokens and keys before they reach an event.
type OutputLine struct {
	Step   int       `json:"step"`
	Node   string    `json:"node"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
	At     time.Time `json:"at"`
}

// StepDone says a step finished on a node.
type StepDone struct {
	Step     int    `json:"step"`
	StepName string `json:"step_name"`
	Node     string `json:"node"`
	Status   Status `json:"status"`
	Error    string `json:"error,omitempty"`  // one-line message when failed
	Kind     string `json:"kind,omitempty"`   // errs.Kind of the failure: needs-confirm, unreachable, timeout, ...
	Detail   string `json:"detail,omitempty"` // Starlark backtrace or longer text
	Reason   string `json:"reason,omitempty"` // why skipped
	// Result is the step body's return value as JSON (redacted, at most
	// MaxResultBytes); ResultNote says why a result is missing.
	Result     json.RawMessage `json:"result,omitempty"`
	ResultNote string          `json:"result_note,omitempty"`
	Duration   time.Duration   `json:"duration_ns"`
	At         time.Time       `json:"at"`
}

// Prompt says a playbook asks the operator a yes/no question. The answer comes
// back through the Prompter, not through an event.
type Prompt struct {
	ID          int       `json:"id"`
	Step        int       `json:"step"`
	Node        string    `json:"node"`
	Question    string    `json:"question"`
	Default     bool      `json:"default"`
	Destructive bool      `json:"destructive"`
	At          time.Time `json:"at"`
}

// PromptAnswered records the answer given to a Prompt.
type PromptAnswered struct {
	ID     int       `json:"id"`
	Answer bool      `json:"answer"`
	By     string    `json:"by"` // "operator", "--yes"
	At     time.Time `json:"at"`
}

// RunPaused and RunResumed report the operator pausing the run between steps.
type RunPaused struct {
	At time.Time `json:"at"`
}

// RunResumed follows a RunPaused.
type RunResumed struct {
	At time.Time `json:"at"`
}

// Note is a message for the operator that belongs in the run summary, for
// example where a backup went or what to refresh after a rotation.
type Note struct {
	Node string    `json:"node,omitempty"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// RunDone is the last event of a run.
type RunDone struct {
	RunID    string         `json:"run_id"`
	Status   string         `json:"status"` // "ok", "failed", "aborted"
	Counts   map[Status]int `json:"counts"`
	Failed   []StepDone     `json:"failed,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
	Error    string         `json:"error,omitempty"`
	Journal  string         `json:"journal,omitempty"`
	StateDir string         `json:"state_dir,omitempty"`
	// Check is true for a check-mode run (it changed nothing).
	Check bool `json:"check,omitempty"`
	// Recorded lists, when the run did not end ok, the changes this
	// attempt made with an undo record ("node: kind (step name)"): what a
	// stopped run may have left between before and after.
	Recorded []string `json:"recorded,omitempty"`
	// Left says, when a real run did not end ok, where this attempt left
	// each node and what resume does there (see NodeLeft).
	Left     []NodeLeft    `json:"left,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	At       time.Time     `json:"at"`
}

// EventType names the event in JSON output ("type").
func (RunStarted) EventType() string { return "run_started" }

// EventType names the event in JSON output ("type").
func (Planned) EventType() string { return "plan" }

// EventType names the event in JSON output ("type").
func (StepStarted) EventType() string { return "step_started" }

// EventType names the event in JSON output ("type").
func (OutputLine) EventType() string { return "output" }

// EventType names the event in JSON output ("type").
func (StepDone) EventType() string { return "step_done" }

// EventType names the event in JSON output ("type").
func (Prompt) EventType() string { return "prompt" }

// EventType names the event in JSON output ("type").
func (PromptAnswered) EventType() string { return "prompt_answered" }

// EventType names the event in JSON output ("type").
func (RunPaused) EventType() string { return "run_paused" }

// EventType names the event in JSON output ("type").
func (RunResumed) EventType() string { return "run_resumed" }

// EventType names the event in JSON output ("type").
func (Note) EventType() string { return "note" }

// EventType names the event in JSON output ("type").
func (RunDone) EventType() string { return "run_done" }

// Sink receives the events of a run. Emit must be safe for concurrent use
// and must not block for long: the runner calls it from step goroutines.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// Prompter answers confirm() questions. Confirm blocks until answered or ctx
// ends. Implementations: the TUI's modal, a terminal line prompt, and
// AutoYes for --yes; without any, confirm() fails with ErrNeedsConfirm.
type Prompter interface {
	Confirm(ctx context.Context, p Prompt) (bool, error)
}

// Controller lets a live view steer a running run.
type Controller interface {
	// Pause stops the run before its next step; running commands finish.
	Pause()
	// Resume continues a paused run.
	Resume()
	// Stop asks the run to stop: running commands finish, nothing new
	// starts. A second call, or hard=true, cancels running commands.
	Stop(hard bool)
}
