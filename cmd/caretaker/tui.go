package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/transport/ssh"
	"github.com/caretaker/caretaker/tui"
)

// lateController forwards to a run created after the TUI started (the run
// needs the TUI's sink, the TUI needs a controller).
type lateController struct {
	mu  sync.Mutex
	run *runner.Run
}

func (c *lateController) set(r *runner.Run) { c.mu.Lock(); c.run = r; c.mu.Unlock() }
func (c *lateController) get() *runner.Run {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.run
}

// Pause forwards to the run.
func (c *lateController) Pause() {
	if r := c.get(); r != nil {
		r.Pause()
	}
}

// Resume forwards to the run.
func (c *lateController) Resume() {
	if r := c.get(); r != nil {
		r.Resume()
	}
}

// Stop forwards to the run.
func (c *lateController) Stop(hard bool) {
	if r := c.get(); r != nil {
		r.Stop(hard)
	}
}

// runWithTUI runs the plan under the Bubble Tea view: the plan screen
// first (unless --yes), the live grid, then the summary until q.
func runWithTUI(ctx context.Context, plan *runner.Plan, opts runner.RunOptions, f *runFlags) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Warnings about the SSH setup would scribble over the screen: they
	// are printed once the terminal view has ended.
	var warnings bytes.Buffer
	ssh.SetWarnings(&warnings)
	defer func() {
		ssh.SetWarnings(os.Stderr)
		_, _ = os.Stderr.Write(warnings.Bytes()) // nothing to do if stderr is gone
	}()
	ctl := &lateController{}
	prog, err := tui.Start(ctx, tui.Options{
		Title:      plan.Playbook,
		Cluster:    plan.Cluster.Name,
		Check:      opts.Check,
		Plan:       planEvent(plan),
		Confirm:    !f.yes,
		Controller: ctl,
		LogPath:    filepath.Join(opts.StateDir, "logs", opts.RunID+".log"),
	})
	if err != nil {
		return fmt.Errorf("start the terminal view: %w (use --output plain)", err)
	}
	start, err := prog.WaitStart(ctx)
	if err != nil || !start {
		prog.Quit()
		prog.Wait()
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "caretaker: nothing was run")
		return nil
	}
	opts.Sink = runner.MultiSink{prog.Sink(), opts.Sink}
	if !opts.AutoYes {
		opts.Prompter = prog.Prompter()
	}
	run := runner.NewRun(plan, opts)
	ctl.set(run)
	done, runErr := run.Execute(ctx)
	summary, _ := prog.Wait()
	if summary == "" {
		summary = runner.Summary(done)
	} else {
		summary += runner.LeftSummary(done) // where a stopped run left each node
	}
	fmt.Fprint(os.Stdout, summary)
	return runOutcome(done, runErr)
}
