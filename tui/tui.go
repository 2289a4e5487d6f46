// Package tui is the live terminal view of a caretaker run: the plan before
// it starts, a node × step grid with each node's output while it runs,
// confirm() questions as modals, and a summary at the end. It is fed only by
// runner events (it imports runner for the event types and the Sink,
// Prompter and Controller interfaces) and steers the run through the
// Controller.
//
// A caller (cmd/caretaker) uses it like this:
//
//	p, err := tui.Start(ctx, tui.Options{Plan: plan, Confirm: !yes, Controller: ctl, ...})
//	start, err := p.WaitStart(ctx)      // operator pressed enter at the plan, or quit
//	if start { run(ctx, p.Sink(), p.Prompter()) }
//	summary, err := p.Wait()            // operator pressed q on the summary
//	fmt.Print(summary)
//
// The Sink and the Prompter are safe for concurrent use and never block the
// runner for long: events are queued and handed to the program at most once
// per frame. If the run ends without emitting a RunDone (for example it
// failed to take the lock), the caller should emit one itself so the summary
// says why, or call Quit. Nothing else should write to the terminal while
// the program runs.
//
// Keys: j/k or arrows move between nodes, h/l between steps; enter or tab
// focuses the output pane; / filters by name, role or status; f jumps to the
// next failed cell; p pauses before the next step; s saves the whole log;
// q or ctrl+c asks to abort (ctrl+c again: abort at once); ? shows help.
package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"

	"github.com/caretaker/caretaker/runner"
)

// ErrClosed is returned by the Prompter when the TUI ended before the
// question was answered.
var ErrClosed = errors.New("tui: closed before the question was answered")

// Options configure a TUI run.
type Options struct {
	Title      string            // shown in the header; defaults to Plan.Playbook
	Cluster    string            // defaults to Plan.Cluster
	Check      bool              // check mode: nothing is changed
	Plan       runner.RunStarted // shown before the run: steps × nodes, serial limits, mutating steps
	Confirm    bool              // show the plan and wait for enter (false with --yes)
	Controller runner.Controller // pause, resume and stop; if nil, aborting just closes the TUI
	LogPath    string            // default file name offered by 's' (save log)
	Input      io.Reader         // default os.Stdin
	Output     io.Writer         // default os.Stdout

	// Env replaces os.Environ() for colour detection (NO_COLOR); for tests.
	Env []string
	// ProgramOptions are added to the Bubble Tea program's options; for tests
	// (tea.WithWindowSize, tea.WithColorProfile, tea.WithoutSignals).
	ProgramOptions []tea.ProgramOption
}

// Program is a running TUI.
type Program struct {
	prog    *tea.Program
	pump    *pump
	started chan bool     // receives once: did the operator start the run
	done    chan struct{} // closed when the Bubble Tea program has exited
	model   *model
	err     error
}

// Start starts the Bubble Tea program on the terminal and returns at once.
// Cancelling ctx kills the program.
func Start(ctx context.Context, opts Options) (*Program, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tui: not started: %w", err)
	}
	p := &Program{
		pump:    newPump(),
		started: make(chan bool, 1),
		done:    make(chan struct{}),
	}
	var once sync.Once
	signal := func(v bool) { once.Do(func() { p.started <- v }) }
	m := newModel(ctx, opts, p.pump, signal)
	p.model = m

	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	popts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithEnvironment(env)}
	if noColor(env) {
		popts = append(popts, tea.WithColorProfile(colorprofile.ASCII))
	}
	if opts.Input != nil {
		popts = append(popts, tea.WithInput(opts.Input))
	}
	if opts.Output != nil {
		popts = append(popts, tea.WithOutput(opts.Output))
	}
	popts = append(popts, opts.ProgramOptions...)
	p.prog = tea.NewProgram(m, popts...)
	if !opts.Confirm {
		signal(true)
	}
	go func() {
		defer close(p.done)
		_, err := p.prog.Run()
		if err != nil {
			p.err = fmt.Errorf("tui: %w", err)
		}
		p.pump.close()
		signal(false)
	}()
	return p, nil
}

