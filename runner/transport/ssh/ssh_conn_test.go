package ssh

// Connections that fail or die: unreachable addresses, refused
// authentication and forwarding, keepalives and reconnects.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/internal/sshserver"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

func TestSSHUnreachableClosedPort(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	n, _ := transporttest.StartNode(t, "server-9")
	n.Port = addr.Port
	start := time.Now()
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrUnreachable) {
		t.Fatalf("err = %v; want ErrUnreachable", err)
	}
	for _, want := range []string{"server-9", addr.String(), "refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %v for a refused connection", d)
	}
}

func TestSSHUnreachableSilentListener(t *testing.T) {
	// A port that accepts TCP but never speaks SSH: the connect timeout
	// must end the attempt.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	n, _ := transporttest.StartNode(t, "server-7")
	n.Port = ln.Addr().(*net.TCPAddr).Port
	n.SSH.ConnectTimeout = inventory.Duration(300 * time.Millisecond)
	start := time.Now()
	_, err = Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrUnreachable) || !strings.Contains(err.Error(), "server-7") || !strings.Contains(err.Error(), "300ms") {
		t.Fatalf("err = %v; want ErrUnreachable naming the node and the timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 300ms connect timeout", d)
	}
	// The caller's context ends it too, with the context's error.
	n.SSH.ConnectTimeout = inventory.Duration(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, n); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("with a cancelled ctx: err = %v; want context.DeadlineExceeded", err)
	}
}

func TestSSHAuthRefused(t *testing.T) {
	other, _ := sshserver.GenerateHostKey() // any key the server does not know
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.AuthorizedKeys = []ssh.PublicKey{other.PublicKey()} })
	n := transporttest.NodeFor(t, "server-3", srv)
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrAuth) {
		t.Fatalf("err = %v; want ErrAuth", err)
	}
	for _, want := range []string{"server-3", srv.Addr(), `"caretaker"`, n.SSH.IdentityFiles[0], "authorized_keys"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	n.SSH.IdentityFiles = []string{filepath.Join(t.TempDir(), "missing-key")}
	if _, err := Dial(context.Background(), n); !errors.Is(err, errspkg.ErrAuth) || !strings.Contains(err.Error(), "missing-key") {
		t.Errorf("missing identity file: err = %v", err)
	}
}

func TestSSHDialProhibited(t *testing.T) {
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.AllowTCPForwarding = false })
	e := dialTest(t, transporttest.NodeFor(t, "server-1", srv))
	_, err := e.Dial(context.Background(), "tcp", transporttest.StartEcho(t))
	if err == nil || !strings.Contains(err.Error(), "AllowTcpForwarding") || !strings.Contains(err.Error(), "server-1") {
		t.Fatalf("err = %v; want advice about AllowTcpForwarding", err)
	}
}

// freezeProxy forwards TCP to target; freeze stops forwarding without
// closing (a dead network), kill closes every connection.
type freezeProxy struct {
	ln     net.Listener
	frozen atomic.Bool
	conns  atomic.Int64
	mu     sync.Mutex
	open   []net.Conn
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.kill() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.open = append(p.open, c, u)
			p.mu.Unlock()
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	return p
}

func (p *freezeProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() {
			time.Sleep(5 * time.Millisecond)
			if p.isClosed(dst) {
				return
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *freezeProxy) isClosed(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.open {
		if o == c {
			return false
		}
	}
	return true
}

func (p *freezeProxy) kill() {
	p.mu.Lock()
	open := p.open
	p.open = nil
	p.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

func TestSSHKeepAliveDropsDeadConnection(t *testing.T) {
	n, srv := transporttest.StartNode(t, "server-1")
	proxy := startFreezeProxy(t, srv.Addr())
	transporttest.AppendKnownHost(t, n.SSH.KnownHosts, proxy.ln.Addr().String(), srv.HostKey())
	n.Port = proxy.ln.Addr().(*net.TCPAddr).Port
	n.SSH.KeepAlive = inventory.Duration(50 * time.Millisecond)
	e := dialTest(t, n)
	ctx := context.Background()
	if _, err := e.Run(ctx, transport.Command{Line: "true"}); err != nil {
		t.Fatal(err)
	}
	// The network dies under a running command: the keepalive notices and
	// the call fails as unreachable instead of hanging for its timeout.
	errc := make(chan error, 1)
	go func() {
		_, err := e.Run(ctx, transport.Command{Line: "sleep 1; echo done", Timeout: time.Minute})
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	proxy.frozen.Store(true)
	select {
	case err := <-errc:
		if !errors.Is(err, errspkg.ErrUnreachable) || !strings.Contains(err.Error(), "keepalive") || !strings.Contains(err.Error(), "server-1") {
			t.Errorf("err = %v; want ErrUnreachable about keepalives", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the call hung on a dead connection")
	}
	// Network back: the next call reconnects.
	proxy.kill()
	proxy.frozen.Store(false)
	if _, err := e.Run(ctx, transport.Command{Line: "true"}); err != nil {
		t.Fatalf("after reconnect: %v", err)
	}
	if got := proxy.conns.Load(); got != 2 {
		t.Errorf("proxy saw %d connections, want 2", got)
	}
}

func TestSSHReconnectAfterServerDropsConnection(t *testing.T) {
	n, srv := transporttest.StartNode(t, "server-1")
	proxy := startFreezeProxy(t, srv.Addr())
	transporttest.AppendKnownHost(t, n.SSH.KnownHosts, proxy.ln.Addr().String(), srv.HostKey())
	n.Port = proxy.ln.Addr().(*net.TCPAddr).Port
	e := dialTest(t, n)
	proxy.kill()
	var out bytes.Buffer
	if _, err := e.Run(context.Background(), transport.Command{Line: "echo back", Stdout: &out}); err != nil || out.String() != "back\n" {
		t.Fatalf("Run after the connection dropped = %q, %v", out.String(), err)
	}
	if _, err := e.Dial(context.Background(), "tcp", transporttest.StartEcho(t)); err != nil {
		t.Fatal(err)
	}
}

func TestSSHUnreachableBlackholeAddress(t *testing.T) {
	// 192.0.2.1 (TEST-NET-1) is never routed: the dial either fails at
	// once or gets no answer; either way the node is reported, in bounded
	// time, by name.
	n, _ := transporttest.StartNode(t, "server-8")
	n.Address, n.Port = "192.0.2.1", 22
	n.SSH.ConnectTimeout = inventory.Duration(300 * time.Millisecond)
	start := time.Now()
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrUnreachable) || !strings.Contains(err.Error(), "server-8") || !strings.Contains(err.Error(), "192.0.2.1:22") {
		t.Fatalf("err = %v; want ErrUnreachable naming node and address", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 300ms connect timeout", d)
	}
}
