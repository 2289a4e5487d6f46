package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caretaker/caretaker/internal/sshserver"
	"github.com/caretaker/caretaker/lab/shim"
)

// keeper is the lab's mount keeper: a child process (the shim binary with
// "lab-keeper") in a mount namespace of its own that mounts the system
// parts of every node tree (see shim's keeper). Node commands, in both SSH
// modes, run in that namespace (through nsenter) chrooted into
// DIR/<node>; when the keeper exits its namespace goes, and the mounts
// with it: nothing is ever mounted on the host.
type keeper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	exit  chan struct{}
}

// ErrNotRoot says the lab cannot isolate node commands without root.
var ErrNotRoot = fmt.Errorf("the lab needs root: every node's commands run chrooted in that node's own tree (DIR/<node>), with the host's /usr, /proc and /dev mounted into it in a private mount namespace; run it as root (e.g. sudo caretaker lab up)")

// startKeeper starts the keeper and waits until it has mounted every node.
func startKeeper(l *Lab, bindDirs []string) (*keeper, error) {
	layer, err := l.writeUsrLayer()
	if err != nil {
		return nil, fmt.Errorf("lab: write the /usr layer: %w", err)
	}
	spec := shim.KeeperSpec{Shim: l.opts.ShimBinary, Socket: filepath.Join(l.opts.Dir, shim.SocketName), Layer: layer, BindDirs: bindDirs}
	for _, n := range l.nodes {
		spec.Nodes = append(spec.Nodes, shim.KeeperNode{Name: n.name, Root: n.root})
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(l.opts.Dir, "run", "keeper.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(l.opts.ShimBinary, "lab-keeper")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start the mount keeper (%s lab-keeper): %w", l.opts.ShimBinary, err)
	}
	k := &keeper{cmd: cmd, stdin: stdin, exit: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(k.exit)
	}()
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		k.close()
		return nil, fmt.Errorf("lab: send the mount keeper its spec: %w", err)
	}
	select {
	case line := <-ready:
		if line == "ready" {
			return k, nil
		}
	case <-time.After(30 * time.Second):
	}
	k.close()
	log, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("lab: the mount keeper did not set up the node trees: %s", strings.TrimSpace(string(log)))
}

// nsenterPath is util-linux's nsenter (Debian: always installed).
const nsenterPath = "/usr/bin/nsenter"

// enter returns the nsenter arguments that run a program in the keeper's
// mount namespace. A process must live there, not merely be chrooted
// through /proc/<keeper>/root: the kernel treats mounts of another
// namespace as nosuid, and sudo would not work.
func (k *keeper) enter() []string {
	return []string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", k.cmd.Process.Pid)}
}

// root is the node's root as reachable from the host's namespace, for
// nsenter's --root (opened before it enters the namespace).
func (k *keeper) root(n *node) string {
	return fmt.Sprintf("/proc/%d/root%s", k.cmd.Process.Pid, n.root)
}

// nodeCommand runs a command line of an SSH session on n: as the user,
// in the keeper's mount namespace, chrooted into the node's tree, in the
// user's home.
func (k *keeper) nodeCommand(n *node) func(u *sshserver.User, line string) (*exec.Cmd, error) {
	return func(u *sshserver.User, line string) (*exec.Cmd, error) {
		if u == nil {
			return nil, fmt.Errorf("lab: %s: no user for the command", n.name)
		}
		args := append(k.enter(), "--root="+k.root(n), "--wdns="+u.Home)
		if u.UID != 0 {
			args = append(args, "--setuid="+strconv.FormatUint(uint64(u.UID), 10), "--setgid="+strconv.FormatUint(uint64(u.GID), 10))
		}
		args = append(args, "--", u.Shell, "-c", line)
		return exec.Command(nsenterPath, args...), nil
	}
}

// close ends the keeper (its stdin closes; SIGKILL if it lingers) and
// waits for it: its mount namespace and every mount in it are gone then.
func (k *keeper) close() {
	if k == nil {
		return
	}
	_ = k.stdin.Close()
	select {
	case <-k.exit:
	case <-time.After(3 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exit
	}
}