// noColor reports NO_COLOR set to any non-empty value (no-color.org).
func noColor(env []string) bool {
	for _, kv := range env {
		if len(kv) > len("NO_COLOR=") && kv[:len("NO_COLOR=")] == "NO_COLOR=" {
			return true
		}
	}
	return false
}

// Sink returns the sink the runner emits into. Emit never blocks: events
// are queued and handed to the program in batches, at most one per frame.
func (p *Program) Sink() runner.Sink { return p.pump }

// Prompter returns the prompter that shows confirm() questions as modals.
func (p *Program) Prompter() runner.Prompter { return prompter{p} }

// WaitStart blocks until the operator starts the run at the plan screen
// (true) or leaves (false). Without Options.Confirm it returns true at once.
func (p *Program) WaitStart(ctx context.Context) (bool, error) {
	select {
	case v := <-p.started:
		p.started <- v // keep the answer for later calls
		if !v {
			<-p.done
			return false, p.err
		}
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Wait blocks until the program exits (the operator pressed q, or ctx was
// cancelled) and returns the run summary as plain text for the terminal.
// The summary is empty if the operator left at the plan screen.
func (p *Program) Wait() (string, error) {
	<-p.done
	return p.model.summaryText(), p.err
}

// Quit ends the program from outside, for example when the run could not
// start. Wait still returns the summary of what was seen.
func (p *Program) Quit() { p.prog.Quit() }

// prompter implements runner.Prompter through the program's modal.
type prompter struct{ p *Program }

// Confirm shows the question and blocks until the operator answers, ctx
// ends or the program exits.
func (pr prompter) Confirm(ctx context.Context, q runner.Prompt) (bool, error) {
	reply := make(chan bool, 1)
	pr.p.pump.send(promptMsg{q: q, reply: reply})
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		pr.p.pump.send(promptCancelMsg{id: q.ID, reply: reply})
		return false, ctx.Err()
	case <-pr.p.done:
		return false, ErrClosed
	}
}

// promptMsg asks the model to show a confirm() modal.
type promptMsg struct {
	q     runner.Prompt
	reply chan<- bool
}

// promptCancelMsg withdraws a question whose ctx ended.
type promptCancelMsg struct {
	id    int
	reply chan<- bool
}

// batchMsg carries the events queued since the previous batch.
type batchMsg []tea.Msg

// frameInterval is the shortest time between two batches: events are
// coalesced so the program renders at most about 60 frames a second
// however fast the runner emits.
const frameInterval = 16 * time.Millisecond

// pump is the Sink: a queue the runner appends to and a Cmd that drains it.
type pump struct {
	mu     sync.Mutex
	queue  []tea.Msg
	spare  []tea.Msg
	notify chan struct{} // capacity 1: "the queue is not empty"
	quit   chan struct{}
	closed bool
	last   time.Time
}

func newPump() *pump {
	return &pump{notify: make(chan struct{}, 1), quit: make(chan struct{})}
}

// Emit queues an event; safe for concurrent use, never blocks.
func (q *pump) Emit(e runner.Event) { q.send(e) }

func (q *pump) send(m tea.Msg) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.queue = append(q.queue, m)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *pump) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.quit)
	}
}

// next returns the Cmd that waits for queued events and delivers them as
// one batchMsg, no sooner than frameInterval after the previous batch.
func (q *pump) next() tea.Cmd {
	return func() tea.Msg {
		select {
		case <-q.notify:
		case <-q.quit:
			return nil
		}
		if wait := frameInterval - time.Since(q.last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-q.quit:
				t.Stop()
				return nil
			}
		}
		q.mu.Lock()
		batch := q.queue
		q.queue = q.spare[:0]
		q.spare = nil
		q.last = time.Now()
		q.mu.Unlock()
		return batchMsg(batch)
	}
}

// recycle hands a processed batch's backing array back to the pump.
func (q *pump) recycle(b batchMsg) {
	if cap(b) > 1<<16 {
		return
	}
	clear(b)
	q.mu.Lock()
	q.spare = b[:0]
	q.mu.Unlock()
}
