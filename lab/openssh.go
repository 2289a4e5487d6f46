package lab

import (
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/lab/shim"
)

// sshdPath is Debian's OpenSSH server.
const sshdPath = "/usr/sbin/sshd"

// ErrOpenSSHUnavailable says openssh mode cannot run here.
var ErrOpenSSHUnavailable = errors.New("the openssh lab mode needs root and openssh-server (apt-get install openssh-server)")

// checkOpenSSH verifies the prerequisites of openssh mode.
func checkOpenSSH() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: %w: not running as root", ErrOpenSSHUnavailable)
	}
	if _, err := os.Stat(sshdPath); err != nil {
		return fmt.Errorf("lab: %w: %s is missing", ErrOpenSSHUnavailable, sshdPath)
	}
	return nil
}

// openSSH runs one real sshd per node in the keeper's mount namespace,
// chrooted into the node's tree, in a UTS namespace of its own (issue 3
// "--ssh openssh"; recipe in docs/openssh-nodes.md).
type openSSH struct {
	l     *Lab
	procs []*sshdProc
}

type sshdProc struct {
	n     *node
	cmd   *exec.Cmd
	utsNS string // "uts:[4026532...]": every process of the node has it
	exit  chan struct{}
}

func startOpenSSH(ctx context.Context, l *Lab) (*openSSH, error) {
	o := &openSSH{l: l}
	for _, n := range l.nodes {
		p, err := o.startNode(n)
		if err != nil {
			return o, err
		}
		o.procs = append(o.procs, p)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range o.procs {
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(p.n.ip, "22"), 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.exit:
				log, _ := os.ReadFile(filepath.Join(p.n.runDir(), "ssh", "sshd.log"))
				return o, fmt.Errorf("lab: %s: sshd exited while starting: %s", p.n.name, strings.TrimSpace(string(log)))
			case <-ctx.Done():
				return o, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return o, fmt.Errorf("lab: %s: sshd does not listen on %s:22 after 20s (see %s)", p.n.name, p.n.ip, filepath.Join(p.n.runDir(), "ssh", "sshd.log"))
			}
		}
	}
	return o, nil
}

// writeSSHDConfig writes the node's /etc/ssh/sshd_config and host key, as
// a real node has them; it returns the host public key.
func (n *node) writeSSHDConfig() (ssh.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "root@"+n.name)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	if err := writeFile(n.host("/etc/ssh/ssh_host_ed25519_key"), pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(n.host("/etc/ssh/ssh_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, err
	}
	cfg := strings.Join([]string{
		"# sshd of lab node " + n.name + " (caretaker lab, openssh mode)",
		"ListenAddress " + n.ip + ":22",
		"HostKey /etc/ssh/ssh_host_ed25519_key",
		"PidFile /run/sshd.pid",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"AuthorizedKeysFile .ssh/authorized_keys",
		"StrictModes yes",
		"AllowTcpForwarding yes",
		"MaxStartups 200:30:400",
		"MaxSessions 200",
		"PrintMotd no",
		"PrintLastLog no",
		"Subsystem sftp /usr/lib/openssh/sftp-server",
		"SetEnv " + shim.EnvNode + "=" + n.name + " " + shim.EnvSock + "=" + shim.NodeSocket,
		"",
	}, "\n")
	if err := writeFile(n.host("/etc/ssh/sshd_config"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return signer.PublicKey(), nil
}

func (o *openSSH) startNode(n *node) (*sshdProc, error) {
	l := o.l
	sshDir := filepath.Join(n.runDir(), "ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return nil, err
	}
	hostKey, err := n.writeSSHDConfig()
	if err != nil {
		return nil, fmt.Errorf("lab: %s: write /etc/ssh: %w", n.name, err)
	}
	n.hostKey = hostKey
	n.sshPort = 22
	args := append(l.keeper.enter(), "--", l.opts.ShimBinary, "lab-nsinit", n.root, n.name, "/etc/ssh/sshd_config")
	cmd := exec.Command(nsenterPath, args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Dir = "/"
	logFile, err := os.OpenFile(filepath.Join(sshDir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true,
		Cloneflags: syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: %s: start sshd chrooted into %s: %w", n.name, n.root, err)
	}
	p := &sshdProc{n: n, cmd: cmd, exit: make(chan struct{})}
	p.utsNS, _ = os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/uts")
	go func() {
		_ = cmd.Wait()
		close(p.exit)
	}()
	return p, nil
}

// close stops every node's sshd and every process left in the nodes' UTS
// namespaces and waits for them.
func (o *openSSH) close() error {
	if o == nil {
		return nil
	}
	namespaces := map[string]bool{}
	for _, p := range o.procs {
		if p.utsNS != "" {
			namespaces[p.utsNS] = true
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	var errs []error
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := nsProcesses(namespaces)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
			if rest := nsProcesses(namespaces); len(rest) > 0 {
				errs = append(errs, fmt.Errorf("lab: processes %v of the nodes' namespaces did not stop", rest))
			}
			break
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range o.procs {
		select {
		case <-p.exit:
		case <-time.After(3 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exit
		}
	}
	return errors.Join(errs...)
}

// nsProcesses lists the live processes (not zombies) whose UTS namespace
// is one of namespaces (pitfall 8: wait for "not running or zombie").
func nsProcesses(namespaces map[string]bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/uts")
		if err != nil || !namespaces[ns] {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			continue
		}
		out = append(out, pid)
	}
	return out
}
