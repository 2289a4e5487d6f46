package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	journalpkg "github.com/caretaker/caretaker/runner/journal"
	lockpkg "github.com/caretaker/caretaker/runner/lock"
	"github.com/caretaker/caretaker/runner/notify"
	"github.com/caretaker/caretaker/runner/transport/ssh"
	windowpkg "github.com/caretaker/caretaker/runner/window"
)

// A session is what surrounds one run for unattended use (issue 6): the
// maintenance window, the notifier, the local and cluster locks, and the
// journal. executePlan opens it before the run and closes it after.

// lockTTLEnv overrides the cluster lock's lease TTL (tests use a few
// seconds); the hidden --lock-ttl flag does the same.
const lockTTLEnv = "CARETAKER_LOCK_TTL"

// addSessionFlags registers the flags of unattended runs.
func (f *runFlags) addSessionFlags(c *cobra.Command) {
	c.Flags().BoolVar(&f.breakLock, "break-lock", false, "revoke the cluster lock (in the cluster's etcd) of another run first; that run stops before its next step. A local lock of a live process on this machine is never broken")
	c.Flags().BoolVar(&f.noClusterLock, "no-cluster-lock", false, "do not take the cluster lock in etcd (only the local lock): for clusters whose etcd is down, e.g. to restore it")
	c.Flags().StringVar(&f.window, "window", "", `maintenance window, e.g. "Sat 02:00-05:00 Europe/Berlin": refuse to start outside it (exit 5), start no step after it closes (resume later)`)
	c.Flags().StringVar(&f.notifyURL, "notify-url", "", "POST a JSON summary to this URL when the run ends, a step fails, or the run is refused; failures to notify are logged, never fatal")
	c.Flags().DurationVar(&f.lockTTL, "lock-ttl", 0, "lease TTL of the cluster lock (default 60s, or $"+lockTTLEnv+")")
	c.Flags().MarkHidden("lock-ttl")
}

// continuation is set by resume and undo: the run continues an existing
// journal (resume) or undoes another run (undo).
type continuation struct {
	// journal is the resumed run's journal, opened (and locked) by resume.
	journal *journalpkg.File
	// done says which step×node cells an earlier attempt completed.
	done func(step int, node string) bool
	// shared are the values earlier attempts shared (resume).
	shared map[string]starlark.Value
	// undoOf and undoSeqs fill the header of an undo run's journal.
	undoOf   string
	undoSeqs []int
	// release is called when the session closes (undo: the undone run's lock).
	release func()
}

type session struct {
	f        *runFlags
	plan     *runner.Plan
	runID    string
	stateDir string
	stderr   io.Writer

	pool     *runner.Pool
	window   *windowpkg.Window
	notifier *notify.Notifier
	local    *lockpkg.LocalLock
	etcd     *clientv3.Client
	clock    *lockpkg.ClusterLock
	journal  *journalpkg.File
	lockLost atomic.Bool
	stopLost chan struct{}
}

// needsLock says whether the plan changes nodes: check-mode runs and
// read-only playbooks run beside others.
func needsLock(plan *runner.Plan, f *runFlags) bool {
	if f.check {
		return false
	}
	for _, s := range plan.Steps {
		if s.Mutates {
			return true
		}
	}
	return false
}

