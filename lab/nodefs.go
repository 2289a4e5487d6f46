package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/internal/sshserver"
	"github.com/caretaker/caretaker/lab/shim"
)

// A node's tree DIR/<node>/ is the root of every command run on the node
// (both SSH modes chroot into it; the keeper mounts the host's /usr
// read-only, /proc, /dev and /run into it). writeSystemFiles lays out the
// rest of a minimal Debian root: the FHS directories, the merged-/usr
// symlinks and an /etc with the node's own accounts and a copy of the
// host's configuration that programs from /usr need.

// adminUID is the uid (and gid) of the sudo user "admin".
const adminUID = 1000

// hostEtcFiles and hostEtcDirs are copied from the host's /etc into each
// node's (symlinks kept as symlinks).
var (
	hostEtcFiles = []string{"ld.so.cache", "ld.so.conf", "localtime", "timezone", "profile", "bash.bashrc", "environment",
		"shells", "login.defs", "host.conf", "inputrc", "debian_version", "issue", "issue.net", "os-release", "resolv.conf",
		"ssh/ssh_config", "ssh/moduli"}
	// hostEtcDirs are bound read-only into each node's /etc by the keeper
	// (copying them takes a while for every node).
	hostEtcDirs = []string{"ld.so.conf.d", "profile.d", "pam.d", "security", "alternatives", "ssl", "skel"}
)

