package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.starlark.net/starlark"

	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// Env is what a builtin sees of the run it is called from: the node the
// step runs on, its executor, check mode, and the run's services. It
// reaches builtins through the Starlark thread (WithEnv/EnvFrom).
type Env struct {
	// Ctx is cancelled when the run is aborted or the step times out.
	Ctx context.Context
	// Node and Exec are the node the step body runs for. In a plan-time
	// thread (loading a playbook) both are nil.
	Node *inventory.Node
	Exec transport.Executor
	// Check is true in check mode: mutating builtins report what they
	// would do and return without acting.
	Check bool
	// Step is the index and name of the running step.
	Step     int
	StepName string

	run *runState
	// changed is set by builtins that changed something.
	changed atomic.Bool
	wet     wetDepth
}

const envKey = "caretaker.env"

// WithEnv attaches env to a thread.
func WithEnv(th *starlark.Thread, env *Env) { th.SetLocal(envKey, env) }

// EnvFrom returns the Env of a thread, or an error naming the builtin when
// it is called outside a step (for example at a playbook's top level).
func EnvFrom(th *starlark.Thread, builtin string) (*Env, error) {
	env, _ := th.Local(envKey).(*Env)
	if env == nil || env.run == nil {
		return nil, fmt.Errorf("%s: can only be called inside a step body, not while the playbook is loading", builtin)
	}
	return env, nil
}

// RunNodes are the nodes of the run the thread belongs to: inside a step
// the run's nodes, while the playbook loads the nodes the run will have
// (the cluster's, narrowed by --limit), servers first, then agents, each
// in inventory order (the order serial steps take them in).
func RunNodes(th *starlark.Thread, builtin string) ([]*inventory.Node, error) {
	if env, _ := th.Local(envKey).(*Env); env != nil && env.run != nil {
		return env.Nodes(), nil
	}
	if l, _ := th.Local(planKey).(*loader); l != nil && l.opts.Cluster != nil {
		return l.limitNodes()
	}
	return nil, fmt.Errorf("%s: can only be called in a playbook (while it loads or in a step body)", builtin)
}

// MarkChanged records that the current step changed the node.
func (e *Env) MarkChanged() { e.changed.Store(true) }

// Changed reports whether MarkChanged was called.
func (e *Env) Changed() bool { return e.changed.Load() }

// Emit sends an event of the run.
func (e *Env) Emit(ev Event) { e.run.emit(ev) }

// Output emits one line of output for the current step and node.
func (e *Env) Output(stream, text string) {
	e.run.emit(OutputLine{Step: e.Step, Node: e.nodeName(), Stream: stream, Text: text, At: time.Now()})
}

// Note adds a line to the run summary.
func (e *Env) Note(text string) {
	e.run.addNote(text)
	e.run.emit(Note{Node: e.nodeName(), Text: text, At: time.Now()})
}

func (e *Env) nodeName() string {
	if e.Node == nil {
		return ""
	}
	return e.Node.Name
}

// Wet runs fn unless in check mode; in check mode it emits "would <what>"
// and returns nil. Every mutating builtin goes through Wet. It also refuses
// to start new work once the operator asked the run to stop.
//
// Once fn runs, a graceful stop waits for it: CheckStop lets the commands
// fn needs through (a restart that was issued is waited for), so a stopped
// run leaves each builtin's change whole. What fn did is remembered for
// the summary of a run that does not end ok (RunDone.Left).
func (e *Env) Wet(what string, fn func() error) error {
	if err := e.CheckStop(); err != nil {
		return err
	}
	if e.Check {
		e.Output(StreamCheck, "would "+what)
		return nil
	}
	e.wet.n.Add(1)
	err := fn()
	if e.wet.n.Add(-1) > 0 {
		return err // part of an outer change, which is what the summary names
	}
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		what += " (failed: " + first + ")"
	}
	e.run.left.change(e.Step, e.nodeName(), what)
	return err
}

// CheckStop returns ErrAborted once the run was asked to stop; builtins call
// it before starting a command so a graceful stop lets running commands
// finish but starts none (except inside a change already under way, see
// Wet).
func (e *Env) CheckStop() error {
	if e.run.stopping.Load() && e.wet.n.Load() == 0 {
		return fmt.Errorf("not starting new work: %w", errspkg.ErrAborted)
	}
	if err := e.Ctx.Err(); err != nil {
		return err
	}
	return nil
}

// Executor returns the executor of another node of the run's cluster,
// connecting on first use (one connection per node, shared by all steps).
func (e *Env) Executor(ctx context.Context, n *inventory.Node) (transport.Executor, error) {
	return e.run.pool.Get(ctx, n)
}

