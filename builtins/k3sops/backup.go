package k3sops

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// backupManifest describes one node's backup.
type backupManifest struct {
	Node          string       `json:"node"`
	Name          string       `json:"name"`
	RunID         string       `json:"run_id"`
	Created       time.Time    `json:"created"`
	ArchiveSHA256 string       `json:"archive_sha256"`
	Files         []backupFile `json:"files"`
}

// backupFile is one file of a backup.
type backupFile struct {
	Path   string    `json:"path"`
	SHA256 string    `json:"sha256"`
	Size   int       `json:"size"`
	Mode   uint32    `json:"mode"`
	UID    int       `json:"uid"`
	GID    int       `json:"gid"`
	MTime  time.Time `json:"mtime"`
}

const (
	backupArchive      = "backup.tar.gz"
	backupManifestFile = "manifest.json"
)

// backupPatterns are the files a backup holds: the server's tls, cred and
// token (or the agent's certificates and kubeconfigs), the kubeconfig and
// every config source.
func (c *Target) backupPatterns(ns *nodeSources) []string {
	var pats []string
	if c.Node.Role == inventory.RoleServer {
		sd := c.sd()
		pats = append(pats, sd+"/tls/*", sd+"/tls/*/*", sd+"/cred/*", sd+"/token")
	}
	dd := c.dd()
	pats = append(pats, dd+"/agent/*.crt", dd+"/agent/*.key", dd+"/agent/*.kubeconfig", c.Node.K3s.KubeConfig)
	return append(pats, ns.paths()...)
}

// nodeBackupDir and localBackupDir are where a backup named name lives.
func (c *Target) nodeBackupDir(name string) string { return c.caretakerDir("backup", name) }

func (c *Target) localBackupDir(name string) string {
	return filepath.Join(c.Run.StateDir(), "backups", name, c.Node.Name)
}

// makeArchive builds a gzipped tar of files (paths stored without the
// leading slash) and its manifest.
func makeArchive(files []remoteFile) ([]byte, []backupFile, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	var list []backupFile
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.Path] {
			continue
		}
		seen[f.Path] = true
		h := &tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: int64(f.Mode), Uid: f.UID, Gid: f.GID, Size: int64(len(f.Data)), ModTime: f.MTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, nil, err
		}
		list = append(list, backupFile{Path: f.Path, SHA256: sha256Hex(f.Data), Size: len(f.Data), Mode: f.Mode, UID: f.UID, GID: f.GID, MTime: f.MTime.UTC()})
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), list, nil
}

// readArchive returns the files of a backup archive by path.
func readArchive(data []byte) (map[string][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out["/"+h.Name] = b
	}
}

