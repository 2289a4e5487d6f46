package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/internal/proc"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

// These tests run the executor against a real OpenSSH sshd on 127.0.0.1.
// They need /usr/sbin/sshd (Debian: apt-get install openssh-server); set
// CARETAKER_SKIP_OPENSSH=1 to skip them on a machine without it.

const sshdPath = "/usr/sbin/sshd"

type openSSHD struct {
	addr    string
	port    int
	hostKey ssh.PublicKey
	user    string
}

// startOpenSSHD starts sshd -D with its own configuration, host key and
// authorized_keys (the test client key) in a temp dir. As root it runs in a
// private mount namespace with an empty /root, so that root's ~/.bashrc
// (which may run slow tools on every command) is not read.
func startOpenSSHD(t *testing.T) *openSSHD {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		const msg = "needs openssh-server: apt-get install openssh-server (or set CARETAKER_SKIP_OPENSSH=1)"
		if os.Getenv("CARETAKER_SKIP_OPENSSH") == "1" {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	if _, err := os.Stat("/run/sshd"); err != nil {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshd needs its privilege separation directory /run/sshd and it cannot be created (%v): run the tests as root or create it", err)
		}
	}
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hostKeyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, _ := ssh.NewPublicKey(priv.Public())
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, ssh.MarshalAuthorizedKey(transporttest.ClientPublicKey(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyRoot := filepath.Join(dir, "root")
	os.Mkdir(emptyRoot, 0o700)
	root := os.Geteuid() == 0

	var lastErr string
	for attempt := 0; attempt < 3; attempt++ {
		port := sshdFreePort(t)
		cfgFile := filepath.Join(dir, "sshd_config")
		logFile := filepath.Join(dir, "sshd.log")
		pidFile := filepath.Join(dir, "sshd.pid")
		os.Remove(pidFile)
		cfg := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxStartups 100:30:200
LogLevel VERBOSE
`, port, hostKeyFile, pidFile, authKeys)
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var cmd *exec.Cmd
		if root {
			cmd = exec.Command("/bin/sh", "-c", "mount --bind "+transport.ShellQuote(emptyRoot)+" /root && exec "+sshdPath+" -D -f "+transport.ShellQuote(cfgFile)+" -E "+transport.ShellQuote(logFile))
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true}
		} else {
			cmd = exec.Command(sshdPath, "-D", "-f", cfgFile, "-E", logFile)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		ready := false
		deadline := time.Now().Add(10 * time.Second)
	wait:
		for time.Now().Before(deadline) {
			select {
			case err := <-exited:
				log, _ := os.ReadFile(logFile)
				lastErr = fmt.Sprintf("sshd exited (%v): %s %s", err, stderr.String(), log)
				exited <- err
				break wait
			default:
			}
			if _, err := os.Stat(pidFile); err == nil {
				ready = true
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !ready {
			stop()
			if lastErr == "" {
				log, _ := os.ReadFile(logFile)
				lastErr = "sshd did not write its pid file within 10s: " + string(log)
			}
			if strings.Contains(lastErr, "Address already in use") {
				continue
			}
			break
		}
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				log, _ := os.ReadFile(logFile)
				t.Logf("sshd log:\n%s", log)
			}
		})
		user := "root"
		if !root {
			user = proc.LocalUser()
		}
		return &openSSHD{addr: fmt.Sprintf("127.0.0.1:%d", port), port: port, hostKey: hostPub, user: user}
	}
	hint := ""
	if !root {
		hint = " (the tests are not running as root: sshd as an ordinary user may refuse to start or to log in; run them as root, as CI does)"
	}
	t.Fatalf("could not start OpenSSH sshd%s: %s", hint, lastErr)
	return nil
}

func sshdFreePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// node returns a Node for this sshd with a known_hosts file pinning its key.
func (s *openSSHD) node(t testing.TB, name string) *inventory.Node {
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	transporttest.AppendKnownHost(t, kh, s.addr, s.hostKey)
	return &inventory.Node{
		Name:    name,
		Cluster: "openssh",
		Address: "127.0.0.1",
		Port:    s.port,
		User:    s.user,
		Role:    inventory.RoleServer,
		SSH: inventory.SSHSettings{
			IdentityFiles:  []string{transporttest.WriteIdentity(t, dir)},
			KnownHosts:     kh,
			HostKeyPolicy:  inventory.HostKeyStrict,
			ConnectTimeout: inventory.Duration(10 * time.Second),
			CommandTimeout: inventory.Duration(time.Minute),
		},
	}
}

func TestOpenSSH(t *testing.T) {
	sshd := startOpenSSHD(t)

	t.Run("executor", func(t *testing.T) {
		transporttest.ExecutorSuite(t, func(t *testing.T) transport.Executor {
			return dialTest(t, sshd.node(t, "openssh-1"))
		})
	})

	t.Run("one connection reused", func(t *testing.T) {
		e := dialTest(t, sshd.node(t, "openssh-1"))
		seen := map[string]int{}
		for range 20 {
			var out bytes.Buffer
			if _, err := e.Run(context.Background(), transport.Command{Line: "echo $SSH_CLIENT", Stdout: &out}); err != nil {
				t.Fatal(err)
			}
			seen[strings.TrimSpace(out.String())]++
		}
		if len(seen) != 1 {
			t.Errorf("commands came from %d client connections, want 1: %v", len(seen), seen)
		}
	})

	t.Run("unknown host key refused", func(t *testing.T) {
		n := sshd.node(t, "openssh-2")
		os.WriteFile(n.SSH.KnownHosts, nil, 0o600)
		_, err := Dial(context.Background(), n)
		if !errors.Is(err, errs.ErrHostKey) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(sshd.hostKey)) {
			t.Fatalf("err = %v; want ErrHostKey with the fingerprint", err)
		}
	})

	t.Run("changed host key refused", func(t *testing.T) {
		n := sshd.node(t, "openssh-3")
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		op, _ := ssh.NewPublicKey(other.Public())
		os.WriteFile(n.SSH.KnownHosts, nil, 0o600)
		transporttest.AppendKnownHost(t, n.SSH.KnownHosts, sshd.addr, op)
		_, err := Dial(context.Background(), n)
		if !errors.Is(err, errs.ErrHostKey) || !strings.Contains(err.Error(), "man-in-the-middle") || !strings.Contains(err.Error(), "openssh-3") {
			t.Fatalf("err = %v; want a changed-key error", err)
		}
	})

	t.Run("wrong user refused", func(t *testing.T) {
		n := sshd.node(t, "openssh-4")
		n.User = "nobody"
		_, err := Dial(context.Background(), n)
		if !errors.Is(err, errs.ErrAuth) || !strings.Contains(err.Error(), "openssh-4") {
			t.Fatalf("err = %v; want ErrAuth", err)
		}
	})
}
