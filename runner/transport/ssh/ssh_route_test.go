package ssh

// How the connection is made: host keys (changed, unknown, accept-new),
// jump hosts, ssh_config entries and the SSH agent.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/caretaker/caretaker/internal/sshserver"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

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
