package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sub-states of the simulated systemd service, as `systemctl show -p
// SubState` prints them.
const (
	subDead        = "dead"
	subStart       = "start"
	subRunning     = "running"
	subStop        = "stop"
	subAutoRestart = "auto-restart"
)

// DefaultRestartDelay is RestartSec of the installer's K3s units.
const DefaultRestartDelay = 5 * time.Second

// Errors a start job ends with, besides success.
var (
	// errStartFailed: the K3s process exited during start-up (fatal).
	errStartFailed = errors.New("start failed")
	// errJobCanceled: the unit was stopped or restarted before the start
	// completed ("Job for k3s.service canceled.").
	errJobCanceled = errors.New("job canceled")
)

// unitStatus is what systemd knows about the node's unit (the properties
// `systemctl show` prints). Guarded by node.mu.
type unitStatus struct {
	active, sub  string // ActiveState, SubState
	result       string // Result: success or exit-code
	nRestarts    int    // automatic restarts (Restart=always)
	invocationID string // 32 hex chars, new for each start attempt
	mainPID      int

	execMainStart     time.Time     // wall clock of the last start attempt
	execMainStartMono time.Duration // CLOCK_MONOTONIC of the same
	activeEnter       time.Time
	activeEnterMono   time.Duration
	activeExit        time.Time
	activeExitMono    time.Duration
	stateChange       time.Time
	stateChangeMono   time.Duration
}

// k3sProc is one start attempt of the node's K3s process and what it runs
// (supervisor, etcd member) once started.
type k3sProc struct {
	gen    uint64
	ctx    context.Context
	cancel context.CancelFunc
	// settled is closed once the start has an outcome (err): ready (nil),
	// failed (errStartFailed) or cancelled (errJobCanceled).
	settled chan struct{}
	err     error
	// done is closed when the attempt's goroutine returned.
	done chan struct{}

	mu       sync.Mutex
	sup      *supervisor
	member   *etcdMember
	released bool
}

func (p *k3sProc) settle(err error) {
	p.err = err
	close(p.settled)
}

// setSupervisor and setMember record what the process runs so that stop
// (or a failed start) releases it. One that comes after the process was
// released (it was stopped while starting it) is closed at once: left
// running, an etcd member would keep its WAL locked, and the next start's
// member would make etcd exit the whole lab process ("file already
// locked").
func (p *k3sProc) setSupervisor(s *supervisor) {
	p.mu.Lock()
	released := p.released
	if !released {
		p.sup = s
	}
	p.mu.Unlock()
	if released {
		s.close()
	}
}

func (p *k3sProc) setMember(m *etcdMember) {
	p.mu.Lock()
	released := p.released
	if !released {
		p.member = m
	}
	p.mu.Unlock()
	if released {
		m.close()
	}
}

// release stops what the process runs: the supervisor, then the etcd
// member (K3s's own shutdown). Safe to call more than once.
func (p *k3sProc) release() {
	p.mu.Lock()
	if p.released {
		p.mu.Unlock()
		return
	}
	p.released = true
	sup, m := p.sup, p.member
	p.mu.Unlock()
	if sup != nil {
		sup.close()
	}
	if m != nil {
		m.close()
	}
}

// monotonic is CLOCK_MONOTONIC, what systemd's *TimestampMonotonic
// properties count (µs since boot; the lab's nodes share the host's).
func monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func newInvocationID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// setUnitLocked changes ActiveState/SubState and the timestamps systemd
// keeps with them. Caller holds n.mu.
func (n *node) setUnitLocked(active, sub string) {
	now, mono := time.Now(), monotonic()
	u := &n.u
	if u.active == stateActive && active != stateActive {
		u.activeExit, u.activeExitMono = now, mono
	}
	if active == stateActive && u.active != stateActive {
		u.activeEnter, u.activeEnterMono = now, mono
	}
	if u.active != active {
		u.stateChange, u.stateChangeMono = now, mono
	}
	u.active, u.sub = active, sub
}

// launchLocked starts a start attempt of the unit: systemd's "Starting"
// line, a new main PID and invocation ID, and K3s's start-up in a
// goroutine. auto marks a restart by Restart=always (NRestarts counts it).
// Caller holds opMu; the unit is not running.
func (n *node) launchLocked(auto bool) *k3sProc {
	ctx, cancel := context.WithCancel(n.lab.ctx)
	p := &k3sProc{ctx: ctx, cancel: cancel, settled: make(chan struct{}), done: make(chan struct{})}
	n.mu.Lock()
	n.gen++
	p.gen = n.gen
	n.proc = p
	if n.restartTimer != nil {
		n.restartTimer.Stop()
		n.restartTimer = nil
	}
	if auto {
		n.u.nRestarts++
	}
	n.u.result = "success" // systemd resets Result at every start
	restarts := n.u.nRestarts
	n.u.mainPID = int(n.lab.pidSeq.Add(1)) + 4000
	n.u.invocationID = newInvocationID()
	n.u.execMainStart, n.u.execMainStartMono = time.Now(), monotonic()
	n.mu.Unlock()
	if auto {
		n.logSystemd("%s: Scheduled restart job, restart counter is at %d.", n.unitName(), restarts)
		n.logSystemd("Stopped %s - %s.", n.unitName(), unitDescription)
	}
	n.mu.Lock()
	n.setUnitLocked(stateActivating, subStart)
	n.mu.Unlock()
	n.logSystemd("Starting %s - %s...", n.unitName(), unitDescription)
	go n.attempt(p)
	return p
}

// unitDescription is the Description= of the installer's units.
const unitDescription = "Lightweight Kubernetes"

