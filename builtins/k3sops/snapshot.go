package k3sops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// SnapshotResult is a datastore snapshot taken with K3s's own `k3s
// etcd-snapshot save` and copied to the controller.
type SnapshotResult struct {
	// Name is K3s's name of the snapshot file: NAME-<node name>-<unix
	// time>, in Dir on the node.
	Name string `json:"name"`
	Node string `json:"node"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256 is the hex digest of the file, the same on the node and on
	// the controller.
	SHA256 string `json:"sha256"`
	// Local is the controller's copy (0600, in the run's backup dir) and
	// TokenFile the cluster token beside it (0600): a snapshot restores
	// only with the token it was taken with.
	Local     string `json:"local"`
	TokenFile string `json:"token_file"`
	// Reused says an earlier attempt of the run had already taken it.
	Reused bool `json:"reused"`
}

// snapshotNameRe is what K3s accepts as a snapshot name (a file name
// prefix; K3s appends the node name and time).
var snapshotNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$`)

// snapshotTimeout bounds `k3s etcd-snapshot save` (a large datastore on a
// slow disk takes tens of seconds).
const snapshotTimeout = 10 * time.Minute

// SnapshotDir is where K3s writes etcd snapshots on a server by default.
func SnapshotDir(n *inventory.Node) string { return ServerDir(n) + "/db/snapshots" }

// Snapshot saves a snapshot of the cluster's datastore on server c with
// `k3s etcd-snapshot save --name NAME` (default caretaker-<run ID>), and
// copies it with the cluster token to the controller (the run's backup
// dir, 0600). It refuses a server without embedded etcd, also in check
// mode, where it only says what it would do. A snapshot of this name an
// earlier attempt of the run took (and copied) is reused.
func Snapshot(ctx context.Context, c *Target, name string) (*SnapshotResult, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; a datastore snapshot is taken on a server")
	}
	if name == "" {
		name = "caretaker-" + c.Run.RunID()
	}
	if !snapshotNameRe.MatchString(name) {
		return nil, c.errorf("snapshot name %q: use letters, digits, '.', '_' and '-'", name)
	}
	if _, err := c.Exec.Stat(ctx, c.sd()+"/db/etcd"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, c.errorf("has no embedded etcd (%s/db/etcd): a datastore snapshot needs K3s's embedded etcd; back up an external datastore with its own tools", c.sd())
		}
		return nil, c.errorf("stat %s/db/etcd: %w", c.sd(), err)
	}
	localDir := filepath.Join(c.Run.StateDir(), "backups", c.Run.RunID(), "datastore")
	res := &SnapshotResult{Node: c.Node.Name}
	if found, err := c.reuseSnapshot(ctx, name, localDir, res); err != nil || found {
		return res, err
	}
	what := fmt.Sprintf("save a datastore snapshot %s on %s (k3s etcd-snapshot save) and copy it with the cluster token to %s", name, c.Node.Name, localDir)
	if err := c.Run.Wet(what, func() error { return c.saveSnapshot(ctx, name, localDir, res) }); err != nil {
		return nil, err
	}
	if res.Path == "" { // check mode
		return res, nil
	}
	c.Run.MarkChanged()
	c.Run.Note(fmt.Sprintf("datastore snapshot %s on %s: %s (%d bytes, sha256 %s); copy %s, token %s (both 0600); restore: caretaker run restore-datastore -p snapshot=%s",
		res.Name, res.Node, res.Path, res.Size, res.SHA256, res.Local, res.TokenFile, res.Local))
	return res, nil
}

// saveSnapshot runs `k3s etcd-snapshot save` and copies its file.
func (c *Target) saveSnapshot(ctx context.Context, name, localDir string, res *SnapshotResult) error {
	line := fmt.Sprintf("k3s etcd-snapshot save --data-dir %s --name %s", transport.ShellQuote(c.dd()), transport.ShellQuote(name))
	_, _, stderr, err := c.Run.RunCommand(ctx, c.Exec, c.Node, transport.Command{Line: line, Timeout: snapshotTimeout}, true, true)
	if err != nil {
		return c.errorf("k3s etcd-snapshot save: %w%s", err, lastLines(stderr, 3))
	}
	files, err := c.snapshotFiles(ctx, name)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return c.errorf("k3s etcd-snapshot save succeeded but no snapshot %s-* is in %s%s", name, SnapshotDir(c.Node), lastLines(stderr, 3))
	}
	return c.copySnapshot(ctx, files[len(files)-1], localDir, res)
}

// reuseSnapshot finds a snapshot an earlier attempt of the run took; when
// the controller's copy is missing or differs it is copied again.
func (c *Target) reuseSnapshot(ctx context.Context, name, localDir string, res *SnapshotResult) (bool, error) {
	files, err := c.snapshotFiles(ctx, name)
	if err != nil || len(files) == 0 {
		return false, err
	}
	res.Reused = true
	return true, c.Run.Wet("copy the datastore snapshot "+files[len(files)-1]+" an earlier attempt took to "+localDir, func() error {
		return c.copySnapshot(ctx, files[len(files)-1], localDir, res)
	})
}

// snapshotFiles lists the node's snapshot files NAME-*, oldest first
// (K3s ends the name with the unix time).
func (c *Target) snapshotFiles(ctx context.Context, name string) ([]string, error) {
	dir := SnapshotDir(c.Node)
	out, _, err := c.runQuiet(ctx, "ls -1 -- "+transport.ShellQuote(dir)+" 2>/dev/null || true", 30*time.Second)
	if err != nil {
		return nil, c.errorf("list %s: %w", dir, err)
	}
	var files []string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, name+"-") && !strings.HasSuffix(f, ".zip") {
			files = append(files, path.Join(dir, f))
		}
	}
	sort.Strings(files)
	return files, nil
}

// copySnapshot reads the snapshot file, checks it against sha256sum on the
// node, and writes it and the cluster token to the controller.
func (c *Target) copySnapshot(ctx context.Context, p, localDir string, res *SnapshotResult) error {
	data, err := c.Exec.ReadFile(ctx, p)
	if err != nil {
		return c.errorf("read the snapshot %s: %w", p, err)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	out, _, err := c.runQuiet(ctx, "sha256sum -- "+transport.ShellQuote(p), 5*time.Minute)
	if err != nil {
		return c.errorf("sha256sum %s: %w", p, err)
	}
	if f := strings.Fields(out); len(f) == 0 || f[0] != digest {
		return c.errorf("the copy of %s read from the node does not match its sha256 there (%s): read it again", p, strings.TrimSpace(out))
	}
	tok, err := c.serverToken(ctx)
	if err != nil {
		return err
	}
	res.Name, res.Path, res.Size, res.SHA256 = path.Base(p), p, int64(len(data)), digest
	res.Local = filepath.Join(localDir, res.Name)
	res.TokenFile = res.Local + ".token"
	if err := writeLocalPrivate(res.Local, data); err != nil {
		return c.errorf("write %s: %w", res.Local, err)
	}
	if err := writeLocalPrivate(res.TokenFile, []byte(tok+"\n")); err != nil {
		return c.errorf("write %s: %w", res.TokenFile, err)
	}
	return nil
}

// lastLines is ": " and the last n non-empty lines of s, for errors.
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "Unknown flag") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return ": " + strings.Join(lines, " / ")
}
