package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/internal/proc"
)

// Defaults for SSHSettings left at zero.
const (
	sshDefaultConnectTimeout = 10 * time.Second
	sshDefaultKeepAlive      = 15 * time.Second
	// sshKeepAliveMisses is how many keepalive intervals a reply may take
	// before the connection is dropped (OpenSSH's ServerAliveCountMax).
	sshKeepAliveMisses = 3
	// sshMaxSessions bounds the sessions open at once on one connection;
	// it is OpenSSH's default MaxSessions, above which sshd refuses them.
	// Further calls wait for a free slot.
	sshMaxSessions = 10
)

// sshExecutor runs commands on one node over one SSH connection, which is
// opened by DialSSH and reopened on the next call if it dies.
type sshExecutor struct {
	cfg            Config
	target         sshTarget
	auth           []*sshAuth // per hop: the jump hosts in order, then the node
	knownHosts     string
	policy         HostKeyPolicy
	connectTimeout time.Duration
	commandTimeout time.Duration
	keepAlive      time.Duration
	sem            chan struct{}

	mu     sync.Mutex
	cur    *sshConn
	closed bool
}

// sshConn is one live connection (and the jump connections under it).
type sshConn struct {
	client *ssh.Client
	jumps  []*ssh.Client
	dead   chan struct{} // closed once the connection is gone

	mu  sync.Mutex
	why error // set when the keepalive dropped the connection
}

func (c *sshConn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// waitDead reports whether the connection is gone or goes within d; a
// session error usually comes a moment before the connection's own end.
func (c *sshConn) waitDead(d time.Duration) bool {
	if c.isDead() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.dead:
		return true
	case <-t.C:
		return false
	}
}

func (c *sshConn) reason() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.why
}

// Config says how to reach one node; zero fields take OpenSSH's defaults
// or those of the Host entry that SSHHost names.
type Config struct {
	// Name names the node in messages and is Executor.Name.
	Name    string
	Address string
	Port    int    // 0: the Host entry's, else 22
	User    string // "": the Host entry's, else the local user
	// Sudo runs every command (and file write) through `sudo -n`.
	Sudo bool
	// SSHHost names a Host entry of ConfigFile (default ~/.ssh/config)
	// whose HostName, Port, User, IdentityFile and ProxyJump apply where
	// this Config leaves them unset.
	SSHHost    string
	ConfigFile string
	// IdentityFiles are private keys (default ~/.ssh/id_*); UseAgent also
	// offers the keys of $SSH_AUTH_SOCK.
	IdentityFiles []string
	UseAgent      bool
	// KnownHosts is the known_hosts file (default ~/.ssh/known_hosts),
	// checked under HostKeyPolicy (default HostKeyStrict).
	KnownHosts    string
	HostKeyPolicy HostKeyPolicy
	// ConnectTimeout (default 10s), CommandTimeout for commands without
	// their own (default 10m), KeepAlive interval (default 15s; negative
	// disables).
	ConnectTimeout, CommandTimeout, KeepAlive time.Duration
	// JumpHost is "[user@]host[:port][,...]", reached first.
	JumpHost string
}

// HostKeyPolicy says what to do with a host key that is not in known_hosts.
// A changed key is refused under every policy.
type HostKeyPolicy string

// Host key policies.
const (
	HostKeyStrict    HostKeyPolicy = "strict"     // unknown keys are refused
	HostKeyAcceptNew HostKeyPolicy = "accept-new" // unknown keys are recorded and accepted
)

// Open connects to the node c describes and returns its Executor. Every
// call of the Executor uses this one connection (sessions are multiplexed
// on it); if it dies it is reopened by the next call.
//
// The connection honours c: the Host entry of ssh_config named by SSHHost,
// jump hosts, identity files and ssh-agent, timeouts and keepalives (a
// connection that leaves three intervals unanswered is dropped). Host keys
// are checked against KnownHosts under HostKeyPolicy; a changed key is
// always refused.
//
// Errors wrap ErrUnreachable, ErrAuth, ErrHostKey or ErrBadInput and name
// the node, its address and what to do.
func Open(ctx context.Context, c Config) (transport.Executor, error) {
	e, err := newSSHExecutor(c)
	if err != nil {
		return nil, err
	}
	conn, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	e.cur = conn
	return e, nil
}

