package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// etcdSnapshot simulates `k3s etcd-snapshot save [--name NAME]
// [--data-dir DIR]`: a snapshot of the node's running etcd member, written
// as K3s does to DIR/server/db/snapshots/NAME-<node>-<unix time> (0600;
// default name etcd-snapshot). It needs K3s running on the node, as the
// real command needs the local etcd. Other subcommands are not simulated.
func (inv *invocation) etcdSnapshot(args []string) int {
	if len(args) == 0 || args[0] != "save" {
		return inv.cliFatal("lab: k3s etcd-snapshot %v is not simulated (save is)", args)
	}
	f, err := parseCLIFlags(args[1:],
		map[string]string{"name": "name", "data-dir": "data-dir", "d": "data-dir", "config": "config", "c": "config", "etcd-snapshot-dir": "dir"},
		map[string]string{"debug": "debug", "etcd-snapshot-compress": "compress"})
	if err != nil {
		return inv.cliFatal("%v", err)
	}
	n := inv.n
	if !n.isServer() {
		return inv.cliFatal("etcd-snapshot: this node runs no etcd (it is an agent)")
	}
	n.mu.Lock()
	var m *etcdMember
	if n.proc != nil {
		n.proc.mu.Lock()
		m = n.proc.member
		n.proc.mu.Unlock()
	}
	n.mu.Unlock()
	if m == nil {
		return inv.cliFatal("etcd-snapshot: failed to get etcd status: context deadline exceeded (is K3s running? dial tcp 127.0.0.1:2379: connect: connection refused)")
	}
	name := f.get("name")
	if name == "" {
		name = "etcd-snapshot"
	}
	dir := f.get("dir")
	if dir == "" {
		dir = filepath.Join(inv.dataDir(f), "server", "db", "snapshots")
	}
	file := fmt.Sprintf("%s-%s-%d", name, n.name, time.Now().Unix())
	if err := inv.writeSnapshot(m, n.host(filepath.Join(dir, file))); err != nil {
		return inv.cliFatal("etcd-snapshot: %v", err)
	}
	inv.cliLog("info", "Snapshot %s saved.", file)
	return 0
}

// writeSnapshot streams the member's snapshot into p (host path), 0600,
// through a temporary file.
func (inv *invocation) writeSnapshot(m *etcdMember, p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	rc, err := m.cli.Snapshot(inv.ctx)
	if err != nil {
		return fmt.Errorf("snapshot the member: %w", err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(p), ".snapshot-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.ReadFrom(rc); err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot the member: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}