// openSession checks the window, takes the locks and opens the journal.
// An error carries its exit code (2 bad flag, 3 locked, 5 outside window).
func openSession(ctx context.Context, plan *runner.Plan, f *runFlags) (*session, error) {
	s := &session{f: f, plan: plan, stateDir: f.resolvedStateDir(), stderr: os.Stderr, stopLost: make(chan struct{})}
	s.runID = runner.NewRunID(plan.Playbook)
	if f.cont != nil && f.cont.journal != nil {
		s.runID = f.cont.journal.RunID()
		s.journal = f.cont.journal
	}
	if f.notifyURL != "" {
		n, err := notify.New(f.notifyURL)
		if err != nil {
			return nil, usageError{err}
		}
		s.notifier = n
	}
	if f.window != "" {
		w, err := windowpkg.Parse(f.window)
		if err != nil {
			return nil, usageError{err}
		}
		s.window = w
		if err := w.Check(time.Now()); err != nil {
			err = fmt.Errorf("not starting %s on cluster %s: %w", plan.Playbook, plan.Cluster.Name, err)
			s.refused(err)
			return nil, withCode(exitWindow, err)
		}
	}
	s.pool = runner.NewPool(ssh.Dial)
	ok := false
	defer func() {
		if !ok {
			s.close(context.WithoutCancel(ctx))
		}
	}()
	if needsLock(plan, f) {
		if err := s.lock(ctx); err != nil {
			s.refused(err)
			if errors.Is(err, errs.ErrLocked) {
				return nil, withCode(exitLocked, err)
			}
			return nil, err
		}
	}
	if s.journal == nil {
		meta := journalpkg.NewRunMeta(s.runID, plan.Playbook, plan.Cluster.Name)
		meta.PlaybookRef = f.playbookRef
		if f.inventory != "" {
			if abs, err := filepath.Abs(f.inventory); err == nil {
				meta.Inventory = abs
			}
		}
		meta.Limit, meta.Check, meta.Version = f.limit, f.check, version
		for _, d := range f.libDirs {
			if abs, err := filepath.Abs(d); err == nil {
				d = abs
			}
			meta.LibDirs = append(meta.LibDirs, d)
		}
		if params, err := f.parseParams(); err == nil && len(params) > 0 {
			meta.Params = params
		}
		if f.cont != nil {
			meta.UndoOf, meta.UndoSeqs = f.cont.undoOf, f.cont.undoSeqs
		}
		j, err := journalpkg.Create(s.stateDir, meta)
		if err != nil {
			return nil, err
		}
		s.journal = j
	}
	if s.notifier != nil {
		s.notifier.SetJournal(s.journal.Path())
	}
	ok = true
	return s, nil
}

