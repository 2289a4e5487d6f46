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

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// FailurePolicy says what a run does when a step fails on a node.
type FailurePolicy struct {
	// Continue keeps going after failures: nodes that failed are left out
	// of later steps, other nodes carry on.
	Continue bool
	// MaxFailed, when > 0, continues until more than MaxFailed nodes have
	// failed, then stops (implies Continue).
	MaxFailed int
}

// RunOptions configure the execution of a plan.
type RunOptions struct {
	RunID    string
	StateDir string
	Check    bool
	// AutoYes answers every confirm() with yes (--yes).
	AutoYes bool
	Sink    Sink
	// Prompter answers confirm() when AutoYes is false; nil means nobody
	// can answer and confirm() fails with ErrNeedsConfirm.
	Prompter Prompter
	// Connect opens a node's executor (DialSSH in production). Ignored
	// when Pool is set.
	Connect func(ctx context.Context, n *inventory.Node) (transport.Executor, error)
	// Pool, when set, is used (and not closed) instead of a new pool.
	Pool    *Pool
	Failure FailurePolicy
	// MaxSteps bounds Starlark execution steps per step body; 0 = 100M.
	MaxSteps uint64
	// StepTimeout applies to steps that declare none; 0 = no limit.
	StepTimeout time.Duration
	// NodeValue makes the Starlark value a step body receives (builtins).
	NodeValue func(env *Env) starlark.Value
	// Journal records undo actions durably (optional).
	Journal Journal
	// Done reports a step already completed by an earlier run of the same
	// journal (resume): it is skipped with reason "done in an earlier run".
	Done func(step int, node string) bool
	// BeforeStep is called before each step starts; an error stops the run
	// cleanly (used for maintenance windows). Optional.
	BeforeStep func(step *Step) error
	// Shared seeds the values share() published in an earlier run of the
	// same journal (resume), so skipped steps' values stay available.
	Shared map[string]starlark.Value
}

// Run executes a plan. It implements Controller so a live view can pause
// or stop it.
type Run struct {
	plan *Plan
	opts RunOptions
	st   *runState
}

type runState struct {
	opts    RunOptions
	cluster *inventory.Cluster
	nodes   []*inventory.Node
	params  []*Param
	pool    *Pool

	mu       sync.Mutex
	shared   map[string]starlark.Value
	notes    []string
	secrets  []string
	results  map[string]starlark.Value
	recorded []string // "node: undo kind (step name)" of this attempt
	left     leftLog
	promptMu sync.Mutex
	promptID int

	stopping atomic.Bool
	hard     chan struct{} // closed by a hard stop
	hardOnce sync.Once

	pauseMu sync.Mutex
	paused  bool
	resume  chan struct{}
}

// NewRun prepares the execution of plan.
func NewRun(plan *Plan, opts RunOptions) *Run {
	if opts.Sink == nil {
		opts.Sink = SinkFunc(func(Event) {})
	}
	if opts.RunID == "" {
		opts.RunID = NewRunID(plan.Playbook)
	}
	st := &runState{opts: opts, cluster: plan.Cluster, nodes: plan.Nodes, params: plan.Params, shared: map[string]starlark.Value{}, results: map[string]starlark.Value{}, hard: make(chan struct{})}
	for k, v := range opts.Shared {
		v.Freeze()
		st.shared[k] = v
	}
	st.pool = opts.Pool
	if st.pool == nil {
		st.pool = NewPool(opts.Connect)
	}
	return &Run{plan: plan, opts: opts, st: st}
}

// NewRunID returns a sortable, unique run ID such as
// "20261127-153012-rotate-ca-4f2a".
func NewRunID(playbook string) string {
	var b [2]byte
	now := time.Now()
	b[0], b[1] = byte(now.UnixNano()>>8), byte(now.UnixNano()>>16)
	return fmt.Sprintf("%s-%s-%02x%02x", now.UTC().Format("20060102-150405"), playbook, b[0], b[1])
}

// ID is the run's ID.
func (r *Run) ID() string { return r.opts.RunID }

// Pause stops the run before its next step; running commands finish.
func (r *Run) Pause() {
	r.st.pauseMu.Lock()
	defer r.st.pauseMu.Unlock()
	if !r.st.paused {
		r.st.paused = true
		r.st.resume = make(chan struct{})
		r.st.emit(RunPaused{At: time.Now()})
	}
}

// Resume continues a paused run.
func (r *Run) Resume() {
	r.st.pauseMu.Lock()
	defer r.st.pauseMu.Unlock()
	if r.st.paused {
		r.st.paused = false
		close(r.st.resume)
		r.st.emit(RunResumed{At: time.Now()})
	}
}