// hostBindDirs lists the host dirs (relative to /) the keeper binds
// read-only into every node: hostEtcDirs, and on hosts without merged /usr
// the top-level library and binary dirs.
func hostBindDirs() []string {
	var out []string
	for _, d := range hostEtcDirs {
		if fi, err := os.Stat("/etc/" + d); err == nil && fi.IsDir() {
			out = append(out, "etc/"+d)
		}
	}
	for _, d := range topLevelDirs {
		if fi, err := os.Lstat("/" + d); err == nil && fi.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

// topLevelDirs are the merged-/usr symlinks of Debian (or, on older
// hosts, real directories).
var topLevelDirs = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// sudoAvailable reports whether the host has sudo, and so the nodes a
// sudo user.
func sudoAvailable() bool {
	_, err := os.Stat("/usr/bin/sudo")
	return err == nil
}

// writeSystemFiles writes the parts of the node tree that make it a root
// file system (with the mount points of hostBindDirs), and the lab key
// into root's (and admin's) authorized_keys.
func (l *Lab) writeSystemFiles(n *node) error {
	at := func(p string) string { return filepath.Join(n.root, p) }
	for d, mode := range map[string]fs.FileMode{
		"usr": 0o755, "proc": 0o555, "dev": 0o755, "run": 0o755, "etc": 0o755, "etc/ssh": 0o755, "home": 0o755,
		"root": 0o700, "tmp": fs.ModeSticky | 0o777, "var/tmp": fs.ModeSticky | 0o777, "var/log": 0o755, "var/lib": 0o755,
		"mnt": 0o755, "opt": 0o755, "srv": 0o755,
	} {
		if err := os.MkdirAll(at(d), 0o755); err != nil {
			return err
		}
		if err := os.Chmod(at(d), mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(n.root, 0o755); err != nil {
		return err
	}
	for _, d := range topLevelDirs {
		fi, err := os.Lstat("/" + d)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink("/" + d)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, at(d)); err != nil {
			return err
		}
	}
	for _, d := range hostBindDirs() {
		if err := os.MkdirAll(at(d), 0o755); err != nil {
			return err
		}
	}
	if err := l.writeEtc(n); err != nil {
		return fmt.Errorf("write %s: %w", at("etc"), err)
	}
	return l.writeHomes(n)
}

// writeEtc writes the node's /etc: its accounts, host name and hosts,
// sudoers, and the copies of the host's configuration.
func (l *Lab) writeEtc(n *node) error {
	etc := filepath.Join(n.root, "etc")
	for _, f := range hostEtcFiles {
		if err := copyHostEntry(filepath.Join("/etc", f), filepath.Join(etc, f)); err != nil {
			return err
		}
	}
	passwd, group, err := nodeAccounts()
	if err != nil {
		return err
	}
	var shadow, gshadow strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(passwd), "\n") {
		name, _, _ := strings.Cut(line, ":")
		fmt.Fprintf(&shadow, "%s:*:19700:0:99999:7:::\n", name)
	}
	for _, line := range strings.Split(strings.TrimSpace(group), "\n") {
		name, _, _ := strings.Cut(line, ":")
		fmt.Fprintf(&gshadow, "%s:*::\n", name)
	}
	hostName, _ := os.Hostname()
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n%s\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n", n.ip, n.name)
	if l.opts.SSH != SSHOpenSSH && hostName != "" && hostName != n.name {
		// In-process mode shares the host's UTS name: let it resolve.
		hosts += "127.0.0.1\t" + hostName + "\n"
	}
	files := []struct {
		name string
		data string
		mode fs.FileMode
	}{
		{"passwd", passwd, 0o644}, {"group", group, 0o644}, {"shadow", shadow.String(), 0o640}, {"gshadow", gshadow.String(), 0o640},
		{"nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\ngshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n", 0o644},
		{"hostname", n.name + "\n", 0o644}, {"hosts", hosts, 0o644}, {"machine-id", machineID(n) + "\n", 0o444},
	}
	if sudoAvailable() {
		files = append(files, struct {
			name string
			data string
			mode fs.FileMode
		}{"sudoers", "Defaults\tenv_reset\nDefaults\tsecure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n" +
			"root\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\nadmin\tALL=(ALL:ALL) NOPASSWD: ALL\n@includedir /etc/sudoers.d\n", 0o440})
		if err := os.MkdirAll(filepath.Join(etc, "sudoers.d"), 0o755); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(etc, f.name), []byte(f.data), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(etc, f.name), f.mode); err != nil {
			return err
		}
	}
	return nil
}

func machineID(n *node) string {
	return strings.Repeat("0", 32-len(strconv.Itoa(n.index))) + strconv.Itoa(n.index)
}

// nodeAccounts returns the node's /etc/passwd and /etc/group: the host's
// system accounts (uid/gid below 1000, and nobody/nogroup) with their
// member lists cleared, root with bash, sshd's privilege separation user,
// and the sudo user admin when the host has sudo. No host password hash
// is copied (shadow is written with "*").
func nodeAccounts() (passwd, group string, err error) {
	var pw, gr strings.Builder
	hasSSHD := false
	err = eachHostLine("/etc/passwd", 7, func(f []string) {
		uid, _ := strconv.Atoi(f[2])
		if (uid >= 1000 && f[0] != "nobody") || uid == adminUID {
			return
		}
		if f[0] == "root" {
			f = []string{"root", "x", "0", "0", "root", "/root", "/bin/bash"}
		}
		hasSSHD = hasSSHD || f[0] == "sshd"
		pw.WriteString(strings.Join(f, ":") + "\n")
	})
	if err != nil {
		return "", "", err
	}
	if !hasSSHD {
		pw.WriteString("sshd:x:999:65534::/run/sshd:/usr/sbin/nologin\n")
	}
	sudo := sudoAvailable()
	if sudo {
		fmt.Fprintf(&pw, "admin:x:%d:%d:admin:/home/admin:/bin/bash\n", adminUID, adminUID)
	}
	err = eachHostLine("/etc/group", 4, func(f []string) {
		gid, _ := strconv.Atoi(f[2])
		if (gid >= 1000 && f[0] != "nogroup") || gid == adminUID {
			return
		}
		f[3] = ""
		if f[0] == "sudo" && sudo {
			f[3] = "admin"
		}
		gr.WriteString(strings.Join(f, ":") + "\n")
	})
	if sudo {
		fmt.Fprintf(&gr, "admin:x:%d:\n", adminUID)
	}
	return pw.String(), gr.String(), err
}

// eachHostLine calls fn with the colon-separated fields of each line of a
// host file that has at least min fields.
func eachHostLine(path string, min int, fn func([]string)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the host's %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= min && !strings.HasPrefix(f[0], "#") && !strings.HasPrefix(f[0], "+") {
			fn(f)
		}
	}
	return sc.Err()
}