// lock takes the local lock, then the cluster lock in etcd.
func (s *session) lock(ctx context.Context) error {
	holder := lockpkg.NewHolder(s.runID, s.plan.Playbook)
	cluster := s.plan.Cluster.Name
	l, err := lockpkg.TakeLocal(s.stateDir, cluster, holder)
	if err != nil {
		return err
	}
	s.local = l
	if s.f.noClusterLock {
		fmt.Fprintf(s.stderr, "caretaker: --no-cluster-lock: not taking the cluster lock in etcd; only runs from this machine (state dir %s) are kept off cluster %s\n", s.stateDir, cluster)
		return nil
	}
	// Servers of the plan first (their connections are used anyway).
	var servers []*inventorypkg.Node
	seen := map[string]bool{}
	for _, group := range [][]*inventorypkg.Node{s.plan.Nodes, s.plan.Cluster.Nodes} {
		for _, n := range group {
			if n.Role == inventorypkg.RoleServer && !seen[n.Name] {
				seen[n.Name] = true
				servers = append(servers, n)
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cli, via, err := lockpkg.DialClusterEtcd(cctx, s.pool, servers)
	if errors.Is(err, lockpkg.ErrNoEtcd) {
		fmt.Fprintf(s.stderr, "caretaker: cluster %s runs no embedded etcd: only the local lock is taken\n", cluster)
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot take the cluster lock of %s: %w (to run with the local lock only, e.g. to restore a broken datastore, add --no-cluster-lock)", cluster, err)
	}
	s.etcd = cli
	lock, err := lockpkg.TakeCluster(cctx, cli, cluster, holder, lockpkg.ClusterOptions{TTL: s.f.effectiveLockTTL(), Break: s.f.breakLock})
	var le *lockpkg.LockedError
	if errors.As(err, &le) && le.Holder != nil && le.Holder.Host == holder.Host && le.Holder.PID > 0 && !processAlive(le.Holder.PID) {
		// The holder ran on this machine and its process is gone (killed,
		// crashed): its lease only has not expired yet. Nothing can still
		// be running for it, so its lock is stale.
		fmt.Fprintf(s.stderr, "caretaker: the cluster lock of %s is held by %s, a process of this machine that is gone: breaking its stale lock\n", cluster, le.Holder)
		lock, err = lockpkg.TakeCluster(cctx, cli, cluster, holder, lockpkg.ClusterOptions{TTL: s.f.effectiveLockTTL(), Break: true})
	}
	if err != nil {
		return err
	}
	s.clock = lock
	if s.f.breakLock {
		if lock.Broken != nil {
			fmt.Fprintf(s.stderr, "caretaker: --break-lock: broke the cluster lock of %s held by %s (lease %x revoked); that run stops before its next step\n", cluster, lock.Broken, lock.BrokenLease)
		} else if lock.BrokenLease != 0 {
			fmt.Fprintf(s.stderr, "caretaker: --break-lock: broke the cluster lock of %s (lease %x revoked; its holder was not recorded)\n", cluster, lock.BrokenLease)
		} else {
			fmt.Fprintf(s.stderr, "caretaker: --break-lock: the cluster lock of %s was free: nothing broken\n", cluster)
		}
	}
	go func() {
		select {
		case <-lock.Lost():
			s.lockLost.Store(true)
			fmt.Fprintf(s.stderr, "caretaker: lost the cluster lock of %s (its lease was revoked, e.g. by --break-lock elsewhere, or etcd was unreachable for its TTL via %s): no new step starts\n", cluster, nodeNames(via))
		case <-s.stopLost:
		}
	}()
	return nil
}

func (f *runFlags) effectiveLockTTL() time.Duration {
	if f.lockTTL > 0 {
		return f.lockTTL
	}
	if v := os.Getenv(lockTTLEnv); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return lockpkg.DefaultLockTTL
}

// apply fills the run options the session provides.
func (s *session) apply(opts *runner.RunOptions) {
	opts.RunID = s.runID
	opts.StateDir = s.stateDir
	opts.Pool = s.pool
	opts.Journal = s.journal
	if s.f.cont != nil {
		opts.Done = s.f.cont.done
		opts.Shared = s.f.cont.shared
	}
	var guard func(*runner.Step) error
	if s.window != nil {
		guard = s.window.StepGuard(nil)
	}
	opts.BeforeStep = windowpkg.ChainBeforeStep(s.journal.BeforeStep, guard, s.lockGuard, opts.BeforeStep)
}

func (s *session) lockGuard(step *runner.Step) error {
	if s.lockLost.Load() {
		return fmt.Errorf("lost the cluster lock of %s, not starting step %q: %w: %w", s.plan.Cluster.Name, step.Name, errs.ErrLocked, errs.ErrAborted)
	}
	return nil
}

// sink puts the journal first (it syncs before the runner moves on), then
// the notifier, then the output.
func (s *session) sink(out runner.Sink) runner.Sink {
	m := runner.MultiSink{s.journal}
	if s.notifier != nil {
		m = append(m, s.notifier)
	}
	if out != nil {
		m = append(m, out)
	}
	return m
}

func (s *session) refused(err error) {
	if s.notifier != nil {
		s.notifier.Refused(s.runID, s.plan.Playbook, s.plan.Cluster.Name, err)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		s.notifier.Wait(ctx)
		cancel()
	}
}

// close ends the session: journal, cluster lock, connections, local lock,
// then waits for notifications to go out.
func (s *session) close(ctx context.Context) {
	select {
	case <-s.stopLost:
	default:
		close(s.stopLost)
	}
	if s.journal != nil {
		if err := s.journal.Close(); err != nil {
			fmt.Fprintf(s.stderr, "caretaker: close the journal: %v\n", err)
		}
	}
	if s.f.cont != nil && s.f.cont.release != nil {
		s.f.cont.release()
		s.f.cont.release = nil
	}
	if s.clock != nil {
		if err := s.clock.Unlock(ctx); err != nil {
			fmt.Fprintf(s.stderr, "caretaker: %v (it expires with its lease)\n", err)
		}
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.local != nil {
		s.local.Unlock()
	}
	if s.notifier != nil {
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s.notifier.Wait(nctx)
		cancel()
	}
}

// processAlive reports whether a process with pid exists on this machine.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
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

// nodeNames lists node names, comma-separated.
func nodeNames(ns []*inventorypkg.Node) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return strings.Join(out, ", ")
}
