// Package session is what surrounds one run for unattended use: the
// maintenance window, the notifier, the local and cluster locks, the
// journal, and the connection pool. Open checks and takes them before the
// run, RunOptions hands them to the run, Close releases them after.
//
//	s, err := session.Open(ctx, plan, session.Options{StateDir: dir, Params: params})
//	defer s.Close(ctx)
//	opts := s.RunOptions(runner.RunOptions{Check: check, AutoYes: yes})
//	opts.Sink = s.Sink(printer)
//	done, err := runner.NewRun(plan, opts).Execute(ctx)
package session

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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/journal"
	"github.com/caretaker/caretaker/runner/lock"
	"github.com/caretaker/caretaker/runner/notify"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/window"
)

// LockTTLEnv overrides the cluster lock's lease TTL (tests use a few
// seconds) when Options.LockTTL is zero.
const LockTTLEnv = "CARETAKER_LOCK_TTL"

// Options say what the session of a run takes and records.
type Options struct {
	// StateDir holds journals, backups and the local lock.
	StateDir string
	// Connect dials a node (sshnode.Dial); one pool of connections serves the
	// lock and the run.
	Connect func(ctx context.Context, n *inventory.Node) (transport.Executor, error)
	// Check: a check-mode run (takes no lock).
	Check bool
	// Window is a maintenance window spec ("" for none).
	Window string
	// NotifyURL receives a JSON summary when the run ends ("" for none).
	NotifyURL string
	// BreakLock revokes another run's cluster lock first; NoClusterLock
	// takes only the local lock; LockTTL is the cluster lock's lease TTL.
	BreakLock, NoClusterLock bool
	LockTTL                  time.Duration
	// Recorded in the journal of a new run, for resume.
	PlaybookRef, Inventory, Limit, Version string
	LibDirs                                []string
	Params                                 map[string]string
	// Continue is set by resume and undo.
	Continue *Continuation
	// Stderr receives the session's own messages (locks, notifications).
	Stderr io.Writer
}

// Continuation is a run that continues an existing journal (resume) or
// undoes another run (undo).
type Continuation struct {
	// Journal is the resumed run's journal, opened (and locked) by resume.
	Journal *journal.File
	// Done says which step×node cells an earlier attempt completed.
	Done func(step int, node string) bool
	// Shared are the values earlier attempts shared (resume).
	Shared map[string]starlark.Value
	// UndoOf and UndoSeqs fill the header of an undo run's journal.
	UndoOf   string
	UndoSeqs []int
	// Release is called when the session closes (undo: the undone run's lock).
	Release func()
}

// Session is an open session; see the package doc.
type Session struct {
	o     Options
	plan  *runner.Plan
	runID string

	pool     *runner.Pool
	window   *window.Window
	notifier *notify.Notifier
	local    *lock.LocalLock
	etcd     *clientv3.Client
	clock    *lock.ClusterLock
	journal  *journal.File
	lockLost atomic.Bool
	stopLost chan struct{}
}

