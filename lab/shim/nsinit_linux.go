package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// NodeMounts are the real paths a node of an openssh-mode lab sees from its
// own tree (recipe in docs/openssh-nodes.md): the node directory's copy of
// each is bind-mounted over it inside the node's mount namespace.
var NodeMounts = []string{"/etc/rancher", "/var/lib/rancher", "/etc/systemd/system", "/root"}

// nsInit runs inside a new mount and UTS namespace (the lab daemon starts it
// with CLONE_NEWNS|CLONE_NEWUTS): it makes every mount private, sets the
// host name, bind-mounts the node's tree over the real paths and the node's
// commands over /usr/local/sbin, /usr/local/bin (overlay) and the absolute
// paths of systemctl and journalctl, then executes sshd in the foreground.
//
// args: node directory, host name, sshd_config, sshd log file.
func nsInit(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "lab-nsinit: usage: lab-nsinit NODEDIR HOSTNAME SSHD_CONFIG SSHD_LOG")
		return 2
	}
	nodeDir, host, cfg, logFile := args[0], args[1], args[2], args[3]
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "lab-nsinit %s: "+format+"\n", append([]any{host}, a...)...)
		return 1
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fail("make mounts private: %v", err)
	}
	if err := syscall.Sethostname([]byte(host)); err != nil {
		return fail("set host name: %v", err)
	}
	bind := func(src, dst string) error {
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, dst, err)
		}
		return nil
	}
	for _, p := range NodeMounts {
		if err := bind(filepath.Join(nodeDir, p), p); err != nil {
			return fail("%v", err)
		}
	}
	bin := filepath.Join(nodeDir, "bin")
	if err := bind(bin, "/usr/local/sbin"); err != nil {
		return fail("%v", err)
	}
	// /usr/local/bin/k3s is where install.sh puts k3s (and the unit's
	// ExecStart names it): overlay the node's commands over the real dir.
	opts := "lowerdir=" + bin + ":/usr/local/bin"
	if err := syscall.Mount("lab-"+host, "/usr/local/bin", "overlay", syscall.MS_RDONLY, opts); err != nil {
		return fail("overlay /usr/local/bin: %v", err)
	}
	seen := map[string]bool{}
	for _, c := range []string{"systemctl", "journalctl"} {
		for _, dir := range []string{"/usr/bin", "/bin"} {
			dst, err := filepath.EvalSymlinks(filepath.Join(dir, c))
			if err != nil || seen[dst] {
				continue
			}
			seen[dst] = true
			if fi, err := os.Stat(dst); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := bind(filepath.Join(bin, c), dst); err != nil {
				return fail("%v", err)
			}
		}
	}
	sshd := "/usr/sbin/sshd"
	err := syscall.Exec(sshd, []string{sshd, "-D", "-f", cfg, "-E", logFile}, os.Environ())
	return fail("exec %s: %v", sshd, err)
}