// Stop asks the run to stop. The first call lets running commands finish
// and starts nothing new; a second call, or hard, cancels them.
func (r *Run) Stop(hard bool) {
	if r.st.stopping.Swap(true) || hard {
		r.st.hardOnce.Do(func() { close(r.st.hard) })
	}
	r.Resume()
}

func (st *runState) waitIfPaused(ctx context.Context) error {
	st.pauseMu.Lock()
	ch := st.resume
	paused := st.paused
	st.pauseMu.Unlock()
	if !paused {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Redact registers a secret (a token, a key) that must never appear in an
// event: every occurrence in output, errors and notes becomes "<redacted>".
func (e *Env) Redact(secret string) {
	if len(secret) < 4 {
		return
	}
	e.run.mu.Lock()
	defer e.run.mu.Unlock()
	for _, s := range e.run.secrets {
		if s == secret {
			return
		}
	}
	e.run.secrets = append(e.run.secrets, secret)
}

func (st *runState) redact(s string) string {
	st.mu.Lock()
	secrets := st.secrets
	st.mu.Unlock()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "<redacted>")
		}
	}
	return s
}

func (st *runState) emit(ev Event) {
	st.left.event(ev) // step starts and results, for RunDone.Left
	switch e := ev.(type) {
	case OutputLine:
		e.Text = st.redact(e.Text)
		ev = e
	case StepDone:
		e.Error, e.Detail = st.redact(e.Error), st.redact(e.Detail)
		ev = e
	case Note:
		e.Text = st.redact(e.Text)
		ev = e
	}
	st.opts.Sink.Emit(ev)
}

func (st *runState) addNote(text string) {
	text = st.redact(text)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.notes = append(st.notes, text)
}

func (st *runState) confirm(env *Env, question string, def, destructive bool) (bool, error) {
	if env.Check {
		// A rehearsal asks nobody: it follows the "yes" path, which is
		// the one that changes things, so that it shows them.
		env.Output(StreamCheck, "would ask: "+question+" (check mode goes on as if answered yes)")
		return true, nil
	}
	st.promptMu.Lock()
	defer st.promptMu.Unlock()
	st.promptID++
	p := Prompt{ID: st.promptID, Step: env.Step, Node: env.nodeName(), Question: question, Default: def, Destructive: destructive, At: time.Now()}
	st.emit(p)
	if st.opts.AutoYes {
		st.emit(PromptAnswered{ID: p.ID, Answer: true, By: "--yes", At: time.Now()})
		return true, nil
	}
	if st.opts.Prompter == nil {
		return false, fmt.Errorf("confirm(%q): %w", question, errs.ErrNeedsConfirm)
	}
	ans, err := st.opts.Prompter.Confirm(env.Ctx, p)
	if err != nil {
		return false, err
	}
	st.emit(PromptAnswered{ID: p.ID, Answer: ans, By: "operator", At: time.Now()})
	return ans, nil
}

// Result returns what a step's body returned on a node (None when it
// returned nothing or has not run).
func (e *Env) Result(step, node string) starlark.Value {
	e.run.mu.Lock()
	defer e.run.mu.Unlock()
	if v, ok := e.run.results[step+"\x00"+node]; ok {
		return v
	}
	return starlark.None
}

// startedEvent is the run's first event: the plan as the operator sees it.
func (r *Run) startedEvent(start time.Time) RunStarted {
	plan := r.plan
	started := RunStarted{RunID: r.opts.RunID, Playbook: plan.Playbook, Cluster: plan.Cluster.Name, Check: r.opts.Check, Params: plan.ParamValues(), At: start}
	for _, s := range plan.Steps {
		started.Steps = append(started.Steps, s.Info())
	}
	for _, n := range plan.Nodes {
		started.Nodes = append(started.Nodes, NodeInfo{Name: n.Name, Role: n.Role, Address: n.Address, Groups: n.Groups})
	}
	return started
}

// runOutcome is the run's status ("ok", "failed", "aborted") and error
// from the error that ended the step loop and the number of failures.
func runOutcome(runErr error, failures int) (string, error) {
	switch {
	case errors.Is(runErr, errs.ErrAborted) || errors.Is(runErr, context.Canceled):
		if !errors.Is(runErr, errs.ErrAborted) {
			// Keep a reason that already wraps ErrAborted (a closing
			// maintenance window says which and when it reopens).
			runErr = fmt.Errorf("%w", errs.ErrAborted)
		}
		return "aborted", runErr
	case runErr != nil || failures > 0:
		if runErr == nil {
			runErr = fmt.Errorf("%d step(s) failed", failures)
		}
		return "failed", runErr
	}
	return "ok", nil
}

