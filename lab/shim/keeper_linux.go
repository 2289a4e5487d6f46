package shim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// In-node locations of the lab's own files: the lab socket and a file
// naming the node, on the node's /run (a tmpfs of the keeper).
const (
	NodeRunDir   = "/run/caretaker-lab"
	NodeSocket   = NodeRunDir + "/lab.sock"
	NodeNameFile = NodeRunDir + "/node"
)

// ShimPaths are where a node's commands live inside the node (relative to
// its root): /usr/local/bin/k3s as install.sh puts it, systemctl and
// journalctl where Debian has them.
var ShimPaths = []string{"usr/local/bin/k3s", "usr/bin/systemctl", "usr/bin/journalctl"}

// KeeperSpec tells the keeper what to mount (all host paths).
type KeeperSpec struct {
	// Shim is the node-command binary bind-mounted over ShimPaths.
	Shim string `json:"shim"`
	// Socket is the lab socket, bind-mounted at NodeSocket.
	Socket string `json:"socket"`
	// Layer is a directory with empty placeholder files at ShimPaths
	// (below usr/): the upper layer of each node's read-only /usr overlay.
	Layer string `json:"layer"`
	// BindDirs are host dirs relative to / (e.g. "etc/ssl", or "lib32" on
	// hosts without merged /usr) bound read-only into every node.
	BindDirs []string `json:"bind_dirs,omitempty"`
	// Nodes are the node trees, each the root of one node.
	Nodes []KeeperNode `json:"nodes"`
}

// KeeperNode is one node tree.
type KeeperNode struct {
	Name string `json:"name"`
	Root string `json:"root"`
}

// keeper runs in a mount namespace of its own (the lab starts it with
// CLONE_NEWNS; Go makes the mounts private): it reads a KeeperSpec from
// standard input, mounts into every node tree the system parts a command
// needs — the host's /usr read-only (an overlay that adds the node
// commands), /proc, a minimal /dev, a /run tmpfs with the lab socket —
// prints "ready" and then waits for standard input to close. Commands of
// the nodes run chrooted into /proc/<keeper>/root/<tree>; when the keeper
// dies, its namespace and every mount in it go with it, so nothing is left
// on the host.
func keeper() int {
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab-keeper: read the spec: %v\n", err)
		return 2
	}
	var spec KeeperSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		fmt.Fprintf(os.Stderr, "lab-keeper: bad spec: %v\n", err)
		return 2
	}
	for _, n := range spec.Nodes {
		if err := mountNode(spec, n); err != nil {
			fmt.Fprintf(os.Stderr, "lab-keeper: node %s (%s): %v\n", n.Name, n.Root, err)
			return 1
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, in)
	return 0
}

func mountNode(spec KeeperSpec, n KeeperNode) error {
	at := func(p string) string { return filepath.Join(n.Root, p) }
	// /usr: the host's, read-only, with the node commands on top.
	if err := syscall.Mount("overlay", at("usr"), "overlay", syscall.MS_RDONLY|syscall.MS_NODEV,
		"lowerdir="+spec.Layer+":/usr"); err != nil {
		return fmt.Errorf("mount the read-only /usr overlay on %s: %w", at("usr"), err)
	}
	for _, p := range ShimPaths {
		if err := bindFile(spec.Shim, at(p), true); err != nil {
			return err
		}
	}
	for _, d := range spec.BindDirs {
		if err := bindFile("/"+d, at(d), true); err != nil {
			return err
		}
	}
	if err := syscall.Mount("proc", at("proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc on %s: %w", at("proc"), err)
	}
	if err := mountDev(at("dev")); err != nil {
		return err
	}
	return mountRun(at("run"), n.Name, spec.Socket)
}

// bindFile bind-mounts src over dst (a file or a directory), read-only
// when ro.
func bindFile(src, dst string, ro bool) error {
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", src, dst, err)
	}
	if ro {
		if err := syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", dst, err)
		}
	}
	return nil
}

// mountDev is a tmpfs with the device nodes commands use (bound from the
// host's) and the usual symlinks.
func mountDev(dev string) error {
	if err := syscall.Mount("tmpfs", dev, "tmpfs", syscall.MS_NOSUID, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", dev, err)
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := filepath.Join(dev, d)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		if err := bindFile("/dev/"+d, p, false); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	for _, d := range []string{"shm", "pts"} {
		if err := mkdirMode(filepath.Join(dev, d), os.ModeSticky|0o777); err != nil {
			return err
		}
	}
	return nil
}

// mountRun is the node's /run: a tmpfs with sshd's privilege separation
// dir, /run/lock, and the lab's socket and node name.
func mountRun(run, node, socket string) error {
	if err := syscall.Mount("tmpfs", run, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", run, err)
	}
	for d, mode := range map[string]os.FileMode{"sshd": 0o755, "lock": os.ModeSticky | 0o777, "user": 0o755, filepath.Base(NodeRunDir): 0o755} {
		if err := mkdirMode(filepath.Join(run, d), mode); err != nil {
			return err
		}
	}
	lab := filepath.Join(run, filepath.Base(NodeRunDir))
	if err := os.WriteFile(filepath.Join(lab, "node"), []byte(node+"\n"), 0o644); err != nil {
		return err
	}
	sock := filepath.Join(lab, filepath.Base(NodeSocket))
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		return err
	}
	return bindFile(socket, sock, false)
}

// mkdirMode creates dir with exactly mode (no umask).
func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.Mkdir(dir, mode.Perm()); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}