// Open checks the window, takes the locks and opens the journal. Its
// errors wrap errs.ErrBadInput (a bad window or notify URL),
// window.ErrOutsideWindow or errs.ErrLocked, so the caller can map them to
// exit codes.
func Open(ctx context.Context, plan *runner.Plan, o Options) (*Session, error) {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	s := &Session{o: o, plan: plan, stopLost: make(chan struct{})}
	s.runID = runner.NewRunID(plan.Playbook)
	if c := o.Continue; c != nil && c.Journal != nil {
		s.runID, s.journal = c.Journal.RunID(), c.Journal
	}
	if err := s.checkWindowAndNotifier(); err != nil {
		return nil, err
	}
	s.pool = runner.NewPool(o.Connect)
	ok := false
	defer func() {
		if !ok {
			s.Close(context.WithoutCancel(ctx))
		}
	}()
	if needsLock(plan, o.Check) {
		if err := s.lock(ctx); err != nil {
			s.refused(err)
			return nil, err
		}
	}
	if s.journal == nil {
		j, err := journal.Create(o.StateDir, s.meta())
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

// checkWindowAndNotifier parses both and refuses a run outside the window.
func (s *Session) checkWindowAndNotifier() error {
	if s.o.NotifyURL != "" {
		n, err := notify.New(s.o.NotifyURL)
		if err != nil {
			return err
		}
		s.notifier = n
	}
	if s.o.Window == "" {
		return nil
	}
	w, err := window.Parse(s.o.Window)
	if err != nil {
		return err
	}
	s.window = w
	if err := w.Check(time.Now()); err != nil {
		err = fmt.Errorf("not starting %s on cluster %s: %w", s.plan.Playbook, s.plan.Cluster.Name, err)
		s.refused(err)
		return err
	}
	return nil
}

// meta is the header of a new run's journal.
func (s *Session) meta() journal.RunMeta {
	o := s.o
	meta := journal.NewRunMeta(s.runID, s.plan.Playbook, s.plan.Cluster.Name)
	meta.PlaybookRef = o.PlaybookRef
	meta.Sources = s.plan.Sources
	if o.Inventory != "" {
		if abs, err := filepath.Abs(o.Inventory); err == nil {
			meta.Inventory = abs
		}
	}
	meta.Limit, meta.Check, meta.Version = o.Limit, o.Check, o.Version
	for _, d := range o.LibDirs {
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		meta.LibDirs = append(meta.LibDirs, d)
	}
	if len(o.Params) > 0 {
		meta.Params = o.Params
	}
	if c := o.Continue; c != nil {
		meta.UndoOf, meta.UndoSeqs = c.UndoOf, c.UndoSeqs
	}
	return meta
}

// RunID is the run's ID: a new one, or the resumed run's.
func (s *Session) RunID() string { return s.runID }

// needsLock says whether the plan changes nodes: check-mode runs and
// read-only playbooks run beside others.
func needsLock(plan *runner.Plan, check bool) bool {
	if check {
		return false
	}
	for _, st := range plan.Steps {
		if st.Mutates {
			return true
		}
	}
	return false
}

// lock takes the local lock, then the cluster lock in etcd.
func (s *Session) lock(ctx context.Context) error {
	holder := lock.NewHolder(s.runID, s.plan.Playbook)
	cluster := s.plan.Cluster.Name
	l, err := lock.TakeLocal(s.o.StateDir, cluster, holder)
	if err != nil {
		return err
	}
	s.local = l
	if s.plan.LocalLockOnly && !s.o.NoClusterLock {
		fmt.Fprintf(s.o.Stderr, "caretaker: playbook %s stops or replaces the datastore the cluster lock lives in, so only the local lock is taken: run it from this machine (state dir %s) only\n", s.plan.Playbook, s.o.StateDir)
		return nil
	}
	if s.o.NoClusterLock {
		fmt.Fprintf(s.o.Stderr, "caretaker: --no-cluster-lock: not taking the cluster lock in etcd; only runs from this machine (state dir %s) are kept off cluster %s\n", s.o.StateDir, cluster)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cli, via, err := lock.DialClusterEtcd(cctx, s.pool, s.servers())
	if errors.Is(err, lock.ErrNoEtcd) {
		fmt.Fprintf(s.o.Stderr, "caretaker: cluster %s runs no embedded etcd: only the local lock is taken\n", cluster)
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot take the cluster lock of %s: %w (to run with the local lock only, e.g. to restore a broken datastore, add --no-cluster-lock)", cluster, err)
	}
	s.etcd = cli
	cl, err := s.takeClusterLock(cctx, cli, holder)
	if err != nil {
		return err
	}
	s.clock = cl
	s.sayBroken(cl)
	go func() {
		select {
		case <-cl.Lost():
			s.lockLost.Store(true)
			fmt.Fprintf(s.o.Stderr, "caretaker: lost the cluster lock of %s (its lease was revoked, e.g. by --break-lock elsewhere, or etcd was unreachable for its TTL via %s): no new step starts\n", cluster, nodeNames(via))
		case <-s.stopLost:
		}
	}()
	return nil
}

// servers lists the cluster's servers, those of the plan first (their
// connections are used anyway).
func (s *Session) servers() []*inventory.Node {
	var servers []*inventory.Node
	seen := map[string]bool{}
	for _, group := range [][]*inventory.Node{s.plan.Nodes, s.plan.Cluster.Nodes} {
		for _, n := range group {
			if n.Role == inventory.RoleServer && !seen[n.Name] {
				seen[n.Name] = true
				servers = append(servers, n)
			}
		}
	}
	return servers
}

// takeClusterLock takes the lock in etcd; the stale lock of a process of
// this machine that is gone is broken.
func (s *Session) takeClusterLock(ctx context.Context, cli *clientv3.Client, holder lock.Holder) (*lock.ClusterLock, error) {
	cluster := s.plan.Cluster.Name
	cl, err := lock.TakeCluster(ctx, cli, cluster, holder, lock.ClusterOptions{TTL: s.lockTTL(), Break: s.o.BreakLock})
	var le *lock.LockedError
	if errors.As(err, &le) && le.Holder != nil && le.Holder.Host == holder.Host && le.Holder.PID > 0 && !processAlive(le.Holder.PID) {
		// The holder ran on this machine and its process is gone (killed,
		// crashed): its lease only has not expired yet. Nothing can still
		// be running for it, so its lock is stale.
		fmt.Fprintf(s.o.Stderr, "caretaker: the cluster lock of %s is held by %s, a process of this machine that is gone: breaking its stale lock\n", cluster, le.Holder)
		cl, err = lock.TakeCluster(ctx, cli, cluster, holder, lock.ClusterOptions{TTL: s.lockTTL(), Break: true})
	}
	return cl, err
}

// sayBroken reports what --break-lock broke.
func (s *Session) sayBroken(cl *lock.ClusterLock) {
	if !s.o.BreakLock {
		return
	}
	cluster := s.plan.Cluster.Name
	switch {
	case cl.Broken != nil:
		fmt.Fprintf(s.o.Stderr, "caretaker: --break-lock: broke the cluster lock of %s held by %s (lease %x revoked); that run stops before its next step\n", cluster, cl.Broken, cl.BrokenLease)
	case cl.BrokenLease != 0:
		fmt.Fprintf(s.o.Stderr, "caretaker: --break-lock: broke the cluster lock of %s (lease %x revoked; its holder was not recorded)\n", cluster, cl.BrokenLease)
	default:
		fmt.Fprintf(s.o.Stderr, "caretaker: --break-lock: the cluster lock of %s was free: nothing broken\n", cluster)
	}
}

// lockTTL is Options.LockTTL, else $CARETAKER_LOCK_TTL, else the default.
func (s *Session) lockTTL() time.Duration {
	if s.o.LockTTL > 0 {
		return s.o.LockTTL
	}
	if v := os.Getenv(LockTTLEnv); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return lock.DefaultLockTTL
}

// RunOptions returns base with what the session provides: the run ID, the
// state dir, the connection pool, the journal, the cells an earlier
// attempt completed and its shared values, and the guards run before each
// step (journal, window, lock).
func (s *Session) RunOptions(base runner.RunOptions) runner.RunOptions {
	opts := base
	opts.RunID = s.runID
	opts.StateDir = s.o.StateDir
	opts.Pool = s.pool
	opts.Journal = s.journal
	if c := s.o.Continue; c != nil {
		opts.Done = c.Done
		opts.Shared = c.Shared
	}
	var guard func(*runner.Step) error
	if s.window != nil {
		guard = s.window.StepGuard(nil)
	}
	opts.BeforeStep = window.ChainBeforeStep(s.journal.BeforeStep, guard, s.lockGuard, base.BeforeStep)
	return opts
}

func (s *Session) lockGuard(step *runner.Step) error {
	if s.lockLost.Load() {
		return fmt.Errorf("lost the cluster lock of %s, not starting step %q: %w: %w", s.plan.Cluster.Name, step.Name, errs.ErrLocked, errs.ErrAborted)
	}
	return nil
}

// Sink puts the journal first (it syncs before the runner moves on), then
// the notifier, then out (nil for none).
func (s *Session) Sink(out runner.Sink) runner.Sink {
	m := runner.MultiSink{s.journal}
	if s.notifier != nil {
		m = append(m, s.notifier)
	}
	if out != nil {
		m = append(m, out)
	}
	return m
}

func (s *Session) refused(err error) {
	if s.notifier != nil {
		s.notifier.Refused(s.runID, s.plan.Playbook, s.plan.Cluster.Name, err)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		s.notifier.Wait(ctx)
		cancel()
	}
}

// Close ends the session: journal, cluster lock, connections, local lock,
// then waits for notifications to go out. It is safe to call twice.
func (s *Session) Close(ctx context.Context) {
	select {
	case <-s.stopLost:
	default:
		close(s.stopLost)
	}
	if s.journal != nil {
		if err := s.journal.Close(); err != nil {
			fmt.Fprintf(s.o.Stderr, "caretaker: close the journal: %v\n", err)
		}
	}
	if c := s.o.Continue; c != nil && c.Release != nil {
		c.Release()
		c.Release = nil
	}
	if s.clock != nil {
		if err := s.clock.Unlock(ctx); err != nil {
			fmt.Fprintf(s.o.Stderr, "caretaker: %v (it expires with its lease)\n", err)
		}
		s.clock = nil
	}
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.local != nil {
		s.local.Unlock()
		s.local = nil
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

// nodeNames lists node names, comma-separated.
func nodeNames(ns []*inventory.Node) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return strings.Join(out, ", ")
}