// attempt runs K3s's start-up for p and applies systemd's view of the
// outcome: active, or (Restart=always) activating/auto-restart with a
// restart after the restart delay.
func (n *node) attempt(p *k3sProc) {
	defer close(p.done)
	err := n.runK3s(p)
	if p.ctx.Err() != nil {
		// Stopped or restarted meanwhile: stopLocked releases p.
		p.settle(errJobCanceled)
		return
	}
	if err != nil {
		var fe *fatalError
		if errors.As(err, &fe) {
			n.logK3s("fatal", "%s", fe.msg)
		} else {
			n.logK3s("fatal", "Error: %v", err)
		}
		p.release()
		n.logSystemd("%s: Main process exited, code=exited, status=1/FAILURE", n.unitName())
		n.logSystemd("%s: Failed with result 'exit-code'.", n.unitName())
		n.logSystemd("Failed to start %s - %s.", n.unitName(), unitDescription)
		n.mu.Lock()
		if n.proc == p {
			n.u.result = "exit-code"
			n.u.mainPID = 0
			n.setUnitLocked(stateActivating, subAutoRestart)
			n.scheduleRestartLocked(p.gen)
		}
		n.mu.Unlock()
		p.settle(errStartFailed)
		return
	}
	n.mu.Lock()
	current := n.proc == p
	if current {
		n.setUnitLocked(stateActive, subRunning)
	}
	n.mu.Unlock()
	if current {
		n.logSystemd("Started %s - %s.", n.unitName(), unitDescription)
		if n.isServer() {
			n.lab.refreshEtcdClientFiles(n)
		}
	}
	p.settle(nil)
}

// scheduleRestartLocked arms Restart=always: after the restart delay the
// unit starts again, unless it was stopped or started meanwhile. Caller
// holds n.mu.
func (n *node) scheduleRestartLocked(gen uint64) {
	n.restartTimer = time.AfterFunc(n.lab.opts.RestartDelay, func() {
		n.opMu.Lock()
		defer n.opMu.Unlock()
		n.mu.Lock()
		due := n.gen == gen && n.u.sub == subAutoRestart && n.lab.ctx.Err() == nil
		n.mu.Unlock()
		if due {
			n.launchLocked(true)
		}
	})
}

// stopLocked is the stop job: K3s gets SIGTERM (its start is cancelled or
// its supervisor and etcd member stop), then the unit is inactive. A unit
// waiting to be restarted is simply not restarted. Caller holds opMu.
func (n *node) stopLocked() {
	n.mu.Lock()
	p := n.proc
	n.gen++
	if n.restartTimer != nil {
		n.restartTimer.Stop()
		n.restartTimer = nil
	}
	active, sub := n.u.active, n.u.sub
	if active == stateInactive {
		n.mu.Unlock()
		return
	}
	if sub == subAutoRestart || active == stateFailed {
		n.proc = nil
		n.setUnitLocked(stateInactive, subDead)
		n.mu.Unlock()
		n.logSystemd("Stopped %s - %s.", n.unitName(), unitDescription)
		return
	}
	n.setUnitLocked(stateDeactivating, subStop)
	n.mu.Unlock()
	n.logSystemd("Stopping %s - %s...", n.unitName(), unitDescription)
	if p != nil {
		p.cancel()
		<-p.done
		p.release()
	}
	n.logSystemd("%s: Deactivated successfully.", n.unitName())
	n.logSystemd("Stopped %s - %s.", n.unitName(), unitDescription)
	n.mu.Lock()
	n.proc = nil
	n.u.mainPID = 0
	n.setUnitLocked(stateInactive, subDead)
	n.mu.Unlock()
}

// startLocked is the start job: nothing to do for a running unit, the
// running attempt for an activating one, a new attempt otherwise (a unit
// waiting for its automatic restart starts at once). Caller holds opMu.
func (n *node) startLocked() *k3sProc {
	n.mu.Lock()
	active, sub, p := n.u.active, n.u.sub, n.proc
	n.mu.Unlock()
	switch {
	case active == stateActive && p != nil:
		return p
	case active == stateActivating && sub == subStart && p != nil:
		return p
	}
	return n.launchLocked(false)
}

// startJob runs a start (restart: stop first) and returns the attempt to
// wait on.
func (n *node) startJob(restart bool) *k3sProc {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if restart {
		n.stopLocked()
	}
	return n.startLocked()
}

// waitStart waits for the outcome of p, as a blocking systemctl does
// (TimeoutStartSec=0: as long as it takes), or until ctx ends.
func waitStart(ctx context.Context, p *k3sProc) error {
	select {
	case <-p.settled:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startAndWait starts (or restarts) the unit and waits for the start.
func (n *node) startAndWait(ctx context.Context, restart bool) error {
	return waitStart(ctx, n.startJob(restart))
}

// stopUnit runs a stop job.
func (n *node) stopUnit() {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.stopLocked()
}

// restartNoBlock is `systemctl restart --no-block`: the job is queued and
// systemctl returns; the unit then stops and starts in the background.
func (n *node) restartNoBlock() {
	queued := make(chan struct{})
	go func() {
		n.opMu.Lock()
		defer n.opMu.Unlock()
		close(queued)
		n.stopLocked()
		n.startLocked()
	}()
	select {
	case <-queued:
	case <-time.After(2 * time.Second):
	}
}

// startNoBlock is `systemctl start --no-block`.
func (n *node) startNoBlock() {
	go func() { _ = n.startJob(false) }()
}

// describeStartError is the systemctl message for a failed start job.
func describeStartError(unit string, err error) []string {
	if errors.Is(err, errJobCanceled) {
		return []string{fmt.Sprintf("Job for %s canceled.", unit)}
	}
	return []string{
		fmt.Sprintf("Job for %s failed because the control process exited with error code.", unit),
		fmt.Sprintf("See \"systemctl status %s\" and \"journalctl -xeu %s\" for details.", unit, unit),
	}
}
