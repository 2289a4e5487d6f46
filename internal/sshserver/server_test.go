package sshserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

type testEnv struct {
	srv    *Server
	client *ssh.Client
}

// start runs a server with cfg adjusted by configure and connects a client
// that pins the server's host key.
func start(t *testing.T, configure func(*Config)) testEnv {
	t.Helper()
	hk, err := GenerateHostKey()
	if err != nil {
		t.Fatal(err)
	}
	ck, err := GenerateHostKey() // an ed25519 key serves as client key too
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addr: "127.0.0.1:0", HostKey: hk, AuthorizedKeys: []ssh.PublicKey{ck.PublicKey()}, Logf: t.Logf}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User:            "anyone",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(ck)},
		HostKeyCallback: ssh.FixedHostKey(hk.PublicKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return testEnv{srv: srv, client: c}
}

func (e testEnv) run(t *testing.T, line string, stdin string) (string, string, error) {
	t.Helper()
	s, err := e.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if stdin != "" {
		s.Stdin = strings.NewReader(stdin)
	}
	err = s.Run(line)
	return out.String(), errb.String(), err
}

func TestExecOutputStatusStdin(t *testing.T) {
	e := start(t, nil)
	out, errs, err := e.run(t, "cat; echo oops >&2; exit 7", "from stdin\n")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("err = %v; want exit status 7", err)
	}
	if out != "from stdin\n" || errs != "oops\n" {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	if out, _, err := e.run(t, "true", ""); err != nil || out != "" {
		t.Fatalf("true: %q %v", out, err)
	}
	if e.srv.Connections() != 1 || e.srv.Sessions() != 2 {
		t.Errorf("connections %d sessions %d; want 1, 2", e.srv.Connections(), e.srv.Sessions())
	}
}

func TestEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	e := start(t, func(c *Config) {
		c.Env = []string{"LAB_NODE=node-3", "PATH=/custom:/usr/bin:/bin"}
		c.Dir = dir
	})
	s, _ := e.client.NewSession()
	defer s.Close()
	if err := s.Setenv("FROM_CLIENT", "yes"); err != nil {
		t.Fatalf("env request refused: %v", err)
	}
	out, err := s.Output(`echo "$LAB_NODE $FROM_CLIENT $PATH $(pwd)"; [ -n "$HOME" ] && echo home`)
	if err != nil {
		t.Fatal(err)
	}
	want := "node-3 yes /custom:/usr/bin:/bin " + dir + "\nhome\n"
	if string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

func TestSignalKillsProcessGroup(t *testing.T) {
	e := start(t, nil)
	pidFile := filepath.Join(t.TempDir(), "pids")
	s, _ := e.client.NewSession()
	defer s.Close()
	// A shell with a background child: both must die.
	if err := s.Start("sleep 60 & echo $$ $! > " + pidFile + "; wait"); err != nil {
		t.Fatal(err)
	}
	pids := waitPIDs(t, pidFile)
	if err := s.Signal(ssh.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "KILL" {
		t.Errorf("Wait = %v; want exit-signal KILL", err)
	}
	for _, pid := range pids {
		waitGone(t, pid)
	}
}

func TestClosedChannelKillsCommand(t *testing.T) {
	e := start(t, nil)
	pidFile := filepath.Join(t.TempDir(), "pids")
	s, _ := e.client.NewSession()
	if err := s.Start("sleep 60 & echo $$ $! > " + pidFile + "; wait"); err != nil {
		t.Fatal(err)
	}
	pids := waitPIDs(t, pidFile)
	s.Close()
	for _, pid := range pids {
		waitGone(t, pid)
	}
}

func TestServerCloseKillsCommandsAndReturns(t *testing.T) {
	e := start(t, nil)
	pidFile := filepath.Join(t.TempDir(), "pids")
	s, _ := e.client.NewSession()
	if err := s.Start("echo $$ > " + pidFile + "; exec sleep 60"); err != nil {
		t.Fatal(err)
	}
	pids := waitPIDs(t, pidFile)
	done := make(chan struct{})
	go func() { e.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	waitGone(t, pids[0])
	if _, err := net.Dial("tcp", e.srv.Addr()); err == nil {
		t.Error("still listening after Close")
	}
}

func TestConcurrentSessions(t *testing.T) {
	e := start(t, nil)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.client.NewSession()
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			out, err := s.Output("sleep 0.2; echo " + strconv.Itoa(i))
			if err != nil || string(out) != strconv.Itoa(i)+"\n" {
				t.Errorf("session %d: %q %v", i, out, err)
			}
		}()
	}
	wg.Wait()
	if e.srv.Connections() != 1 {
		t.Errorf("connections = %d", e.srv.Connections())
	}
}

