package k3stest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// snapshotMagic starts a fake etcd snapshot file; the rest is the
// datastore's bootstrap data as K3s stores it, so that a restore puts
// back the CAs of the moment it was taken.
const snapshotMagic = "caretaker-fake-etcd-snapshot\n"

var (
	snapshotSaveRe  = regexp.MustCompile(`^k3s etcd-snapshot save --data-dir '?([^' ]+)'? --name '?([^' ]+)'?$`)
	clusterResetRe  = regexp.MustCompile(`^k3s server --cluster-reset --cluster-reset-restore-path='?([^' ]+)'?( --token-file '?([^' ]+)'?)?$`)
	lsDirRe         = regexp.MustCompile(`^ls -1 -- '?([^' ]+)'? 2>/dev/null \|\| true$`)
	sha256sumLineRe = regexp.MustCompile(`^sha256sum -- '?([^' ]+)'?( 2>/dev/null \|\| true)?$`)
	mvRe            = regexp.MustCompile(`^mv -- '?([^' ]+)'? '?([^' ]+)'?$`)
)

// handleSnapshots answers k3s etcd-snapshot save, k3s server
// --cluster-reset with a restore path, and the ls and sha256sum the
// snapshot operations run, on the node's files.
func (c *Cluster) handleSnapshots(sn *simNode) {
	ex := sn.ex
	ex.OnFunc(lsDirRe.String(), func(line string, _ []byte, stdout, _ io.Writer) int {
		dir := strings.TrimSuffix(lsDirRe.FindStringSubmatch(line)[1], "/") + "/"
		var names []string
		for _, p := range ex.Files() {
			if rest, ok := strings.CutPrefix(p, dir); ok && !strings.Contains(rest, "/") {
				names = append(names, rest)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintln(stdout, n)
		}
		return 0
	})
	ex.OnFunc(sha256sumLineRe.String(), func(line string, _ []byte, stdout, stderr io.Writer) int {
		p := sha256sumLineRe.FindStringSubmatch(line)[1]
		data, ok := ex.File(p)
		if !ok {
			fmt.Fprintf(stderr, "sha256sum: %s: No such file or directory\n", p)
			return 1
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(stdout, "%s  %s\n", hex.EncodeToString(sum[:]), p)
		return 0
	})
	ex.OnFunc(mvRe.String(), func(line string, _ []byte, _, stderr io.Writer) int {
		m := mvRe.FindStringSubmatch(line)
		moved := 0
		for _, p := range ex.Files() {
			if p == m[1] || strings.HasPrefix(p, m[1]+"/") {
				data, _ := ex.File(p)
				fi, _ := ex.Stat(context.Background(), p)
				ex.SetFile(m[2]+strings.TrimPrefix(p, m[1]), data, fi.Mode)
				ex.RemoveFile(p)
				moved++
			}
		}
		if moved == 0 {
			fmt.Fprintf(stderr, "mv: cannot stat '%s': No such file or directory\n", m[1])
			return 1
		}
		return 0
	})
	ex.OnFunc(snapshotSaveRe.String(), func(line string, _ []byte, stdout, stderr io.Writer) int {
		m := snapshotSaveRe.FindStringSubmatch(line)
		return c.saveSnapshot(sn, m[1], m[2], stdout, stderr)
	})
	ex.OnFunc(clusterResetRe.String(), func(line string, _ []byte, stdout, stderr io.Writer) int {
		m := clusterResetRe.FindStringSubmatch(line)
		return c.clusterReset(sn, m[1], stdout, stderr)
	})
}

// saveSnapshot is `k3s etcd-snapshot save`: it needs the node's K3s
// running (it talks to the local etcd) and writes
// DD/server/db/snapshots/NAME-NODE-UNIXTIME, 0600.
func (c *Cluster) saveSnapshot(sn *simNode, dataDir, name string, stdout, stderr io.Writer) int {
	c.mu.Lock()
	state := sn.state
	c.mu.Unlock()
	if state != "active" {
		fmt.Fprintln(stderr, `time="…" level=fatal msg="etcd-snapshot: context deadline exceeded: is K3s running? (dial tcp 127.0.0.1:2379: connect: connection refused)"`)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Datastore(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "level=fatal msg=%q\n", err.Error())
		return 1
	}
	body, err := k3s.MarshalBootstrap(d)
	if err != nil {
		fmt.Fprintf(stderr, "level=fatal msg=%q\n", err.Error())
		return 1
	}
	file := fmt.Sprintf("%s-%s-%d", name, sn.n.Name, time.Now().Unix())
	sn.ex.SetFile(path.Join(dataDir, "server/db/snapshots", file), append([]byte(snapshotMagic), body...), 0o600)
	fmt.Fprintf(stdout, "time=\"…\" level=info msg=\"Snapshot %s saved.\"\n", file)
	return 0
}

// clusterReset is `k3s server --cluster-reset
// --cluster-reset-restore-path=P` on a stopped server: the datastore
// becomes the snapshot's, the old database is moved aside, and K3s exits
// asking for a restart without the flag.
func (c *Cluster) clusterReset(sn *simNode, p string, stdout, stderr io.Writer) int {
	c.mu.Lock()
	state := sn.state
	c.mu.Unlock()
	if state == "active" {
		fmt.Fprintln(stderr, `level=fatal msg="starting etcd: listen tcp 127.0.0.1:2380: bind: address already in use"`)
		return 1
	}
	// Real K3s: "cannot perform cluster-reset while server URL is set".
	if eff, err := k3s.Effective(sn.sources()); err == nil && strings.TrimSpace(eff["server"].Value) != "" {
		fmt.Fprintln(stderr, `level=fatal msg="Error: cannot perform cluster-reset while server URL is set - remove server from configuration before resetting"`)
		return 1
	}
	data, ok := sn.ex.File(p)
	if !ok || !strings.HasPrefix(string(data), snapshotMagic) {
		fmt.Fprintf(stderr, "level=fatal msg=\"failed to restore snapshot %s: not an etcd snapshot\"\n", p)
		return 1
	}
	d, err := k3s.UnmarshalBootstrap(data[len(snapshotMagic):])
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.saveBootstrap(ctx, d)
		cancel()
	}
	if err != nil {
		fmt.Fprintf(stderr, "level=fatal msg=%q\n", err.Error())
		return 1
	}
	old := fmt.Sprintf("%s/db/etcd-old-%d", sn.sd(), time.Now().Unix())
	for _, f := range sn.ex.Files() {
		if rest, ok := strings.CutPrefix(f, sn.sd()+"/db/etcd/"); ok {
			b, _ := sn.ex.File(f)
			sn.ex.SetFile(old+"/"+rest, b, fs.FileMode(0o600))
		}
	}
	fmt.Fprintf(stdout, "level=info msg=\"Pre-restore etcd database moved to %s\"\n", old)
	fmt.Fprintln(stdout, `level=error msg="Shutdown request received: \"Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes\""`)
	return 0
}
