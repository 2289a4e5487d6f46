package realnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// hostTools are the commands the engine runs on the host, with the Debian
// package that provides each.
var hostTools = []struct{ cmd, pkg string }{
	{"systemd-nspawn", "systemd-container"},
	{"mmdebstrap", "mmdebstrap"},
	{"ip", "iproute2"},
	{"nsenter", "util-linux"},
	{"mount", "mount"},
	{"xz", "xz-utils"},
}

// Available returns nil when this machine can run the real engine: the
// process is root, the host tools (systemd-nspawn, mmdebstrap, ip,
// nsenter, xz) are present — when missing and root, it installs them with
// `apt-get install --no-install-recommends` (libnss-mymachines, a
// recommendation of systemd-container, would edit the host's
// nsswitch.conf) — overlayfs is supported and a K3s binary is found
// ($CARETAKER_K3S_BINARY or shared/k3s/k3s.xz). Otherwise the error names
// what is missing and the command that fixes it.
func Available() error {
	return available(context.Background(), DefaultK3sBinary())
}

func available(ctx context.Context, k3sBinary string) error {
	if os.Geteuid() != 0 {
		return errors.New("realnode: the real engine needs root (network namespaces, overlay mounts, cgroups, systemd-nspawn): run as root, e.g. sudo caretaker lab up --engine real")
	}
	if err := installMissingTools(ctx); err != nil {
		return err
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fs), "\toverlay\n") {
		if _, mpErr := run(ctx, "modprobe", "overlay"); mpErr != nil {
			return errors.New("realnode: the kernel has no overlayfs (not in /proc/filesystems, modprobe overlay failed): the nodes' root filesystems need it")
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		return errors.New("realnode: /sys/fs/cgroup is missing: mount the cgroup hierarchies first")
	}
	if _, err := detectCgroups(); err != nil {
		return err
	}
	if k3sBinary == "" {
		return fmt.Errorf("realnode: no K3s binary found: set $%s=/path/to/k3s (or k3s.xz), or pass --k3s-binary; the project's binary is shared/k3s/k3s.xz", EnvK3sBinary)
	}
	if fi, err := os.Stat(k3sBinary); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("realnode: K3s binary %s: not a readable file (%v): pass --k3s-binary PATH or set $%s", k3sBinary, err, EnvK3sBinary)
	}
	return nil
}

// missingTools lists the Debian packages of host tools not on PATH.
func missingTools() []string {
	var pkgs []string
	for _, t := range hostTools {
		if _, err := exec.LookPath(t.cmd); err != nil {
			if _, err := os.Stat("/usr/bin/" + t.cmd); err != nil {
				if _, err := os.Stat("/usr/sbin/" + t.cmd); err != nil {
					pkgs = append(pkgs, t.pkg)
				}
			}
		}
	}
	return pkgs
}

// installMissingTools installs the packages of missing host tools with
// apt-get (as root), or says which command would.
func installMissingTools(ctx context.Context) error {
	pkgs := missingTools()
	if len(pkgs) == 0 {
		return nil
	}
	fix := "apt-get update && apt-get install -y --no-install-recommends " + strings.Join(pkgs, " ")
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("realnode: missing host packages %s and no apt-get to install them: install them with the system's package manager (Debian: %s)", strings.Join(pkgs, ", "), fix)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if _, err := run(ctx, "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("realnode: missing %s; apt-get update failed: %w; fix: %s", strings.Join(pkgs, ", "), err, fix)
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
	cmd.Env = append(hostEnv, "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("realnode: installing %s failed: %w\n%s\nfix: %s", strings.Join(pkgs, ", "), err, tailLines(string(out), 10), fix)
	}
	if left := missingTools(); len(left) > 0 {
		return fmt.Errorf("realnode: still missing %s after apt-get install: %s", strings.Join(left, ", "), fix)
	}
	return nil
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