func newSSHExecutor(n Config) (*sshExecutor, error) {
	t, err := resolveTarget(n)
	if err != nil {
		return nil, err
	}
	e := &sshExecutor{
		cfg:            n,
		target:         t,
		knownHosts:     n.KnownHosts,
		policy:         n.HostKeyPolicy,
		connectTimeout: n.ConnectTimeout,
		commandTimeout: n.CommandTimeout,
		keepAlive:      n.KeepAlive,
		sem:            make(chan struct{}, sshMaxSessions),
	}
	if e.knownHosts == "" {
		e.knownHosts = filepath.Join(homeDir(), ".ssh", "known_hosts")
	}
	e.knownHosts = expandHome(e.knownHosts)
	switch e.policy {
	case "":
		e.policy = HostKeyStrict
	case HostKeyStrict, HostKeyAcceptNew:
	default:
		return nil, fmt.Errorf("node %s: %w: host_key_policy %q is not one of %s, %s", n.Name, errs.ErrBadInput, e.policy, HostKeyStrict, HostKeyAcceptNew)
	}
	if e.connectTimeout <= 0 {
		e.connectTimeout = sshDefaultConnectTimeout
	}
	if e.commandTimeout <= 0 {
		e.commandTimeout = proc.DefaultCommandTimeout
	}
	if e.keepAlive == 0 {
		e.keepAlive = sshDefaultKeepAlive
	}
	for _, hop := range append(append([]sshHop(nil), t.jumps...), t.node) {
		a, err := loadAuth(n.Name, hop.identityFiles, n.UseAgent)
		if err != nil {
			return nil, err
		}
		e.auth = append(e.auth, a)
	}
	return e, nil
}

// Name returns the node's inventory name.
func (e *sshExecutor) Name() string { return e.cfg.Name }

// String returns "name (host:port)".
func (e *sshExecutor) String() string { return e.cfg.Name + " (" + e.target.node.addr() + ")" }

// connect opens a connection through the jump hosts to the node.
func (e *sshExecutor) connect(parent context.Context) (*sshConn, error) {
	ctx, cancel := context.WithTimeout(parent, e.connectTimeout)
	defer cancel()
	hops := append(append([]sshHop(nil), e.target.jumps...), e.target.node)
	var clients []*ssh.Client
	closeAll := func() {
		for i := len(clients) - 1; i >= 0; i-- {
			clients[i].Close()
		}
	}
	for i, hop := range hops {
		var raw net.Conn
		var err error
		if i == 0 {
			var d net.Dialer
			raw, err = d.DialContext(ctx, "tcp", hop.addr())
		} else {
			raw, err = clients[i-1].DialContext(ctx, "tcp", hop.addr())
		}
		if err != nil {
			closeAll()
			return nil, e.dialError(parent, ctx, hop, i > 0, err)
		}
		client, err := e.handshake(parent, ctx, raw, hop, e.auth[i])
		if err != nil {
			closeAll()
			return nil, err
		}
		clients = append(clients, client)
	}
	c := &sshConn{
		client: clients[len(clients)-1],
		jumps:  clients[:len(clients)-1],
		dead:   make(chan struct{}),
	}
	go func() {
		c.client.Wait()
		for i := len(c.jumps) - 1; i >= 0; i-- {
			c.jumps[i].Close()
		}
		close(c.dead)
	}()
	if e.keepAlive > 0 {
		go e.keepAliveLoop(c)
	}
	return c, nil
}

func (e *sshExecutor) dialError(parent, ctx context.Context, hop sshHop, viaJump bool, err error) error {
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("%s (%s): connect: %w", hop.label, hop.addr(), perr)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s (%s): %w: no answer within %s (connect_timeout); check the address, that the node is up and that no firewall drops the traffic",
			hop.label, hop.addr(), errs.ErrUnreachable, e.connectTimeout)
	}
	if viaJump {
		return fmt.Errorf("%s (%s): %w: the jump host could not connect to it: %w; check that the node is up and that sshd listens on port %d",
			hop.label, hop.addr(), errs.ErrUnreachable, err, hop.port)
	}
	return fmt.Errorf("%s (%s): %w: %w; check that the node is up, that sshd listens on port %d and that no firewall blocks it",
		hop.label, hop.addr(), errs.ErrUnreachable, err, hop.port)
}