// Cluster is the cluster the run targets.
func (e *Env) Cluster() *inventory.Cluster { return e.run.cluster }

// Nodes are the nodes taking part in the run (after --limit).
func (e *Env) Nodes() []*inventory.Node { return e.run.nodes }

// RunID identifies the run.
func (e *Env) RunID() string { return e.run.opts.RunID }

// StateDir is the controller-side state directory of caretaker.
func (e *Env) StateDir() string { return e.run.opts.StateDir }

// Confirm asks the operator a yes/no question through the run's Prompter.
func (e *Env) Confirm(question string, def, destructive bool) (bool, error) {
	return e.run.confirm(e, question, def, destructive)
}

// Shared returns a value published by an earlier step with Share.
func (e *Env) Shared(key string) (starlark.Value, bool) {
	e.run.mu.Lock()
	defer e.run.mu.Unlock()
	v, ok := e.run.shared[key]
	return v, ok
}

// Share publishes a frozen value for later steps (and other nodes). A
// journal that implements ShareRecorder keeps it, so a resumed run sees
// the values of the steps it skips.
func (e *Env) Share(key string, v starlark.Value) {
	v.Freeze()
	e.run.mu.Lock()
	e.run.shared[key] = v
	e.run.mu.Unlock()
	if sr, ok := e.run.opts.Journal.(ShareRecorder); ok {
		sr.RecordShare(e.Step, e.nodeName(), key, v)
	}
}

// ShareRecorder is implemented by journals that keep shared values
// (FileJournal); RunOptions.Shared gives them back to a resumed run.
type ShareRecorder interface {
	RecordShare(step int, node, key string, v starlark.Value)
}

// Undo records an undo action before a change is made; the journal keeps it
// so `caretaker undo` can replay it. Kind names the builtin that can undo
// (e.g. "k3s.restore_server") and Data is its JSON argument.
func (e *Env) Undo(kind string, data []byte) error {
	if e.run.opts.Journal == nil {
		return nil
	}
	if err := e.run.opts.Journal.RecordUndo(e.Ctx, UndoRecord{Step: e.Step, Node: e.nodeName(), Kind: kind, Data: data, At: time.Now()}); err != nil {
		return err
	}
	e.run.mu.Lock()
	e.run.recorded = append(e.run.recorded, fmt.Sprintf("%s: %s (step %s)", e.nodeName(), kind, e.StepName))
	e.run.mu.Unlock()
	e.run.left.undo(e.nodeName(), kind, data)
	return nil
}

// UndoRecord is one recorded undo action.
type UndoRecord struct {
	Step int       `json:"step"`
	Node string    `json:"node"`
	Kind string    `json:"kind"`
	Data []byte    `json:"data"`
	At   time.Time `json:"at"`
}

// Journal persists a run as it goes; RecordUndo must be durable (synced)
// before it returns, since the change it protects follows right after.
type Journal interface {
	RecordUndo(ctx context.Context, u UndoRecord) error
}

// Pool keeps one executor per node, connecting on first use.
type Pool struct {
	Connect func(ctx context.Context, n *inventory.Node) (transport.Executor, error)

	mu    sync.Mutex
	execs map[string]*poolEntry
}

type poolEntry struct {
	mu   sync.Mutex
	done bool
	exec transport.Executor
	err  error
}

// NewPool returns a pool that connects with connect.
func NewPool(connect func(ctx context.Context, n *inventory.Node) (transport.Executor, error)) *Pool {
	return &Pool{Connect: connect, execs: map[string]*poolEntry{}}
}

// Get returns the node's executor, connecting on first use; callers for
// the same node wait for one dial. A failed connection is remembered for
// the run (an unreachable node is not retried on every call), except when
// it failed only because the caller's ctx ended (a step's timeout, an
// abort): the next caller dials again.
func (p *Pool) Get(ctx context.Context, n *inventory.Node) (transport.Executor, error) {
	p.mu.Lock()
	key := n.Cluster + "/" + n.Name
	e := p.execs[key]
	if e == nil {
		e = &poolEntry{}
		p.execs[key] = e
	}
	p.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done {
		return e.exec, e.err
	}
	exec, err := p.Connect(ctx, n)
	if err != nil && ctx.Err() != nil {
		return nil, err // not remembered: this caller's ctx ended
	}
	e.exec, e.err, e.done = exec, err, true
	return exec, err
}

// Close closes every executor of the pool.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, e := range p.execs {
		if e.exec != nil {
			errs = append(errs, e.exec.Close())
		}
	}
	p.execs = map[string]*poolEntry{}
	return errors.Join(errs...)
}
