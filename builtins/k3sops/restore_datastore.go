package k3sops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// RestoreDatastoreOptions say which snapshot a restore puts back.
type RestoreDatastoreOptions struct {
	// Snapshot is a file on the controller (caretaker's copy, uploaded to
	// the server's snapshot directory first), or a path or file name in
	// the server's snapshot directory.
	Snapshot string
	// TokenFile is the cluster token the snapshot was taken with, on the
	// controller; default Snapshot + ".token" when that exists. K3s needs
	// it when the token changed since.
	TokenFile string
}

// RestoreDatastoreResult says what a restore did.
type RestoreDatastoreResult struct {
	Node     string `json:"node"`
	Snapshot string `json:"snapshot"` // on the node
	Uploaded bool   `json:"uploaded"`
	// PreRestore is where K3s moved the database it replaced.
	PreRestore string `json:"pre_restore"`
}

// clusterResetTimeout bounds `k3s server --cluster-reset` (a real restore
// takes seconds to a minute).
const clusterResetTimeout = 10 * time.Minute

var preRestoreRe = regexp.MustCompile(`Pre-restore etcd database moved to (\S+?)"?(\s|$)`)

// RestoreDatastore restores the cluster's datastore from a snapshot on
// server c with K3s's own `k3s server --cluster-reset
// --cluster-reset-restore-path=SNAPSHOT`: the server becomes the only
// member of a cluster holding the snapshot's data. K3s must be stopped on
// every server first and `server` must be unset on c (K3s refuses a
// cluster reset while a server URL is set); afterwards c is started and
// every other server rejoins with its database moved aside
// (MoveDatabaseAside). All checks run in check mode too.
func RestoreDatastore(ctx context.Context, c *Target, o RestoreDatastoreOptions) (*RestoreDatastoreResult, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; a datastore is restored on a server")
	}
	if _, err := c.Exec.Stat(ctx, c.sd()+"/db"); errors.Is(err, fs.ErrNotExist) {
		return nil, c.errorf("has no %s/db: K3s with embedded etcd never ran here", c.sd())
	}
	res := &RestoreDatastoreResult{Node: c.Node.Name}
	snap, local, err := c.resolveSnapshot(ctx, o.Snapshot)
	if err != nil {
		return nil, err
	}
	res.Snapshot = snap
	tokenFile := o.TokenFile
	if tokenFile == "" && local != nil {
		if _, err := os.Stat(o.Snapshot + ".token"); err == nil {
			tokenFile = o.Snapshot + ".token"
		}
	}
	var token []byte
	if tokenFile != "" {
		if token, err = os.ReadFile(tokenFile); err != nil {
			return nil, c.errorf("token file: %w", err)
		}
		c.Run.Redact(strings.TrimSpace(string(token)))
	}
	undo, _ := json.Marshal(map[string]string{"how": "the database before the restore is kept in " + c.sd() + "/db/etcd-old-<time> on " + c.Node.Name + "; to go back, restore a snapshot taken before this run"})
	what := fmt.Sprintf("restore the datastore on %s from %s (k3s server --cluster-reset --cluster-reset-restore-path)", c.Node.Name, snap)
	err = c.Run.Wet(what, func() error {
		// K3s stopped and `server` unset: in check mode the steps before
		// (stop, strip_server) only reported, so this is checked here.
		if err := c.restorePreconditions(ctx); err != nil {
			return err
		}
		if err := c.Run.Undo("k3s.restore_datastore", undo); err != nil {
			return err
		}
		if local != nil {
			if res.Uploaded, err = c.uploadSnapshot(ctx, snap, local); err != nil {
				return err
			}
		}
		return c.clusterReset(ctx, snap, token, res)
	})
	if err != nil {
		return nil, err
	}
	if res.PreRestore == "" { // check mode: only reported
		return res, nil
	}
	c.Run.MarkChanged()
	c.Run.Note(fmt.Sprintf("datastore restored on %s from %s; the database it replaced is in %s. Start K3s on %s, then on every other server move %s/db aside and start K3s (the restore-datastore playbook does both)",
		c.Node.Name, snap, res.PreRestore, c.Node.Name, c.sd()))
	return res, nil
}

