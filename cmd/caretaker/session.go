package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/session"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
	"github.com/caretaker/caretaker/runner/window"
)

// addSessionFlags registers the flags of unattended runs (package
// runner/session does the work).
func (f *runFlags) addSessionFlags(c *cobra.Command) {
	c.Flags().BoolVar(&f.breakLock, "break-lock", false, "revoke the cluster lock (in the cluster's etcd) of another run first; that run stops before its next step. A local lock of a live process on this machine is never broken")
	c.Flags().BoolVar(&f.noClusterLock, "no-cluster-lock", false, "do not take the cluster lock in etcd (only the local lock): for clusters whose etcd is down, e.g. to restore it")
	c.Flags().StringVar(&f.window, "window", "", `maintenance window, e.g. "Sat 02:00-05:00 Europe/Berlin": refuse to start outside it (exit 5), start no step after it closes (resume later)`)
	c.Flags().StringVar(&f.notifyURL, "notify-url", "", "POST a JSON summary to this URL when the run ends, a step fails, or the run is refused; failures to notify are logged, never fatal")
	c.Flags().DurationVar(&f.lockTTL, "lock-ttl", 0, "lease TTL of the cluster lock (default 60s, or $"+session.LockTTLEnv+")")
	_ = c.Flags().MarkHidden("lock-ttl") // the flag is defined just above
}

// sessionOptions are the session's options from the flags; params are the
// parsed -p values (parsed once, by the caller).
func (f *runFlags) sessionOptions(params map[string]string) session.Options {
	return session.Options{
		StateDir: f.resolvedStateDir(), Connect: sshnode.Dial, Check: f.check,
		Window: f.window, NotifyURL: f.notifyURL,
		BreakLock: f.breakLock, NoClusterLock: f.noClusterLock, LockTTL: f.lockTTL,
		PlaybookRef: f.playbookRef, Inventory: f.inventory, Limit: f.limit, Version: version,
		LibDirs: f.libDirs, Params: params, Continue: f.cont, Stderr: os.Stderr,
	}
}

// openSession opens the run's session; its error carries the exit code
// (2 bad flag, 3 locked, 5 outside the window).
func openSession(ctx context.Context, plan *runner.Plan, f *runFlags, params map[string]string) (*session.Session, error) {
	s, err := session.Open(ctx, plan, f.sessionOptions(params))
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, window.ErrOutsideWindow):
		return nil, withCode(exitWindow, err)
	case errors.Is(err, errs.ErrLocked):
		return nil, withCode(exitLocked, err)
	case errors.Is(err, errs.ErrBadInput):
		return nil, usageError{err}
	}
	return nil, err
}

// needsConfirmHint explains a failure of confirm() without a terminal.
func needsConfirmHint(done runner.RunDone) error {
	for _, f := range done.Failed {
		if f.Kind == errs.KindNeedsConfirm {
			return fmt.Errorf("step %q on %s asked for confirmation, but there is no terminal to ask and --yes was not given: run it in a terminal, or add --yes to answer yes to every question of an unattended run: %w", f.StepName, f.Node, errs.ErrNeedsConfirm)
		}
	}
	return nil
}
