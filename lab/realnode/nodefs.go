package realnode

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mountNodeRoot mounts the node's root: an overlay whose lower layers are
// the cached K3s layer (usr/local/bin/k3s) over the cached Debian base,
// with the node's own upper and work dirs. The cache never changes while
// it is a lower layer: a new binary or recipe gets a new cache dir.
func mountNodeRoot(st *state, n *nodeState) error {
	for _, d := range []string{"upper", "work", "root"} {
		p := filepath.Join(n.Dir, d)
		if err := os.RemoveAll(p); err != nil && !isMountPoint(p) {
			return fmt.Errorf("realnode: %s: clear %s: %w", n.Name, p, err)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("realnode: %s: %w", n.Name, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s", st.K3sLayer, st.Base,
		filepath.Join(n.Dir, "upper"), filepath.Join(n.Dir, "work"))
	if err := syscall.Mount("overlay", n.Root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("realnode: %s: mount the overlay root at %s (%s): %w", n.Name, n.Root, opts, err)
	}
	n.Mounted = true
	return nil
}

// nodeIdentity writes what makes a node its own machine: hostname,
// machine-id, /etc/hosts with every node, an ed25519 host key, and the
// client key as authorized_keys of root and admin. It returns the host
// key's public line.
func nodeIdentity(st *state, n *nodeState, authorized []byte) ([]byte, error) {
	r := n.Root
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, o := range st.Nodes {
		fmt.Fprintf(&hosts, "%s\t%s\n", o.Address, o.Name)
	}
	priv, pub, _, err := newEd25519("root@" + n.Name)
	if err != nil {
		return nil, fmt.Errorf("realnode: %s: host key: %w", n.Name, err)
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"etc/hostname", []byte(n.Name + "\n"), 0o644},
		{"etc/machine-id", []byte(hex.EncodeToString(id) + "\n"), 0o444},
		{"etc/hosts", []byte(hosts.String()), 0o644},
		{"etc/ssh/ssh_host_ed25519_key", priv, 0o600},
		{"etc/ssh/ssh_host_ed25519_key.pub", pub, 0o644},
		{"root/.ssh/authorized_keys", authorized, 0o600},
		{"home/admin/.ssh/authorized_keys", authorized, 0o600},
	}
	for _, f := range files {
		p := filepath.Join(r, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("realnode: %s: %w", n.Name, err)
		}
		if err := writeFileAtomic(p, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("realnode: %s: write %s: %w", n.Name, f.path, err)
		}
	}
	if err := os.Chmod(filepath.Join(r, "root", ".ssh"), 0o700); err != nil {
		return nil, err
	}
	uid, gid, err := passwdIDs(filepath.Join(r, "etc", "passwd"), "admin")
	if err != nil {
		return nil, fmt.Errorf("realnode: %s: %w", n.Name, err)
	}
	for _, p := range []string{"home/admin/.ssh", "home/admin/.ssh/authorized_keys"} {
		if err := os.Chown(filepath.Join(r, p), uid, gid); err != nil {
			return nil, fmt.Errorf("realnode: %s: chown %s: %w", n.Name, p, err)
		}
	}
	if err := os.Chmod(filepath.Join(r, "home/admin/.ssh"), 0o700); err != nil {
		return nil, err
	}
	return pub, nil
}

// passwdIDs finds user's uid and gid in a passwd file.
func passwdIDs(passwd, user string) (int, int, error) {
	b, err := os.ReadFile(passwd)
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 4 && f[0] == user {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				return uid, gid, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no user %s in %s (rebuild the base: remove the cache dir)", user, passwd)
}

// unmountNodeRoot unmounts the node's overlay, retrying while busy; as a
// last resort it detaches it lazily (and says so).
func unmountNodeRoot(n *nodeState) error {
	if !isMountPoint(n.Root) {
		n.Mounted = false
		return nil
	}
	var err error
	for i := 0; i < 25; i++ {
		if err = syscall.Unmount(n.Root, 0); err == nil || errors.Is(err, syscall.EINVAL) {
			n.Mounted = false
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if derr := syscall.Unmount(n.Root, syscall.MNT_DETACH); derr == nil {
		n.Mounted = false
		return fmt.Errorf("realnode: %s: %s was busy (%v): detached lazily", n.Name, n.Root, err)
	}
	return fmt.Errorf("realnode: %s: unmount %s: %w", n.Name, n.Root, err)
}