// restorePreconditions: K3s stopped, no effective `server`.
func (c *Target) restorePreconditions(ctx context.Context) error {
	state, err := c.serviceState(ctx)
	if err != nil {
		return err
	}
	if state == "active" || state == "activating" || state == "reloading" {
		return c.errorf("K3s (%s) is %s: stop it on every server before a restore (systemctl stop %s)", c.Node.K3s.Service, state, c.Node.K3s.Service)
	}
	ns, err := c.readSources(ctx)
	if err != nil {
		return err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return err
	}
	if s, ok := eff["server"]; ok && strings.TrimSpace(s.Value) != "" {
		return c.errorf("`server` is set (%s:%d): K3s refuses a cluster reset while a server URL is set; remove it first (k3s.strip_server)", s.Source, s.Line)
	}
	return nil
}

// SnapshotLocation is where a snapshot to restore was found.
type SnapshotLocation struct {
	// Path is the snapshot on the node (where a controller file would be
	// uploaded to); Controller the controller file, "" when the snapshot
	// is only on the node.
	Path       string `json:"path"`
	Controller string `json:"controller"`
	Size       int64  `json:"size"`
	// TokenFile is the token file a restore would use ("" if none).
	TokenFile string `json:"token_file"`
}

// FindSnapshot resolves the snapshot a restore on server c would use,
// without changing anything: a preflight, so that a missing snapshot is
// found before any server is stopped.
func FindSnapshot(ctx context.Context, c *Target, snapshot, tokenFile string) (*SnapshotLocation, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; a datastore is restored on a server")
	}
	p, local, err := c.resolveSnapshot(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	loc := &SnapshotLocation{Path: p, Size: int64(len(local))}
	if local != nil {
		loc.Controller = snapshot
		if tokenFile == "" {
			if _, err := os.Stat(snapshot + ".token"); err == nil {
				tokenFile = snapshot + ".token"
			}
		}
	} else if fi, err := c.Exec.Stat(ctx, p); err == nil {
		loc.Size = fi.Size
	}
	if tokenFile != "" {
		if _, err := os.Stat(tokenFile); err != nil {
			return nil, c.errorf("token file: %w", err)
		}
		loc.TokenFile = tokenFile
	}
	return loc, nil
}

// resolveSnapshot finds the snapshot: a controller file (returned as
// local data, to upload to the node's snapshot dir) or a file on the node.
func (c *Target) resolveSnapshot(ctx context.Context, snapshot string) (string, []byte, error) {
	if snapshot == "" {
		return "", nil, c.errorf("no snapshot given: name a snapshot file (caretaker's copy on the controller, or one in %s)", SnapshotDir(c.Node))
	}
	if filepath.IsAbs(snapshot) {
		if data, err := os.ReadFile(snapshot); err == nil {
			return path.Join(SnapshotDir(c.Node), filepath.Base(snapshot)), data, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", nil, c.errorf("snapshot %s: %w", snapshot, err)
		}
	}
	p := snapshot
	if !strings.Contains(p, "/") {
		p = path.Join(SnapshotDir(c.Node), p)
	}
	if _, err := c.Exec.Stat(ctx, p); err != nil {
		return "", nil, c.errorf("snapshot %s: neither on the controller nor on the node (%w)", snapshot, err)
	}
	return p, nil, nil
}

// uploadSnapshot writes the controller's snapshot to the node (0600)
// unless the node already has it.
func (c *Target) uploadSnapshot(ctx context.Context, p string, data []byte) (bool, error) {
	sum := sha256.Sum256(data)
	if out, _, err := c.runQuiet(ctx, "sha256sum -- "+transport.ShellQuote(p)+" 2>/dev/null || true", 5*time.Minute); err == nil {
		if f := strings.Fields(out); len(f) > 0 && f[0] == hex.EncodeToString(sum[:]) {
			return false, nil
		}
	}
	if err := c.mkdirPrivate(ctx, path.Dir(p)); err != nil {
		return false, err
	}
	if err := c.Exec.WriteFile(ctx, p, data, 0o600); err != nil {
		return false, c.errorf("upload the snapshot to %s: %w", p, err)
	}
	return true, nil
}