// doneEvent is the run's last event: counts, failures, notes, what a
// stopped run left, and where its journal is.
func (r *Run) doneEvent(status string, runErr error, counts map[Status]int, failed []StepDone, start time.Time) RunDone {
	r.st.mu.Lock()
	notes := append([]string(nil), r.st.notes...)
	recorded := append([]string(nil), r.st.recorded...)
	r.st.mu.Unlock()
	done := RunDone{RunID: r.opts.RunID, Status: status, Counts: counts, Failed: failed, Notes: notes, StateDir: r.opts.StateDir, Duration: time.Since(start), At: time.Now(), Check: r.opts.Check}
	if status != "ok" {
		done.Recorded = recorded
		if !r.opts.Check {
			done.Left = r.nodesLeft()
		}
	}
	if runErr != nil {
		done.Error = r.st.redact(runErr.Error())
	}
	if jp, ok := r.opts.Journal.(interface{ Path() string }); ok {
		done.Journal = jp.Path()
	}
	return done
}

// Execute runs the plan to its end, or until it fails (per the failure
// policy) or is stopped. The returned RunDone is also the last event. The
// error is nil when every cell ended ok, changed or skipped.
func (r *Run) Execute(ctx context.Context) (RunDone, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-r.st.hard:
			cancel(fmt.Errorf("aborted by the operator: %w", errs.ErrAborted))
		case <-ctx.Done():
		}
	}()
	if r.opts.Pool == nil {
		defer r.st.pool.Close()
	}
	start := time.Now()
	plan := r.plan
	r.st.emit(r.startedEvent(start))

	counts := map[Status]int{}
	var failed []StepDone
	failedNodes := map[string]string{} // node -> step it failed in
	var runErr error
	var countMu sync.Mutex
	record := func(d StepDone) {
		countMu.Lock()
		defer countMu.Unlock()
		counts[d.Status]++
		if d.Status == StatusFailed {
			failed = append(failed, d)
			if _, ok := failedNodes[d.Node]; !ok {
				failedNodes[d.Node] = d.StepName
			}
		}
	}
	tooManyFailures := func() bool {
		countMu.Lock()
		defer countMu.Unlock()
		if len(failedNodes) == 0 {
			return false
		}
		if r.opts.Failure.MaxFailed > 0 {
			return len(failedNodes) > r.opts.Failure.MaxFailed
		}
		return !r.opts.Failure.Continue
	}

	for _, step := range plan.Steps {
		if err := r.st.waitIfPaused(ctx); err != nil {
			runErr = err
			break
		}
		if r.st.stopping.Load() || ctx.Err() != nil {
			runErr = errs.ErrAborted
			break
		}
		if r.opts.BeforeStep != nil {
			if err := r.opts.BeforeStep(step); err != nil {
				runErr = err
				break
			}
		}
		targets := step.Nodes
		if step.Once && len(targets) > 1 {
			targets = targets[:1]
		}
		r.runStep(ctx, step, targets, failedNodes, &countMu, record, tooManyFailures)
		if tooManyFailures() {
			runErr = fmt.Errorf("stopped after step %q failed", step.Name)
			break
		}
	}
	if r.st.stopping.Load() || ctx.Err() != nil {
		// Failures caused by the stop itself do not make the run "failed".
		runErr = errs.ErrAborted
	}
	status, runErr := runOutcome(runErr, len(failed))
	done := r.doneEvent(status, runErr, counts, failed, start)
	r.st.emit(done)
	return done, runErr
}

func (r *Run) runStep(ctx context.Context, step *Step, targets []*inventory.Node, failedNodes map[string]string, countMu *sync.Mutex, record func(StepDone), tooMany func() bool) {
	limit := step.Serial
	if limit <= 0 || limit > len(targets) {
		limit = len(targets)
	}
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	for _, n := range targets {
		countMu.Lock()
		failedIn, hasFailed := failedNodes[n.Name]
		countMu.Unlock()
		if hasFailed {
			d := StepDone{Step: step.Index, StepName: step.Name, Node: n.Name, Status: StatusSkipped, Reason: fmt.Sprintf("failed earlier in step %q", failedIn), At: time.Now()}
			record(d)
			r.st.emit(d)
			continue
		}
		if r.opts.Done != nil && r.opts.Done(step.Index, n.Name) {
			d := StepDone{Step: step.Index, StepName: step.Name, Node: n.Name, Status: StatusSkipped, Reason: "done in an earlier run", At: time.Now()}
			record(d)
			r.st.emit(d)
			continue
		}
		sem <- struct{}{}
		// With a serial limit, a failure stops the step before the next
		// node is touched (issue: a server that does not come back must
		// stop the rotation before the next server).
		if tooMany() || r.st.stopping.Load() || ctx.Err() != nil {
			<-sem
			break
		}
		if step.Serial > 0 {
			if err := r.st.waitIfPaused(ctx); err != nil {
				<-sem
				break
			}
		}
		wg.Add(1)
		go func(n *inventory.Node) {
			defer wg.Done()
			defer func() { <-sem }()
			d := r.runOne(ctx, step, n)
			record(d)
			r.st.emit(d)
		}(n)
	}
	wg.Wait()
}

