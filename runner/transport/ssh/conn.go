package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/errs"
)

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