// handshake runs the SSH handshake on raw, bounded by ctx.
func (e *sshExecutor) handshake(parent, ctx context.Context, raw net.Conn, hop sshHop, auth *sshAuth) (*ssh.Client, error) {
	checker := &hostKeyChecker{label: hop.label, file: e.knownHosts, policy: e.policy}
	methods, release := auth.methods()
	defer release()
	cfg := &ssh.ClientConfig{
		User:              hop.user,
		Auth:              methods,
		HostKeyCallback:   checker.callback,
		HostKeyAlgorithms: hostKeyAlgorithms(e.knownHosts, hop.addr()),
		ClientVersion:     "SSH-2.0-caretaker",
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	conn, chans, reqs, err := ssh.NewClientConn(raw, hop.addr(), cfg)
	if !stop() {
		if err == nil {
			conn.Close()
		}
		raw.Close()
		if perr := parent.Err(); perr != nil {
			return nil, fmt.Errorf("%s (%s): connect: %w", hop.label, hop.addr(), perr)
		}
		return nil, fmt.Errorf("%s (%s): %w: the port accepted the connection but the SSH handshake did not finish within %s (connect_timeout); check that an SSH server listens on port %d and is not overloaded",
			hop.label, hop.addr(), errs.ErrUnreachable, e.connectTimeout, hop.port)
	}
	if err != nil {
		raw.Close()
		if checker.err != nil {
			return nil, checker.err
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("%s (%s): %w: user %q was refused with %s; check that the public key is in ~%s/.ssh/authorized_keys on the node and that the user is right",
				hop.label, hop.addr(), errs.ErrAuth, hop.user, auth.describe(), hop.user)
		}
		return nil, fmt.Errorf("%s (%s): %w: ssh handshake: %w; check that an SSH server listens on port %d",
			hop.label, hop.addr(), errs.ErrUnreachable, err, hop.port)
	}
	return ssh.NewClient(conn, chans, reqs), nil
}

// keepAliveLoop sends keepalive@openssh.com requests and drops the
// connection when one stays unanswered for sshKeepAliveMisses intervals.
func (e *sshExecutor) keepAliveLoop(c *sshConn) {
	t := time.NewTicker(e.keepAlive)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		wait := time.NewTimer(sshKeepAliveMisses * e.keepAlive)
		select {
		case err := <-reply:
			wait.Stop()
			if err != nil {
				return
			}
		case <-c.dead:
			wait.Stop()
			return
		case <-wait.C:
			c.mu.Lock()
			c.why = fmt.Errorf("no answer to keepalives for %s", sshKeepAliveMisses*e.keepAlive)
			c.mu.Unlock()
			c.client.Close()
			return
		}
	}
}

// conn returns the live connection, reconnecting if it died.
func (e *sshExecutor) conn(ctx context.Context) (*sshConn, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("node %s: the executor is closed", e.cfg.Name)
	}
	if e.cur != nil && !e.cur.isDead() {
		return e.cur, nil
	}
	c, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	e.cur = c
	return c, nil
}

// drop forgets c so that the next call reconnects.
func (e *sshExecutor) drop(c *sshConn) {
	c.client.Close()
	e.mu.Lock()
	if e.cur == c {
		e.cur = nil
	}
	e.mu.Unlock()
}

// lostError reports a connection that broke under a call.
func (e *sshExecutor) lostError(c *sshConn, what string, err error) error {
	if why := c.reason(); why != nil {
		err = fmt.Errorf("%w (%w)", err, why)
	}
	return fmt.Errorf("node %s (%s): %w: connection lost %s: %w; check the node and the network, then retry",
		e.cfg.Name, e.target.node.addr(), errs.ErrUnreachable, what, err)
}

// newSession opens a session, reconnecting once if the connection turns
// out to be dead.
func (e *sshExecutor) newSession(ctx context.Context) (*ssh.Session, *sshConn, error) {
	for attempt := 0; ; attempt++ {
		c, err := e.conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		s, err := e.openSession(ctx, c)
		if err == nil {
			return s, c, nil
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) || ctx.Err() != nil {
			return nil, nil, err
		}
		e.drop(c)
		if attempt > 0 {
			return nil, nil, e.lostError(c, "opening a session", err)
		}
	}
}

// sessionRetryBudget is how long a refused session is retried. OpenSSH
// frees a session slot a moment after the channel closed, so a new session
// right after a finished one can hit MaxSessions even below the limit.
const sessionRetryBudget = 10 * time.Second

