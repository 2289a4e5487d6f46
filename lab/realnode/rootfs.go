package realnode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// basePackages are installed into the nodes' Debian 12 root filesystem
// (the list of the reference nodes.sh).
var basePackages = []string{"systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "sudo",
	"iproute2", "ca-certificates", "curl", "procps", "less", "python3", "kmod", "iputils-ping", "netbase"}

// baseHookVersion changes whenever the customisation of the base changes:
// it is part of the cache key, so a changed recipe builds a new base.
const baseHookVersion = "realnode-base-1"

// baseHooks customise the root filesystem inside mmdebstrap ("$1" is the
// root): no SSH host keys and an empty machine-id (each node gets its
// own), apt timers and tty getty masked, the sudo user admin.
var baseHooks = []string{
	`rm -f "$1"/etc/ssh/ssh_host_*; : > "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id`,
	`echo LANG=C.UTF-8 > "$1"/etc/default/locale`,
	`systemctl --root="$1" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service >/dev/null`,
	`chroot "$1" useradd -m -s /bin/bash -G sudo admin`,
	`echo "admin ALL=(ALL) NOPASSWD:ALL" > "$1"/etc/sudoers.d/admin; chmod 440 "$1"/etc/sudoers.d/admin`,
	`mkdir -p "$1"/usr/local/bin "$1"/etc/rancher/k3s/config.yaml.d`,
}

// baseMarker exists in a complete base (written last, before the rename).
const baseMarker = ".realnode-ok"

// baseDir is where the base for the current recipe lives in cacheDir.
func baseDir(cacheDir string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", baseHookVersion, strings.Join(basePackages, ","), strings.Join(baseHooks, "\n"))
	return filepath.Join(cacheDir, "base-"+hex.EncodeToString(h.Sum(nil))[:16])
}

// mirrorSources is the host's own Debian source configuration for
// mmdebstrap: its deb822 debian.sources file, else the first bookworm
// line of sources.list, else deb.debian.org.
func mirrorSources() string {
	if p := "/etc/apt/sources.list.d/debian.sources"; fileExists(p) {
		return p
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "deb" && f[2] == "bookworm" {
				return "deb " + f[1] + " bookworm main"
			}
		}
	}
	return "deb http://deb.debian.org/debian bookworm main"
}

// ensureBase returns the cached base root filesystem, building it with
// mmdebstrap when missing. Concurrent callers (other labs, other
// processes) wait on a flock; the build goes to a temp dir renamed into
// place when complete, so a base is never seen half-built.
func ensureBase(ctx context.Context, cacheDir string, logf func(string, ...any)) (string, error) {
	dir := baseDir(cacheDir)
	if fileExists(filepath.Join(dir, baseMarker)) {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("realnode: create the cache dir %s: %w", cacheDir, err)
	}
	lock := flock.New(dir + ".lock")
	if _, err := lock.TryLockContext(ctx, 250*time.Millisecond); err != nil {
		return "", fmt.Errorf("realnode: lock %s.lock: %w", dir, err)
	}
	defer lock.Unlock()
	if fileExists(filepath.Join(dir, baseMarker)) {
		return dir, nil
	}
	began := time.Now()
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("realnode: remove the stale partial base %s: %w", tmp, err)
	}
	os.RemoveAll(dir) // a base without its marker is incomplete
	args := []string{"--variant=minbase", "--include=" + strings.Join(basePackages, ",")}
	for _, h := range baseHooks {
		args = append(args, "--customize-hook="+h)
	}
	args = append(args, "bookworm", tmp, mirrorSources())
	logf("rootfs: building the Debian 12 base with mmdebstrap into %s (once per machine; ~30-60 s)", dir)
	logPath := dir + ".build.log"
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", fmt.Errorf("realnode: %w", err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = hostEnv
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(logPath)
		os.RemoveAll(tmp)
		return "", fmt.Errorf("realnode: mmdebstrap failed (%w); log %s:\n%s", err, logPath, tailLines(string(b), 15))
	}
	if err := os.WriteFile(filepath.Join(tmp, baseMarker), []byte(baseHookVersion+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("realnode: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("realnode: move the new base into place: %w", err)
	}
	logf("rootfs: built in %.1fs", time.Since(began).Seconds())
	return dir, nil
}

// ensureK3s returns a cache dir holding usr/local/bin/k3s (mode 0755):
// the binary at src, decompressed when its name ends in .xz. The dir is
// keyed by the sha256 of src, so a changed binary gets a new dir and a
// dir in use as an overlay lower layer never changes.
func ensureK3s(ctx context.Context, cacheDir, src string, logf func(string, ...any)) (string, error) {
	sum, err := fileSHA256(src)
	if err != nil {
		return "", fmt.Errorf("realnode: K3s binary %s: %w (pass --k3s-binary PATH)", src, err)
	}
	dir := filepath.Join(cacheDir, "k3s-"+sum)
	bin := filepath.Join(dir, "usr", "local", "bin", "k3s")
	if fileExists(bin) {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("realnode: create the cache dir %s: %w", cacheDir, err)
	}
	lock := flock.New(dir + ".lock")
	if _, err := lock.TryLockContext(ctx, 250*time.Millisecond); err != nil {
		return "", fmt.Errorf("realnode: lock %s.lock: %w", dir, err)
	}
	defer lock.Unlock()
	if fileExists(bin) {
		return dir, nil
	}
	began := time.Now()
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	tmpBin := filepath.Join(tmp, "usr", "local", "bin", "k3s")
	if err := os.MkdirAll(filepath.Dir(tmpBin), 0o755); err != nil {
		return "", fmt.Errorf("realnode: %w", err)
	}
	if err := copyK3s(ctx, src, tmpBin); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("realnode: move the K3s binary into the cache: %w", err)
	}
	logf("k3s: %s cached at %s in %.1fs", src, bin, time.Since(began).Seconds())
	return dir, nil
}

// copyK3s writes src (decompressed with xz -dc when it ends in .xz) to
// dst, mode 0755.
func copyK3s(ctx context.Context, src, dst string) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("realnode: %w", err)
	}
	defer out.Close()
	if strings.HasSuffix(src, ".xz") {
		cmd := exec.CommandContext(ctx, "xz", "-dc", src)
		cmd.Env = hostEnv
		cmd.Stdout = out
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("realnode: decompress %s with xz -dc: %w: %s", src, err, strings.TrimSpace(errb.String()))
		}
	} else {
		in, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("realnode: %w", err)
		}
		defer in.Close()
		if _, err := io.Copy(out, in); err != nil {
			return fmt.Errorf("realnode: copy %s: %w", src, err)
		}
	}
	if err := out.Chmod(0o755); err != nil {
		return fmt.Errorf("realnode: %w", err)
	}
	return out.Close()
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
