package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/caretaker/caretaker/internal/sshserver"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/internal/proc"
	"github.com/caretaker/caretaker/runner/transport/local"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

func dialTest(t testing.TB, n *inventory.Node) transport.Executor {
	t.Helper()
	e, err := Dial(context.Background(), n)
	if err != nil {
		t.Fatalf("DialSSH: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestSSHExecutor(t *testing.T) {
	transporttest.ExecutorSuite(t, func(t *testing.T) transport.Executor {
		n, _ := transporttest.StartNode(t, "server-1")
		return dialTest(t, n)
	})
}

func TestSSHOneConnectionReused(t *testing.T) {
	n, srv := transporttest.StartNode(t, "server-1")
	e := dialTest(t, n)
	ctx := context.Background()
	for i := range 50 {
		var out bytes.Buffer
		if _, err := e.Run(ctx, transport.Command{Line: "echo " + strconv.Itoa(i), Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() != strconv.Itoa(i)+"\n" {
			t.Fatalf("command %d printed %q", i, out.String())
		}
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := e.WriteFile(ctx, p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReadFile(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := srv.Connections(); got != 1 {
		t.Errorf("server saw %d connections, want 1", got)
	}
	if got := srv.Sessions(); got != 52 {
		t.Errorf("server saw %d sessions, want 52", got)
	}
	if s := e.(fmt.Stringer).String(); s != "server-1 ("+srv.Addr()+")" {
		t.Errorf("String() = %q", s)
	}
}

// fakeSudo writes a sudo script into a new bin dir: it records its
// arguments (one per line) into log, then runs them without "-n".
func fakeSudo(t *testing.T, log string) string {
	t.Helper()
	bin := t.TempDir()
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >> " + transport.ShellQuote(log) + "\n[ \"$1\" = -n ] || { echo 'sudo: -n missing' >&2; exit 90; }\nshift\nexec \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "sudo"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestSSHSudo(t *testing.T) {
	log := filepath.Join(t.TempDir(), "sudo.log")
	bin := fakeSudo(t, log)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) {
		c.Env = []string{"PATH=" + bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	})
	ctx := context.Background()

	t.Run("Command.Sudo", func(t *testing.T) {
		os.Remove(log)
		e := dialTest(t, transporttest.NodeFor(t, "n1", srv))
		var out bytes.Buffer
		if _, err := e.Run(ctx, transport.Command{Line: "echo \"it's\" \"$0\"", Sudo: true, Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() != "it's sh\n" {
			t.Errorf("output %q", out.String())
		}
		b, _ := os.ReadFile(log)
		if want := "-n\nsh\n-c\necho \"it's\" \"$0\"\n"; string(b) != want {
			t.Errorf("sudo got args %q, want %q", b, want)
		}
		os.Remove(log)
		if _, err := e.Run(ctx, transport.Command{Line: "true"}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(log); err == nil {
			t.Error("sudo used for a command without Sudo")
		}
	})

	t.Run("node sudo applies to file operations", func(t *testing.T) {
		os.Remove(log)
		n := transporttest.NodeFor(t, "n2", srv)
		n.Sudo = true
		e := dialTest(t, n)
		p := filepath.Join(t.TempDir(), "f")
		if err := e.WriteFile(ctx, p, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := e.ReadFile(ctx, p); err != nil || string(b) != "data" {
			t.Fatalf("ReadFile = %q, %v", b, err)
		}
		if _, err := e.Stat(ctx, p); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(log)
		if c := strings.Count(string(b), "-n\nsh\n-c\n"); c != 3 {
			t.Errorf("sudo called %d times for write, read, stat; want 3; log:\n%s", c, b)
		}
	})

	t.Run("root login needs no sudo", func(t *testing.T) {
		os.Remove(log)
		n := transporttest.NodeFor(t, "n3", srv)
		n.User = "root"
		n.Sudo = true
		e := dialTest(t, n)
		if _, err := e.Run(ctx, transport.Command{Line: "true", Sudo: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(log); err == nil {
			t.Error("sudo used although the login user is root")
		}
	})
}

func TestSSHSudoPasswordPrompt(t *testing.T) {
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"), 0o755)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} })
	n := transporttest.NodeFor(t, "server-2", srv)
	n.Sudo = true
	e := dialTest(t, n)
	_, err := e.Run(context.Background(), transport.Command{Line: "systemctl restart k3s"})
	var xe *transport.ExitError
	if !errors.As(err, &xe) || xe.Code != 1 {
		t.Fatalf("err = %v; want an ExitError with code 1", err)
	}
	for _, want := range []string{"server-2", "a password is required", "passwordless sudo", "caretaker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = e.ReadFile(context.Background(), "/etc/hostname")
	if err == nil || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "passwordless sudo") {
		t.Errorf("ReadFile through a password-asking sudo = %v", err)
	}
}

func TestSSHWriteFailureLeavesOriginal(t *testing.T) {
	// mv fails on this node: the temporary file must go and the original
	// must stay as it was.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "mv"), []byte("#!/bin/sh\necho 'mv: simulated failure' >&2\nexit 1\n"), 0o755)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} })
	e := dialTest(t, transporttest.NodeFor(t, "server-1", srv))
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("original\n"), 0o640)
	err := e.WriteFile(context.Background(), p, []byte("replacement\n"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "simulated failure") || !strings.Contains(err.Error(), p) {
		t.Fatalf("WriteFile = %v; want the mv failure, naming the path", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "original\n" {
		t.Errorf("original changed to %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("original mode changed to %v", st.Mode())
	}
	transporttest.AssertNoTempFiles(t, dir)
}

func TestSSHWriteCancelledRemovesTemp(t *testing.T) {
	// cat stalls on this node, so the write is cancelled while the
	// temporary file exists; it must be gone afterwards.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "cat"), []byte("#!/bin/sh\n/bin/cat >/dev/null\nexec sleep 60\n"), 0o755)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} })
	e := dialTest(t, transporttest.NodeFor(t, "server-1", srv))
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("original"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.WriteFile(ctx, p, []byte("new"), 0o600) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteFile = %v; want context.Canceled", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "original" {
		t.Errorf("original changed to %q", b)
	}
	transporttest.AssertNoTempFiles(t, dir)
}

func TestSSHHostKeyChanged(t *testing.T) {
	for _, policy := range []inventory.HostKeyPolicy{inventory.HostKeyStrict, inventory.HostKeyAcceptNew} {
		t.Run(string(policy), func(t *testing.T) {
			n, srv := transporttest.StartNode(t, "server-1")
			n.SSH.HostKeyPolicy = policy
			// known_hosts pins another key for this address, on line 2.
			other, _ := sshserver.GenerateHostKey()
			os.WriteFile(n.SSH.KnownHosts, []byte("# comment\n"), 0o600)
			transporttest.AppendKnownHost(t, n.SSH.KnownHosts, srv.Addr(), other.PublicKey())
			before, _ := os.ReadFile(n.SSH.KnownHosts)

			_, err := Dial(context.Background(), n)
			if !errors.Is(err, errspkg.ErrHostKey) {
				t.Fatalf("err = %v; want ErrHostKey", err)
			}
			for _, want := range []string{
				"server-1", srv.Addr(), n.SSH.KnownHosts, "line 2", "man-in-the-middle",
				ssh.FingerprintSHA256(other.PublicKey()), ssh.FingerprintSHA256(srv.HostKey()),
			} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if after, _ := os.ReadFile(n.SSH.KnownHosts); !bytes.Equal(before, after) {
				t.Errorf("known_hosts was modified:\n%s", after)
			}
			if srv.Sessions() != 0 {
				t.Errorf("a session was opened on a server with a changed key")
			}
		})
	}
}

func TestSSHHostKeyUnknownStrict(t *testing.T) {
	n, srv := transporttest.StartNode(t, "server-1")
	os.WriteFile(n.SSH.KnownHosts, nil, 0o600)
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrHostKey) {
		t.Fatalf("err = %v; want ErrHostKey", err)
	}
	for _, want := range []string{"server-1", srv.Addr(), n.SSH.KnownHosts, ssh.FingerprintSHA256(srv.HostKey()), "accept-new", "ssh-keyscan"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// a missing file is the same as an empty one
	n.SSH.KnownHosts = filepath.Join(t.TempDir(), "absent")
	_, err = Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrHostKey) || !strings.Contains(err.Error(), "the known_hosts file "+n.SSH.KnownHosts+" does not exist") {
		t.Fatalf("missing known_hosts: err = %v; want ErrHostKey saying the file does not exist", err)
	}
	if _, err := os.Stat(n.SSH.KnownHosts); err == nil {
		t.Error("strict mode created known_hosts")
	}
	// a line that does not parse is named, not silently ignored
	n.SSH.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(n.SSH.KnownHosts, []byte("# comment\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"+srv.Addr()+" ssh-ed25519 AAAAnot-base64\n@bogus x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), n)
	if !errors.Is(err, errspkg.ErrHostKey) || !strings.Contains(err.Error(), "2 line(s) that do not parse and were ignored: line 3:") || !strings.Contains(err.Error(), "line 4: unknown marker @bogus") {
		t.Fatalf("malformed known_hosts line: err = %v; want it named", err)
	}
}

func TestSSHHostKeyAcceptNew(t *testing.T) {
	kh := filepath.Join(t.TempDir(), "ssh", "known_hosts") // the directory does not exist yet
	// Several nodes met for the first time at once, all recorded in one file.
	const nodes = 6
	var wg sync.WaitGroup
	servers := make([]*sshserver.Server, nodes)
	errs := make([]error, nodes)
	for i := range nodes {
		n, srv := transporttest.StartNode(t, "node-"+strconv.Itoa(i))
		servers[i] = srv
		n.SSH.KnownHosts = kh
		n.SSH.HostKeyPolicy = inventory.HostKeyAcceptNew
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := Dial(context.Background(), n)
			if err == nil {
				_, err = e.Run(context.Background(), transport.Command{Line: "true"})
				e.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
	st, err := os.Stat(kh)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %v, want 0600", st.Mode())
	}
	b, _ := os.ReadFile(kh)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != nodes {
		t.Fatalf("known_hosts has %d lines, want %d:\n%s", len(lines), nodes, b)
	}
	// Each recorded key is now trusted under strict, and only once.
	for i, srv := range servers {
		n := transporttest.NodeFor(t, "again-"+strconv.Itoa(i), srv)
		n.SSH.KnownHosts = kh
		dialTest(t, n)
		n.SSH.HostKeyPolicy = inventory.HostKeyAcceptNew
		dialTest(t, n)
	}
	if b2, _ := os.ReadFile(kh); !bytes.Equal(b, b2) {
		t.Errorf("known keys were recorded again:\n%s", b2)
	}
}

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

func TestSSHJumpHost(t *testing.T) {
	jump := transporttest.StartServer(t, nil)
	target := transporttest.StartServer(t, func(c *sshserver.Config) { c.AllowTCPForwarding = false })
	n := transporttest.NodeFor(t, "server-1", target)
	transporttest.AppendKnownHost(t, n.SSH.KnownHosts, jump.Addr(), jump.HostKey())
	n.SSH.JumpHost = "bastion@" + jump.Addr()
	e := dialTest(t, n)
	var out bytes.Buffer
	if _, err := e.Run(context.Background(), transport.Command{Line: "echo through", Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "through\n" || jump.Connections() != 1 || target.Connections() != 1 || jump.Sessions() != 0 {
		t.Errorf("out %q, jump conns %d sessions %d, target conns %d", out.String(), jump.Connections(), jump.Sessions(), target.Connections())
	}

	// The jump host's key is checked too.
	n2 := transporttest.NodeFor(t, "server-2", target)
	n2.SSH.JumpHost = jump.Addr()
	_, err := Dial(context.Background(), n2)
	if !errors.Is(err, errspkg.ErrHostKey) || !strings.Contains(err.Error(), "jump host") || !strings.Contains(err.Error(), "server-2") {
		t.Errorf("unknown jump host key: err = %v", err)
	}
}

func TestSSHConfigHostEntry(t *testing.T) {
	srv := transporttest.StartServer(t, nil)
	n := transporttest.NodeFor(t, "server-1", srv)
	host, port, _ := net.SplitHostPort(srv.Addr())
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("Host other\n  HostName 192.0.2.1\n\nHost k3s-*\n  HostName %s\n  Port %s\n  User ops\n  IdentityFile %s\n", host, port, n.SSH.IdentityFiles[0])), 0o600)
	n.Address, n.Port, n.User, n.SSH.IdentityFiles = "", 0, "", nil
	n.SSHHost = "k3s-a"
	n.SSH.ConfigFile = cfg
	e := dialTest(t, n)
	if _, err := e.Run(context.Background(), transport.Command{Line: "true"}); err != nil {
		t.Fatal(err)
	}
	ex := e.(*sshExecutor)
	if ex.target.node.user != "ops" || ex.target.node.addr() != srv.Addr() {
		t.Errorf("target = %+v", ex.target.node)
	}
	// The inventory wins over the file.
	n.User = "inventory-user"
	tgt, err := resolveTarget(configOf(n))
	if err != nil || tgt.node.user != "inventory-user" {
		t.Errorf("resolveTarget = %+v, %v", tgt.node, err)
	}
	// A config file named in the inventory must exist.
	n.SSH.ConfigFile = filepath.Join(t.TempDir(), "missing")
	if _, err := Dial(context.Background(), n); !errors.Is(err, errspkg.ErrBadInput) {
		t.Errorf("missing ssh config: err = %v; want ErrBadInput", err)
	}
}

func TestSSHConfigProxyJump(t *testing.T) {
	jump := transporttest.StartServer(t, nil)
	target := transporttest.StartServer(t, nil)
	n := transporttest.NodeFor(t, "server-1", target)
	transporttest.AppendKnownHost(t, n.SSH.KnownHosts, jump.Addr(), jump.HostKey())
	jh, jp, _ := net.SplitHostPort(jump.Addr())
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("Host node1\n  ProxyJump bastion\n\nHost bastion\n  HostName %s\n  Port %s\n", jh, jp)), 0o600)
	n.SSHHost = "node1"
	n.SSH.ConfigFile = cfg
	dialTest(t, n)
	if jump.Connections() != 1 || target.Connections() != 1 {
		t.Errorf("jump conns %d, target conns %d; want 1, 1", jump.Connections(), target.Connections())
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

func TestSSHOutputWriterErrorDoesNotBreakTheCommand(t *testing.T) {
	n, _ := transporttest.StartNode(t, "server-1")
	e := dialTest(t, n)
	p := filepath.Join(t.TempDir(), "after")
	_, err := e.Run(context.Background(), transport.Command{Line: "seq 1 20000; touch " + transport.ShellQuote(p), Stdout: failingWriter{}})
	if err == nil || !strings.Contains(err.Error(), "write its output") {
		t.Errorf("err = %v; want the writer's error", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("the command did not run to its end: %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteFileScriptQuoting(t *testing.T) {
	// The script for a hostile path still targets exactly that path.
	e := local.New("local")
	dir := t.TempDir()
	p := filepath.Join(dir, "a b'c$(touch x)\"d")
	var stderr bytes.Buffer
	_, err := e.Run(context.Background(), transport.Command{Line: proc.WriteFileScript(p, 3, 0o600, "abc"), Stdin: strings.NewReader("xyz"), Stderr: &stderr})
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "xyz" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir has %d entries, want 1", len(ents))
	}
	// A short write (the connection dropped) never replaces the file.
	_, err = e.Run(context.Background(), transport.Command{Line: proc.WriteFileScript(p, 10, 0o600, "abd"), Stdin: strings.NewReader("short")})
	if err == nil {
		t.Fatal("short write succeeded")
	}
	if b, _ := os.ReadFile(p); string(b) != "xyz" {
		t.Errorf("file replaced by a short write: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary file left after a short write")
	}
}

func TestSSHAgent(t *testing.T) {
	// A key held only by ssh-agent (an in-process one on a unix socket).
	priv, err := transporttest.ClientKey()
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	t.Setenv("HOME", t.TempDir()) // no default keys in ~/.ssh

	n, _ := transporttest.StartNode(t, "server-1")
	n.SSH.IdentityFiles = nil
	n.SSH.UseAgent = true
	e := dialTest(t, n)
	if _, err := e.Run(context.Background(), transport.Command{Line: "true"}); err != nil {
		t.Fatal(err)
	}

	// Without the agent and without keys there is nothing to offer.
	n.SSH.UseAgent = false
	if _, err := Dial(context.Background(), n); !errors.Is(err, errspkg.ErrAuth) || !strings.Contains(err.Error(), "identity_files") {
		t.Errorf("no keys: err = %v; want ErrAuth telling to set identity_files", err)
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
