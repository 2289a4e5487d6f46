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

	"github.com/gofrs/flock"
	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/lab/shim"
)

// sshdPath is Debian's OpenSSH server.
const sshdPath = "/usr/sbin/sshd"

// ErrOpenSSHUnavailable says openssh mode cannot run here.
var ErrOpenSSHUnavailable = errors.New("the openssh lab mode needs root and openssh-server (apt-get install openssh-server)")

// checkOpenSSH verifies the prerequisites of openssh mode.
func checkOpenSSH(dir string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: %w: not running as root", ErrOpenSSHUnavailable)
	}
	if _, err := os.Stat(sshdPath); err != nil {
		return fmt.Errorf("lab: %w: %s is missing", ErrOpenSSHUnavailable, sshdPath)
	}
	for _, m := range append(append([]string{}, shim.NodeMounts...), "/usr/local/bin", "/usr/local/sbin") {
		if dir == m || strings.HasPrefix(dir, m+"/") {
			return fmt.Errorf("lab: --dir %s is under %s, which openssh mode mounts over inside each node; use a directory elsewhere (e.g. /tmp/lab)", dir, m)
		}
	}
	return nil
}

// openSSH runs one real sshd per node, each in its own mount and UTS
// namespace where the node's tree is bind-mounted over the real paths
// (issue 3 "--ssh openssh"; recipe in docs/openssh-nodes.md).
type openSSH struct {
	l     *Lab
	procs []*sshdProc
	// shared is held (shared) while this lab's namespaces use the host's
	// mount points; see releaseMountPoints.
	shared *flock.Flock
}

// mountStateDir holds the lock and the list of host mount points created
// by openssh-mode labs (pitfall 7: create them if missing, remove them
// only if a lab created them, and only when no lab uses them any more).
func mountStateDir() string {
	if fi, err := os.Stat("/run"); err == nil && fi.IsDir() {
		return "/run/caretaker-lab"
	}
	return filepath.Join(os.TempDir(), "caretaker-lab-run")
}

type sshdProc struct {
	n     *node
	cmd   *exec.Cmd
	mntNS string // "mnt:[4026532...]" of the node's namespace
	exit  chan struct{}
}

func startOpenSSH(ctx context.Context, l *Lab) (*openSSH, error) {
	o := &openSSH{l: l}
	// Mount points must exist on the host (pitfall 7); sshd needs its
	// privilege separation dir (pitfall 1). Every openssh lab holds a
	// shared lock while it runs, so that the last one to stop removes the
	// mount points the labs created.
	state := mountStateDir()
	if err := os.MkdirAll(state, 0o755); err != nil {
		return o, fmt.Errorf("lab: %w", err)
	}
	o.shared = flock.New(filepath.Join(state, "mounts.lock"))
	if err := o.shared.RLock(); err != nil {
		return o, fmt.Errorf("lab: lock %s: %w", state, err)
	}
	for _, m := range append(append([]string{}, shim.NodeMounts...), "/usr/local/sbin", "/usr/local/bin") {
		if _, err := os.Stat(m); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(m, 0o755); err != nil {
				return o, fmt.Errorf("lab: create mount point %s: %w", m, err)
			}
			f, err := os.OpenFile(filepath.Join(state, "created"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err == nil {
				_, _ = f.WriteString(m + "\n")
				f.Close()
			}
		}
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return o, fmt.Errorf("lab: create /run/sshd: %w", err)
	}
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

func (o *openSSH) startNode(n *node) (*sshdProc, error) {
	l := o.l
	sshDir := filepath.Join(n.runDir(), "ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	hostKey := filepath.Join(sshDir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hostKey, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	n.hostKey = signer.PublicKey()
	n.sshPort = 22
	// Stock dotfiles for root (pitfall 6), authorized key already there.
	home := filepath.Join(n.root, "root")
	for src, dst := range map[string]string{"/usr/share/base-files/dot.bashrc": ".bashrc", "/usr/share/base-files/dot.profile": ".profile"} {
		if b, err := os.ReadFile(src); err == nil {
			_ = os.WriteFile(filepath.Join(home, dst), b, 0o644)
		}
	}
	for _, d := range []string{home, filepath.Join(home, ".ssh")} {
		_ = os.Chown(d, 0, 0)
		_ = os.Chmod(d, 0o700)
	}
	sock := filepath.Join(l.opts.Dir, shim.SocketName)
	cfg := strings.Join([]string{
		"# sshd of lab node " + n.name + " (caretaker lab, openssh mode)",
		"ListenAddress " + n.ip + ":22",
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(sshDir, "sshd.pid"),
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
		"SetEnv " + shim.EnvNode + "=" + n.name + " " + shim.EnvSock + "=" + sock,
		"",
	}, "\n")
	cfgPath := filepath.Join(sshDir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(sshDir, "sshd.log")
	cmd := exec.Command(l.opts.ShimBinary, "lab-nsinit", n.root, n.name, cfgPath, logPath)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Dir = "/"
	errLog, err := os.OpenFile(filepath.Join(sshDir, "nsinit.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer errLog.Close()
	cmd.Stdout, cmd.Stderr = errLog, errLog
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true,
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: %s: start sshd in a new mount namespace: %w", n.name, err)
	}
	p := &sshdProc{n: n, cmd: cmd, exit: make(chan struct{})}
	p.mntNS, _ = os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/mnt")
	go func() {
		_ = cmd.Wait()
		close(p.exit)
	}()
	return p, nil
}

// close stops every node's sshd and every process left in the nodes'
// mount namespaces, waits for them, and removes the mount points this lab
// created (rmdir only).
func (o *openSSH) close() error {
	if o == nil {
		return nil
	}
	namespaces := map[string]bool{}
	for _, p := range o.procs {
		if p.mntNS != "" {
			namespaces[p.mntNS] = true
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
	o.releaseMountPoints()
	return errors.Join(errs...)
}

// releaseMountPoints drops this lab's shared lock; when no other openssh
// lab holds one, it removes (rmdir: only if empty) the host mount points
// that labs created. Removing a directory another lab's namespaces still
// mount would detach their mounts, hence the lock.
func (o *openSSH) releaseMountPoints() {
	if o.shared == nil {
		return
	}
	_ = o.shared.Unlock()
	state := mountStateDir()
	ex := flock.New(filepath.Join(state, "mounts.lock"))
	ok, err := ex.TryLock()
	if err != nil || !ok {
		return
	}
	defer ex.Unlock()
	b, err := os.ReadFile(filepath.Join(state, "created"))
	if err != nil {
		return
	}
	lines := strings.Fields(string(b))
	for i := len(lines) - 1; i >= 0; i-- {
		_ = os.Remove(lines[i])
	}
	_ = os.Remove(filepath.Join(state, "created"))
}

// nsProcesses lists the live processes (not zombies) whose mount
// namespace is one of namespaces (pitfall 8: wait for "not running or
// zombie").
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
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
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
