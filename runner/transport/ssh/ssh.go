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
		e.killOnCancel(sess, conn, pids, done, sudo)
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