// skipError is returned by skip(): the step ends as skipped, not failed.
type skipError struct{ reason string }

func (e *skipError) Error() string { return "skipped: " + e.reason }

// Skip returns the error a builtin returns to end the step as skipped.
func Skip(reason string) error { return &skipError{reason: reason} }

func (r *Run) runOne(ctx context.Context, step *Step, n *inventory.Node) StepDone {
	start := time.Now()
	r.st.emit(StepStarted{Step: step.Index, StepName: step.Name, Node: n.Name, At: start})
	done := StepDone{Step: step.Index, StepName: step.Name, Node: n.Name}
	sctx := ctx
	finish := func(status Status, err error) StepDone {
		done.Status = status
		done.Duration = time.Since(start)
		done.At = time.Now()
		if err != nil && status == StatusFailed {
			done.Kind = errs.Kind(err)
			if done.Kind == errs.KindOther && sctx.Err() != nil && errors.Is(context.Cause(sctx), context.DeadlineExceeded) {
				done.Kind = errs.KindTimeout
			}
			done.Error, done.Detail = describeError(err)
			// Say why the context ended (step timeout, abort) when the
			// error only says "context deadline exceeded".
			if sctx.Err() != nil {
				if c := context.Cause(sctx); c != nil && !strings.Contains(done.Error, c.Error()) {
					done.Error += " (" + c.Error() + ")"
				}
			}
			done.Error, done.Detail = r.st.redact(done.Error), r.st.redact(done.Detail)
		}
		return done
	}

	timeout := step.Timeout
	if timeout == 0 {
		timeout = r.opts.StepTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeoutCause(ctx, timeout, fmt.Errorf("step %q timed out after %s on %s", step.Name, timeout, n.Name))
		defer cancel()
	}
	exec, err := r.st.pool.Get(sctx, n)
	if err != nil {
		return finish(StatusFailed, err)
	}
	env := &Env{Ctx: sctx, Node: n, Exec: exec, Check: r.opts.Check, Step: step.Index, StepName: step.Name, run: r.st}
	th := &starlark.Thread{Name: step.Name + "@" + n.Name}
	WithEnv(th, env)
	max := r.opts.MaxSteps
	if max == 0 {
		max = 100_000_000
	}
	stoppedAt := limitSteps(th, max)
	th.Print = func(_ *starlark.Thread, msg string) {
		for _, line := range strings.Split(msg, "\n") {
			env.Output(StreamLog, line)
		}
	}
	stop := context.AfterFunc(sctx, func() {
		reason := "run aborted"
		if c := context.Cause(sctx); c != nil {
			reason = c.Error()
		}
		th.Cancel(reason)
	})
	defer stop()

	var v starlark.Value
	if step.Func != nil {
		err = step.Func(sctx, env)
	} else {
		var arg starlark.Value = starlark.String(n.Name)
		if r.opts.NodeValue != nil {
			arg = r.opts.NodeValue(env)
		}
		v, err = starlark.Call(th, step.Body, starlark.Tuple{arg}, nil)
		if err != nil && th.ExecutionSteps() >= max {
			err = fmt.Errorf("the body of step %q ran %d Starlark operations, the limit for one step on one node: an endless loop? (stopped at %s)", step.Name, max, stoppedAt(err))
		}
	}
	if err != nil {
		var se *skipError
		if errors.As(err, &se) {
			done.Reason = se.reason
			return finish(StatusSkipped, nil)
		}
		return finish(StatusFailed, err)
	}
	if v != nil && v != starlark.None {
		v.Freeze()
		r.st.mu.Lock()
		r.st.results[step.Name+"\x00"+n.Name] = v
		r.st.mu.Unlock()
		done.Result, done.ResultNote = r.st.encodeResult(v)
	}
	if env.Changed() {
		return finish(StatusChanged, nil)
	}
	return finish(StatusOK, nil)
}

// describeError splits an error into a one-line message and a detail: the
// Starlark backtrace with file:line:col of every frame.
func describeError(err error) (msg, detail string) {
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		return innermostPos(ee.CallStack) + firstLine(ee.Msg), ee.Backtrace()
	}
	msg = firstLine(err.Error())
	if msg != err.Error() {
		detail = err.Error()
	}
	return msg, detail
}

// innermostPos is "file:line:col: " of the innermost Starlark frame (not
// a builtin), where the playbook called what failed.
func innermostPos(stack starlark.CallStack) string {
	for i := len(stack) - 1; i >= 0; i-- {
		if stack[i].Pos.Filename() != "<builtin>" {
			return stack[i].Pos.String() + ": "
		}
	}
	return ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