// writeHomes writes root's (and admin's) home with Debian's stock
// dotfiles and the lab key as the only authorized key.
func (l *Lab) writeHomes(n *node) error {
	pub := ssh.MarshalAuthorizedKey(l.clientKey.PublicKey())
	type home struct {
		dir      string
		uid      int
		dotfiles map[string]string
	}
	homes := []home{{"root", 0, map[string]string{"/usr/share/base-files/dot.bashrc": ".bashrc", "/usr/share/base-files/dot.profile": ".profile"}}}
	if sudoAvailable() {
		homes = append(homes, home{"home/admin", adminUID, map[string]string{"/etc/skel/.bashrc": ".bashrc", "/etc/skel/.profile": ".profile", "/etc/skel/.bash_logout": ".bash_logout"}})
	}
	for _, h := range homes {
		dir := filepath.Join(n.root, h.dir)
		if err := os.MkdirAll(filepath.Join(dir, ".ssh"), 0o700); err != nil {
			return err
		}
		for src, dst := range h.dotfiles {
			if b, err := os.ReadFile(src); err == nil {
				if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
					return err
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, ".ssh", "authorized_keys"), pub, 0o600); err != nil {
			return err
		}
		mode := fs.FileMode(0o700)
		if h.uid != 0 {
			mode = 0o755
		}
		if err := os.Chmod(dir, mode); err != nil {
			return err
		}
		err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, h.uid, h.uid)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// copyHostEntry copies one host file or symlink (missing: nothing).
func copyHostEntry(src, dst string) error {
	fi, err := os.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, fi.Mode().Perm())
	}
	return nil
}

// writeUsrLayer writes DIR/run/usr-layer: the placeholders of the node
// commands, the upper layer of every node's read-only /usr.
func (l *Lab) writeUsrLayer() (string, error) {
	layer := filepath.Join(l.opts.Dir, "run", "usr-layer")
	for _, p := range shim.ShimPaths {
		rel := strings.TrimPrefix(p, "usr/")
		if err := writeFile(filepath.Join(layer, rel), nil, 0o755); err != nil {
			return "", err
		}
	}
	return layer, nil
}

// sshUser looks a login up as sshd does on the node: the user must be in
// the node's /etc/passwd, and the keys are those of the user's
// ~/.ssh/authorized_keys in the node's tree. Supplementary groups come
// from the node's /etc/group.
func (n *node) sshUser(name string) (*sshserver.User, error) {
	var u *sshserver.User
	err := eachHostLine(n.host("/etc/passwd"), 7, func(f []string) {
		if f[0] != name || u != nil {
			return
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return
		}
		u = &sshserver.User{Name: name, UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6]}
	})
	if err != nil || u == nil {
		return nil, fmt.Errorf("no user %s on %s", name, n.name)
	}
	_ = eachHostLine(n.host("/etc/group"), 4, func(f []string) {
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil {
					u.Groups = append(u.Groups, uint32(gid))
				}
			}
		}
	})
	b, err := os.ReadFile(n.host(filepath.Join(u.Home, ".ssh", "authorized_keys")))
	if err != nil {
		return nil, fmt.Errorf("user %s on %s has no authorized keys: %w", name, n.name, err)
	}
	for len(b) > 0 {
		key, _, _, rest, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			break
		}
		u.AuthorizedKeys = append(u.AuthorizedKeys, key)
		b = rest
	}
	if u.Shell == "" {
		u.Shell = "/bin/sh"
	}
	return u, nil
}