// openSession opens a session on c, retrying while the server refuses it
// for lack of session slots.
func (e *sshExecutor) openSession(ctx context.Context, c *sshConn) (*ssh.Session, error) {
	var deadline time.Time
	backoff := time.Millisecond
	for {
		s, err := c.client.NewSession()
		if err == nil {
			return s, nil
		}
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason == ssh.UnknownChannelType {
			return nil, err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(sessionRetryBudget)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %s (%s): the SSH server keeps refusing new sessions: %w; check MaxSessions in the node's sshd_config",
				e.cfg.Name, e.target.node.addr(), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		if backoff < 50*time.Millisecond {
			backoff *= 2
		}
	}
}

func (e *sshExecutor) acquire(ctx context.Context) error {
	select {
	case e.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case e.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *sshExecutor) release() { <-e.sem }

// useSudo says whether a command goes through sudo: when asked for and the
// login user is not root already.
func (e *sshExecutor) useSudo(c transport.Command) bool {
	return (c.Sudo || e.cfg.Sudo) && e.target.node.user != "root"
}

// Run runs c.Line on the node; see Executor.
func (e *sshExecutor) Run(ctx context.Context, c transport.Command) (transport.Result, error) {
	return e.run(ctx, c, c.Line)
}

// run runs c; display is the line that messages show.
func (e *sshExecutor) run(ctx context.Context, c transport.Command, display string) (transport.Result, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = e.commandTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := e.acquire(ctx); err != nil {
		return transport.Result{}, e.cancelError(parent, display, timeout, err)
	}
	defer e.release()

	sess, conn, err := e.newSession(ctx)
	if err != nil {
		return transport.Result{}, err
	}
	sudo := e.useSudo(c)
	line := c.Line
	if sudo {
		line = proc.SudoLine(line)
	}
	line = pidPrefix + line
	tail := &proc.TailBuffer{}
	var outGate *proc.GateWriter
	if c.Stdout != nil {
		outGate = proc.NewGate(c.Stdout, nil)
		sess.Stdout = outGate
	}
	errGate := proc.NewGate(c.Stderr, tail)
	pids := &pidFilter{w: errGate}
	sess.Stderr = pids
	if c.Stdin != nil {
		// Our own copy, not Session.Stdin: Session.Wait would wait for a
		// reader that never ends even after the command exited.
		w, err := sess.StdinPipe()
		if err != nil {
			sess.Close()
			return transport.Result{}, fmt.Errorf("node %s: command %q: stdin: %w", e.cfg.Name, transport.ShortLine(display, 80), err)
		}
		go func() {
			_, _ = proc.PooledCopy(w, c.Stdin) // a command that exits early closes its stdin
			w.Close()
		}()
	}
	closeGates := func() error {
		errGate.Close()
		if outGate != nil {
			return outGate.Close()
		}
		return nil
	}

	start := time.Now()
	if err := sess.Start(line); err != nil {
		sess.Close()
		closeGates()
		if conn.waitDead(time.Second) {
			return transport.Result{}, e.lostError(conn, "starting "+strconv.Quote(transport.ShortLine(display, 80)), err)
		}
		return transport.Result{}, fmt.Errorf("node %s: start command %q: %w", e.cfg.Name, transport.ShortLine(display, 80), err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()

	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		// The signal ends the command where the server honours it. The
		// session stays open meanwhile: its stderr may still carry the
		// PID line that killRemote needs (on a loaded machine it can
		// arrive after the cancellation).
		sess.Signal(ssh.SIGKILL)
		check := time.NewTimer(killCheck)
		select {
		case <-done:
			check.Stop()
		case <-check.C:
			finished := false
			pid := pids.pid.Load()
			for wait := time.Now().Add(proc.KillGrace); pid == 0 && !finished && time.Now().Before(wait); pid = pids.pid.Load() {
				select {
				case <-done:
					finished = true
				case <-time.After(20 * time.Millisecond):
				}
			}
			if pid > 0 && !finished {
				e.killRemote(conn, pid, sudo)
			}
			sess.Close()
			if !finished {
				select {
				case <-done:
				case <-time.After(proc.KillGrace):
				}
			}
		}
		sess.Close()
		closeGates()
		return transport.Result{ExitCode: -1, Duration: time.Since(start)}, e.cancelError(parent, display, timeout, ctx.Err())
	}
	res := transport.Result{Duration: time.Since(start)}
	sess.Close()
	pids.flush()
	outErr := closeGates()

	var ee *ssh.ExitError
	switch {
	case werr == nil:
		if outErr != nil {
			return res, fmt.Errorf("node %s: command %q: write its output: %w", e.cfg.Name, transport.ShortLine(display, 80), outErr)
		}
		return res, nil
	case errors.As(werr, &ee):
		res.ExitCode = ee.ExitStatus()
		return res, proc.NewExitError(e.cfg.Name, e.target.node.user, display, res.ExitCode, tail.String(), sudo)
	default:
		res.ExitCode = -1
		if conn.waitDead(time.Second) {
			return res, e.lostError(conn, "while running "+strconv.Quote(transport.ShortLine(display, 80))+" (it may or may not have completed)", werr)
		}
		return res, fmt.Errorf("node %s: command %q: %w", e.cfg.Name, transport.ShortLine(display, 80), werr)
	}
}

// cancelError reports a call ended by its context: the caller's
// cancellation, or the command timeout.
func (e *sshExecutor) cancelError(parent context.Context, display string, timeout time.Duration, err error) error {
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("node %s: command %q: %w", e.cfg.Name, transport.ShortLine(display, 80), perr)
	}
	return proc.NewTimeoutError(e.cfg.Name, display, timeout, err)
}

// fileOpError turns the failure of a file snippet into an error for op on
// path; exit code exitNotExist becomes fs.ErrNotExist.
func fileOpError(node, op, path string, err error) error {
	var xe *transport.ExitError
	if errors.As(err, &xe) && xe.Code == proc.ExitNotExist {
		if op == "write" {
			return fmt.Errorf("node %s: write %s: %s: %w", node, path, xe.StderrTail, fs.ErrNotExist)
		}
		return fmt.Errorf("node %s: %s %s: %w", node, op, path, fs.ErrNotExist)
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// ReadFile returns the contents of path on the node (through sudo when the
// node has sudo set).
func (e *sshExecutor) ReadFile(ctx context.Context, path string) ([]byte, error) {
	var out bytes.Buffer
	if _, err := e.run(ctx, transport.Command{Line: proc.ReadFileScript(path), Stdout: &out}, "cat -- "+path); err != nil {
		return nil, fileOpError(e.cfg.Name, "read", path, err)
	}
	return out.Bytes(), nil
}

// WriteFile replaces path atomically; see Executor and writeFileScript.
func (e *sshExecutor) WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) error {
	suffix := proc.TempSuffix()
	_, err := e.run(ctx, transport.Command{Line: proc.WriteFileScript(path, len(data), mode, suffix), Stdin: bytes.NewReader(data)}, "write "+path)
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The shell may have been killed before its trap removed the
		// temporary file.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = e.run(cctx, transport.Command{Line: "rm -f -- " + transport.ShellQuote(proc.TempName(path, suffix))}, "rm temporary file")
		cancel()
	}
	return fileOpError(e.cfg.Name, "write", path, err)
}

// Stat describes path on the node, following symlinks.
func (e *sshExecutor) Stat(ctx context.Context, path string) (transport.FileInfo, error) {
	var out bytes.Buffer
	if _, err := e.run(ctx, transport.Command{Line: proc.StatScript(path), Stdout: &out}, "stat "+path); err != nil {
		return transport.FileInfo{}, fileOpError(e.cfg.Name, "stat", path, err)
	}
	fi, err := proc.ParseStat(path, out.String())
	if err != nil {
		return transport.FileInfo{}, fmt.Errorf("node %s: %w", e.cfg.Name, err)
	}
	return fi, nil
}

// Dial opens a TCP connection from the node to addr (SSH direct-tcpip).
func (e *sshExecutor) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		c, err := e.conn(ctx)
		if err != nil {
			return nil, err
		}
		conn, err := c.client.DialContext(ctx, network, addr)
		if err == nil {
			return conn, nil
		}
		var oce *ssh.OpenChannelError
		switch {
		case errors.As(err, &oce) && oce.Reason == ssh.Prohibited:
			return nil, fmt.Errorf("node %s: dial %s from the node: %w; enable AllowTcpForwarding in the node's sshd_config", e.cfg.Name, addr, err)
		case errors.As(err, &oce) || ctx.Err() != nil:
			return nil, fmt.Errorf("node %s: dial %s from the node: %w", e.cfg.Name, addr, err)
		}
		if !c.waitDead(time.Second) {
			return nil, fmt.Errorf("node %s: dial %s from the node: %w", e.cfg.Name, addr, err)
		}
		e.drop(c)
		if attempt > 0 {
			return nil, e.lostError(c, "dialing "+addr, err)
		}
	}
}

// Close closes the connection; later calls fail.
func (e *sshExecutor) Close() error {
	e.mu.Lock()
	e.closed = true
	c := e.cur
	e.cur = nil
	e.mu.Unlock()
	if c != nil {
		c.client.Close()
		<-c.dead
	}
	return nil
}