// clusterReset runs the restore; token, when given, goes through a 0600
// file on the node (never the command line).
func (c *Target) clusterReset(ctx context.Context, snap string, token []byte, res *RestoreDatastoreResult) error {
	line := "k3s server --cluster-reset --cluster-reset-restore-path=" + transport.ShellQuote(snap)
	if len(token) > 0 {
		dir := c.caretakerDir("restore", c.Run.RunID())
		if err := c.mkdirPrivate(ctx, dir); err != nil {
			return err
		}
		tf := dir + "/token"
		if err := c.Exec.WriteFile(ctx, tf, token, 0o600); err != nil {
			return c.errorf("write the snapshot's token to %s: %w", tf, err)
		}
		defer func() {
			_, _, _ = c.runQuiet(context.WithoutCancel(ctx), "rm -f -- "+transport.ShellQuote(tf), 30*time.Second)
		}()
		line += " --token-file " + transport.ShellQuote(tf)
	}
	_, stdout, stderr, err := c.Run.RunCommand(ctx, c.Exec, c.Node, transport.Command{Line: line, Timeout: clusterResetTimeout}, true, true)
	all := stdout + "\n" + stderr
	if err != nil {
		return c.errorf("k3s server --cluster-reset: %w%s", err, lastLines(fatalLines(all), 3))
	}
	if !strings.Contains(all, "cluster membership has been reset") {
		return c.errorf("k3s server --cluster-reset ended without saying the cluster was reset%s", lastLines(all, 3))
	}
	if m := preRestoreRe.FindStringSubmatch(all); m != nil {
		res.PreRestore = strings.TrimSuffix(m[1], `\`)
	} else {
		res.PreRestore = c.sd() + "/db/etcd-old-*"
	}
	return nil
}

// fatalLines keeps the fatal and error lines of K3s's output.
func fatalLines(s string) string {
	var b bytes.Buffer
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "level=fatal") || strings.Contains(l, "level=error") {
			b.WriteString(l + "\n")
		}
	}
	if b.Len() == 0 {
		return s
	}
	return b.String()
}

// MoveDatabaseAside moves a server's database (SD/db) to
// SD/db-pre-restore-<run ID> so that the server joins the restored cluster
// afresh at its next start (K3s: "Backup and delete ${datadir}/server/db
// on each peer etcd server and rejoin the nodes"). K3s must be stopped.
// Idempotent: once moved, a second call changes nothing.
func MoveDatabaseAside(ctx context.Context, c *Target) (string, error) {
	if c.Node.Role != inventory.RoleServer {
		return "", c.errorf("is an agent; only servers hold a database")
	}
	aside := c.sd() + "/db-pre-restore-" + c.Run.RunID()
	if _, err := c.Exec.Stat(ctx, aside); err == nil {
		return aside, nil
	}
	if _, err := c.Exec.Stat(ctx, c.sd()+"/db"); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	undo, _ := json.Marshal(map[string]string{"how": "the database of " + c.Node.Name + " before the restore is in " + aside})
	err := c.Run.Wet("move "+c.sd()+"/db aside to "+aside+" on "+c.Node.Name, func() error {
		// Checked here: in check mode the stop before only reported.
		state, err := c.serviceState(ctx)
		if err != nil {
			return err
		}
		if state == "active" || state == "activating" {
			return c.errorf("K3s (%s) is %s: stop it before moving its database aside", c.Node.K3s.Service, state)
		}
		if err := c.Run.Undo("k3s.move_database_aside", undo); err != nil {
			return err
		}
		_, _, _, err = c.Run.RunCommand(ctx, c.Exec, c.Node, transport.Command{Line: "mv -- " + transport.ShellQuote(c.sd()+"/db") + " " + transport.ShellQuote(aside)}, true, true)
		return err
	})
	if err != nil {
		return "", c.errorf("move the database aside: %w", err)
	}
	return aside, nil
}