func TestDirectTCPIP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	e := start(t, func(c *Config) { c.AllowTCPForwarding = true })
	c, err := e.client.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "hello\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo through the tunnel: %q %v", line, err)
	}
	c.Close()

	off := start(t, nil)
	_, err = off.client.Dial("tcp", ln.Addr().String())
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
		t.Fatalf("forwarding disabled: err = %v; want Prohibited", err)
	}
}

func TestUnauthorizedKeyRefused(t *testing.T) {
	hk, _ := GenerateHostKey()
	allowed, _ := GenerateHostKey()
	other, _ := GenerateHostKey()
	srv, err := Start(Config{HostKey: hk, AuthorizedKeys: []ssh.PublicKey{allowed.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User: "x", Auth: []ssh.AuthMethod{ssh.PublicKeys(other)}, HostKeyCallback: ssh.FixedHostKey(hk.PublicKey()),
	})
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("err = %v; want an authentication failure", err)
	}
}

func TestKeepaliveAnswered(t *testing.T) {
	e := start(t, nil)
	// Any reply proves liveness; OpenSSH answers failure too.
	if _, _, err := e.client.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatal(err)
	}
}

func TestAuthorizedKeyLine(t *testing.T) {
	k, _ := GenerateHostKey()
	line := AuthorizedKey(k.PublicKey())
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || !bytes.Equal(pk.Marshal(), k.PublicKey().Marshal()) || strings.Contains(line, "\n") {
		t.Fatalf("AuthorizedKey = %q, %v", line, err)
	}
}

func waitPIDs(t *testing.T, file string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(file)
		if strings.HasSuffix(string(b), "\n") {
			var pids []int
			for _, f := range strings.Fields(string(b)) {
				p, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, p)
			}
			return pids
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("command did not write its pids")
	return nil
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("process %d still running", pid)
}

func TestBackgroundOutput(t *testing.T) {
	// By default, like OpenSSH, the session lasts while a background
	// process keeps stdout open, and its output arrives.
	e := start(t, nil)
	out, _, err := e.run(t, "(sleep 0.3; echo late) & echo early", "")
	if err != nil || out != "early\nlate\n" {
		t.Fatalf("default: %q %v; want early and late", out, err)
	}
	// With OutputWaitDelay the session ends that long after the command.
	e = start(t, func(c *Config) { c.OutputWaitDelay = 100 * time.Millisecond })
	begin := time.Now()
	out, _, err = e.run(t, "(sleep 5; echo late) & echo early", "")
	if err != nil || out != "early\n" {
		t.Fatalf("with OutputWaitDelay: %q %v; want only early", out, err)
	}
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("session took %v despite OutputWaitDelay", d)
	}
}

// With Users the server checks user names as sshd does and runs commands
// as the user (with the user's shell, home and PATH); with Chroot inside
// that root. Running as another user needs root.
func TestUsersAndChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running commands as another user needs root")
	}
	hk, _ := GenerateHostKey()
	key, _ := GenerateHostKey()
	other, _ := GenerateHostKey()
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + d); err == nil {
			if err := os.Symlink(target, filepath.Join(root, d)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The chroot needs /usr: bind the host's (and undo it afterwards).
	if err := os.Mkdir(filepath.Join(root, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscallBindMount("/usr", filepath.Join(root, "usr")); err != nil {
		t.Skipf("bind-mount /usr for the chroot: %v", err)
	}
	t.Cleanup(func() { syscallUnmount(filepath.Join(root, "usr")) })
	if err := os.MkdirAll(filepath.Join(root, "home", "nobody"), 0o755); err != nil {
		t.Fatal(err)
	}
	users := map[string]*User{
		"nobody": {Name: "nobody", UID: 65534, GID: 65534, Home: "/home/nobody", Shell: "/bin/sh", AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}},
	}
	srv, err := Start(Config{HostKey: hk, Chroot: root, Users: func(name string) (*User, error) {
		if u, ok := users[name]; ok {
			return u, nil
		}
		return nil, errors.New("no such user")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dial := func(user string, k ssh.Signer) (*ssh.Client, error) {
		return ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(k)}, HostKeyCallback: ssh.FixedHostKey(hk.PublicKey())})
	}
	for _, c := range []struct {
		user string
		key  ssh.Signer
	}{{"root", key}, {"nobody", other}} {
		if cli, err := dial(c.user, c.key); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			if cli != nil {
				cli.Close()
			}
			t.Errorf("login as %s: %v; want an authentication failure", c.user, err)
		}
	}
	cli, err := dial("nobody", key)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, err := cli.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput("id -u; pwd; echo $HOME $USER; ls /")
	if err != nil {
		t.Fatalf("command: %v\n%s", err, out)
	}
	if got := string(out); !strings.HasPrefix(got, "65534\n/home/nobody\n/home/nobody nobody\n") || strings.Contains(got, "etc\n") {
		t.Errorf("output %q: want uid 65534 in /home/nobody, in the chroot (no /etc there)", got)
	}
}