// writeLocalPrivate writes a file on the controller readable by its owner
// only, creating directories 0700.
func writeLocalPrivate(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// backupOutcome says what backup did.
type backupOutcome int

const (
	backupExisted backupOutcome = iota // on the node and the controller already
	backupCopied                       // on the node; copied to the controller now
	backupTaken                        // taken now
	backupPlanned                      // check mode: would be taken or copied
)

// backup archives the node's certificates and config sources under name.
// patterns, when set, replace the default file set.
func (c *Target) backup(ctx context.Context, name string, patterns []string) (*backupManifest, backupOutcome, error) {
	dir := c.nodeBackupDir(name)
	local := c.localBackupDir(name)
	got, err := c.fetchMap(ctx, dir+"/"+backupManifestFile, dir+"/"+backupArchive)
	if err != nil {
		return nil, 0, err
	}
	if mf, ok := got[dir+"/"+backupManifestFile]; ok {
		var m backupManifest
		if err := json.Unmarshal(mf.Data, &m); err != nil {
			return nil, 0, c.errorf("%s/%s is damaged: %w", dir, backupManifestFile, err)
		}
		arch := got[dir+"/"+backupArchive]
		if sha256Hex(arch.Data) != m.ArchiveSHA256 {
			return nil, 0, c.errorf("%s/%s does not match its manifest (sha256 differs); move the directory away to take a new backup", dir, backupArchive)
		}
		outcome := backupExisted
		if _, err := os.Stat(filepath.Join(local, backupArchive)); err != nil {
			outcome = backupPlanned
			err := c.Run.Wet(fmt.Sprintf("copy backup %s of %s to %s", name, c.Node.Name, local), func() error {
				if err := writeLocalPrivate(filepath.Join(local, backupArchive), arch.Data); err != nil {
					return c.errorf("copy the backup to the controller: %w", err)
				}
				if err := writeLocalPrivate(filepath.Join(local, backupManifestFile), mf.Data); err != nil {
					return c.errorf("copy the backup to the controller: %w", err)
				}
				outcome = backupCopied
				return nil
			})
			if err != nil {
				return nil, 0, err
			}
		}
		return &m, outcome, nil
	}
	if patterns == nil {
		ns, err := c.readSources(ctx)
		if err != nil {
			return nil, 0, err
		}
		patterns = c.backupPatterns(ns)
	}
	files, err := c.fetch(ctx, patterns...)
	if err != nil {
		return nil, 0, err
	}
	archive, list, err := makeArchive(files)
	if err != nil {
		return nil, 0, c.errorf("build the archive: %w", err)
	}
	m := &backupManifest{Node: c.Node.Name, Name: name, RunID: c.Run.RunID(), Created: time.Now().UTC(), ArchiveSHA256: sha256Hex(archive), Files: list}
	mb, _ := json.MarshalIndent(m, "", "  ")
	mb = append(mb, '\n')
	outcome := backupPlanned
	err = c.Run.Wet(fmt.Sprintf("back up %d files of %s to %s on the node and %s", len(list), c.Node.Name, dir, local), func() error {
		if err := c.mkdirPrivate(ctx, dir); err != nil {
			return err
		}
		if err := c.Exec.WriteFile(ctx, dir+"/"+backupArchive, archive, 0o600); err != nil {
			return c.errorf("write %s/%s: %w", dir, backupArchive, err)
		}
		if err := c.Exec.WriteFile(ctx, dir+"/"+backupManifestFile, mb, 0o600); err != nil {
			return c.errorf("write %s/%s: %w", dir, backupManifestFile, err)
		}
		if err := writeLocalPrivate(filepath.Join(local, backupArchive), archive); err != nil {
			return c.errorf("copy the backup to the controller: %w", err)
		}
		if err := writeLocalPrivate(filepath.Join(local, backupManifestFile), mb); err != nil {
			return c.errorf("copy the backup to the controller: %w", err)
		}
		c.Run.MarkChanged()
		outcome = backupTaken
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return m, outcome, nil
}

// BackupResult describes a node's backup.
type BackupResult struct {
	Name string `json:"name"`
	// Changed is false when the backup existed already (or in check mode).
	Changed bool `json:"changed"`
	// NodeDir and LocalDir hold backup.tar.gz and manifest.json on the
	// node and on the controller.
	NodeDir       string   `json:"node_dir"`
	LocalDir      string   `json:"local_dir"`
	Files         []string `json:"files"`
	ArchiveSHA256 string   `json:"archive_sha256"`
}

// Backup archives the server's tls/, cred/ and token (an agent's
// certificates), the kubeconfig and every config source into
// DATA_DIR/caretaker/backup/<name>/backup.tar.gz on the node, with a
// sha256 manifest, and copies both to <state dir>/backups/<name>/<node>/ on
// the controller; files 0600. name defaults to the run ID. Taking the same
// backup again changes nothing.
func Backup(ctx context.Context, c *Target, name string) (*BackupResult, error) {
	if name == "" {
		name = c.Run.RunID()
	}
	if strings.ContainsAny(name, "/ \n") || name == "." || name == ".." {
		return nil, c.errorf("backup name %q: use letters, digits, dots and dashes", name)
	}
	m, made, err := c.backup(ctx, name, nil)
	if err != nil {
		return nil, err
	}
	if made != backupPlanned {
		c.Run.Output(runner.StreamLog, fmt.Sprintf("backup %s: %d files in %s and %s", name, len(m.Files), c.nodeBackupDir(name), c.localBackupDir(name)))
	}
	changed := made == backupTaken || made == backupCopied
	paths := []string{}
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	return &BackupResult{Name: m.Name, Changed: changed, NodeDir: c.nodeBackupDir(m.Name), LocalDir: c.localBackupDir(m.Name), Files: paths, ArchiveSHA256: m.ArchiveSHA256}, nil
}

// findBackup locates a backup on the node (or on the controller): by name,
// or the newest when name is empty.
func (c *Target) findBackup(ctx context.Context, name string) (*backupManifest, []byte, error) {
	pat := c.caretakerDir("backup", "*", backupManifestFile)
	if name != "" {
		pat = c.nodeBackupDir(name) + "/" + backupManifestFile
	}
	files, err := c.fetch(ctx, pat)
	if err != nil {
		return nil, nil, err
	}
	var best *backupManifest
	for _, f := range files {
		var m backupManifest
		if err := json.Unmarshal(f.Data, &m); err != nil {
			continue
		}
		if strings.HasPrefix(m.Name, "pre-restore-") && name == "" {
			continue
		}
		if best == nil || m.Created.After(best.Created) {
			mm := m
			best = &mm
		}
	}
	if best != nil {
		arch, err := c.fetchMap(ctx, c.nodeBackupDir(best.Name)+"/"+backupArchive)
		if err != nil {
			return nil, nil, err
		}
		data := arch[c.nodeBackupDir(best.Name)+"/"+backupArchive].Data
		if sha256Hex(data) != best.ArchiveSHA256 {
			return nil, nil, c.errorf("the archive of backup %s on the node does not match its manifest", best.Name)
		}
		return best, data, nil
	}
	if name == "" {
		return nil, nil, c.errorf("no backup on the node (looked in %s)", c.caretakerDir("backup"))
	}
	// The controller's copy.
	local := c.localBackupDir(name)
	mb, err1 := os.ReadFile(filepath.Join(local, backupManifestFile))
	data, err2 := os.ReadFile(filepath.Join(local, backupArchive))
	if err1 != nil || err2 != nil {
		return nil, nil, c.errorf("no backup %q on the node (%s) nor on the controller (%s)", name, c.nodeBackupDir(name), local)
	}
	var m backupManifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, nil, c.errorf("%s: %w", filepath.Join(local, backupManifestFile), err)
	}
	if sha256Hex(data) != m.ArchiveSHA256 {
		return nil, nil, c.errorf("%s does not match its manifest", filepath.Join(local, backupArchive))
	}
	return &m, data, nil
}

// RestoreResult is what Restore put back.
type RestoreResult struct {
	Changed bool     `json:"changed"`
	Backup  string   `json:"backup"`
	Files   []string `json:"files"`
	// SafetyBackup is the backup of what the files held before (empty when
	// nothing changed).
	SafetyBackup string `json:"safety_backup,omitempty" star:"safety_backup,omitempty"`
}

// Restore puts the files of a backup (the newest on the node when backup
// is empty) back on the node, with their modes and modification times,
// after taking a safety backup named pre-restore-<run-id> of what they
// hold now. Files already equal to the backup are left alone. restart
// restarts K3s afterwards. A server whose datastore holds a different CA
// pulls it again at its next start: restoring a CA needs RotateCA too.
func Restore(ctx context.Context, c *Target, backup string, restart bool) (*RestoreResult, error) {
	return c.restoreBackup(ctx, backup, restart)
}

// restoreBackup puts backup name (the newest when empty) back on the node.
func (c *Target) restoreBackup(ctx context.Context, name string, restart bool) (*RestoreResult, error) {
	m, archive, err := c.findBackup(ctx, name)
	if err != nil {
		return nil, err
	}
	contents, err := readArchive(archive)
	if err != nil {
		return nil, c.errorf("read backup %s: %w", m.Name, err)
	}
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	pending, err := c.pendingRestore(ctx, m, contents, paths)
	if err != nil {
		return nil, err
	}
	if len(pending) == 0 {
		c.Run.Output(runner.StreamLog, fmt.Sprintf("every file already matches backup %s", m.Name))
		return &RestoreResult{Backup: m.Name, Files: []string{}}, nil
	}
	var restored []string
	for _, f := range pending {
		restored = append(restored, f.Path)
	}
	safety := "pre-restore-" + c.Run.RunID()
	err = c.Run.Wet(fmt.Sprintf("restore %d file(s) of backup %s on %s: %s", len(pending), m.Name, c.Node.Name, strings.Join(restored, ", ")), func() error {
		if _, _, err := c.backup(ctx, safety, paths); err != nil {
			return fmt.Errorf("safety backup before restoring (nothing was changed): %w", err)
		}
		undo, _ := json.Marshal(map[string]any{"node": c.Node.Name, "backup": safety, "files": restored})
		if err := c.Run.Undo("k3s.restore", undo); err != nil {
			return c.errorf("record the undo action (nothing was changed): %w", err)
		}
		return c.writeRestored(ctx, pending, contents)
	})
	if err != nil {
		return nil, err
	}
	if restart {
		res, err := c.restart(ctx, RestartOptions{Timeout: 3 * time.Minute})
		if err != nil {
			return nil, err
		}
		if !res.OK {
			return nil, c.errorf("restored backup %s but %s did not come back: %s; last journal lines:\n%s", m.Name, c.Node.K3s.Service, res.reason, strings.Join(res.Journal, "\n"))
		}
	}
	return &RestoreResult{Changed: true, Backup: m.Name, Files: restored, SafetyBackup: safety}, nil
}

// pendingRestore checks every file of backup m against its archive
// contents and returns those the node (at paths) holds differently.
func (c *Target) pendingRestore(ctx context.Context, m *backupManifest, contents map[string][]byte, paths []string) ([]backupFile, error) {
	cur, err := c.fetchMap(ctx, paths...)
	if err != nil {
		return nil, err
	}
	var pending []backupFile
	for _, f := range m.Files {
		data, ok := contents[f.Path]
		if !ok || sha256Hex(data) != f.SHA256 {
			return nil, c.errorf("backup %s: %s is missing from the archive or damaged", m.Name, f.Path)
		}
		now, exists := cur[f.Path]
		if exists && bytes.Equal(now.Data, data) && now.Mode == f.Mode {
			continue
		}
		pending = append(pending, f)
	}
	return pending, nil
}

// writeRestored writes the pending files of a backup with their modes and
// modification times, and reloads systemd when a unit file was among
// them.
func (c *Target) writeRestored(ctx context.Context, pending []backupFile, contents map[string][]byte) error {
	reload := false
	var touch []string
	dirs := map[string]bool{}
	for _, f := range pending {
		dirs[path.Dir(f.Path)] = true
	}
	var mk []string
	for d := range dirs {
		mk = append(mk, transport.ShellQuote(d))
	}
	sort.Strings(mk)
	if _, _, err := c.runQuiet(ctx, "mkdir -p -- "+strings.Join(mk, " "), time.Minute); err != nil {
		return c.errorf("create directories: %w", err)
	}
	for _, f := range pending {
		if err := c.Exec.WriteFile(ctx, f.Path, contents[f.Path], fs.FileMode(f.Mode)); err != nil {
			return c.errorf("write %s: %w", f.Path, err)
		}
		c.Run.MarkChanged()
		touch = append(touch, fmt.Sprintf("chmod %o %s && touch -m -d @%d %s", f.Mode, transport.ShellQuote(f.Path), f.MTime.Unix(), transport.ShellQuote(f.Path)))
		if f.Path == c.Node.K3s.UnitFile || strings.HasPrefix(f.Path, c.Node.K3s.UnitFile+".d/") {
			reload = true
		}
	}
	// Modification times matter: K3s refuses disk files newer than
	// the datastore (k3s-ca-rotation.md §2).
	if _, _, err := c.runQuiet(ctx, strings.Join(touch, " && "), time.Minute); err != nil {
		return c.errorf("set modes and modification times: %w", err)
	}
	if reload {
		return c.daemonReload(ctx)
	}
	return nil
}
