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
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
)

// Edit records: before caretaker edits a config source (strip_server,
// update_token) it keeps the exact original bytes on the node itself, under
// DATA_DIR/caretaker/<kind>/<run-id>/, with a manifest, all 0600. Any
// controller can put them back after a crash (restore_server,
// restore_token): the record travels with the node, not with the run.

// editRecord is the manifest of one record.
type editRecord struct {
	Kind     string       `json:"kind"`
	RunID    string       `json:"run_id"`
	Node     string       `json:"node"`
	Created  time.Time    `json:"created"`
	Files    []editedFile `json:"files"`
	Restored *time.Time   `json:"restored,omitempty"`

	dir string // record directory on the node (not stored)
}

// editedFile is one file of a record.
type editedFile struct {
	Path         string `json:"path"`
	Orig         string `json:"orig"` // file name of the original bytes, relative to the record dir
	BeforeSHA256 string `json:"before_sha256"`
	AfterSHA256  string `json:"after_sha256"`
	What         string `json:"what"`
}

// undoData is the JSON handed to env.Undo for edit records. A token
// update also records the CA hashes the token pinned before and after
// (undoToken decides with them whether putting it back is safe).
type undoData struct {
	Node       string   `json:"node"`
	Record     string   `json:"record"`
	Files      []string `json:"files"`
	FromCAHash string   `json:"from_ca_hash,omitempty"`
	ToCAHash   string   `json:"to_ca_hash,omitempty"`
	// How tells the operator the way back when there is no automatic
	// undo (`caretaker undo` shows it as a note).
	How string `json:"how,omitempty"`
}

// undoHow is the How of the edit kinds without an automatic undo.
var undoHow = map[string]string{
	tokenRotationKind: "the token sources hold the new token (the originals are kept on the node in the record); " +
		"putting the old token back alone would stop K3s from starting, since the datastore opens only with the new token: " +
		"to go back, rotate again to the old token (the run's old-token file)",
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// recordRoot is DATA_DIR/caretaker/<kind>.
func (c *Target) recordRoot(kind string) string { return c.caretakerDir(kind) }

// loadRecords reads every record of kind on the node, newest first.
func (c *Target) loadRecords(ctx context.Context, kind string) ([]*editRecord, error) {
	files, err := c.fetch(ctx, c.recordRoot(kind)+"/*/manifest.json")
	if err != nil {
		return nil, err
	}
	var out []*editRecord
	for _, f := range files {
		var r editRecord
		if err := json.Unmarshal(f.Data, &r); err != nil {
			return nil, c.errorf("%s is not a caretaker edit record: %w", f.Path, err)
		}
		r.dir = path.Dir(f.Path)
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// applyEdits records the originals of edits on the node (and as an undo
// action) and then writes the new contents, atomically file by file. Edits
// that change nothing are dropped. It returns the edits applied (or that
// would be applied in check mode) and the record directory.
func (c *Target) applyEdits(ctx context.Context, kind, undoKind, verb string, edits []k3s.Edit, ns *nodeSources, undo undoData) ([]k3s.Edit, string, error) {
	var real []k3s.Edit
	for _, e := range edits {
		if !bytes.Equal(e.Before, e.After) {
			real = append(real, e)
		}
	}
	if len(real) == 0 {
		return nil, "", nil
	}
	dir := path.Join(c.recordRoot(kind), c.Run.RunID())
	var paths []string
	for _, e := range real {
		paths = append(paths, fmt.Sprintf("%s (%s)", e.Path, e.What))
	}
	what := fmt.Sprintf("%s on %s: %s; originals kept in %s", verb, c.Node.Name, strings.Join(paths, "; "), dir)
	err := c.Run.Wet(what, func() error {
		rec, err := c.writeRecord(ctx, kind, dir, real)
		if err != nil {
			return err
		}
		var files []string
		for _, f := range rec.Files {
			files = append(files, f.Path)
		}
		undo.Node, undo.Record, undo.Files, undo.How = c.Node.Name, dir, files, undoHow[kind]
		data, _ := json.Marshal(undo)
		if err := c.Run.Undo(undoKind, data); err != nil {
			return c.errorf("record the undo action before editing (nothing was changed): %w", err)
		}
		reload := false
		for _, e := range real {
			mode := fs.FileMode(0o600)
			if f, ok := ns.files[e.Path]; ok {
				mode = fs.FileMode(f.Mode)
			}
			if err := c.Exec.WriteFile(ctx, e.Path, e.After, mode); err != nil {
				return c.errorf("write %s: %w (the original is kept in %s)", e.Path, err, dir)
			}
			c.Run.MarkChanged()
			c.Run.Output(runner.StreamLog, fmt.Sprintf("%s: %s", e.Path, e.What))
			if ns.unitPaths[e.Path] {
				reload = true
			}
		}
		if reload {
			return c.daemonReload(ctx)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return real, dir, nil
}

// writeRecord stores the original bytes of edits under dir, merging with
// a record of the same run (a repeated call after a partial one), and
// writes the manifest last: a record with a manifest is complete.
func (c *Target) writeRecord(ctx context.Context, kind, dir string, edits []k3s.Edit) (*editRecord, error) {
	if err := c.mkdirPrivate(ctx, dir); err != nil {
		return nil, err
	}
	rec := &editRecord{Kind: kind, RunID: c.Run.RunID(), Node: c.Node.Name, Created: time.Now().UTC(), dir: dir}
	if old, err := c.Exec.ReadFile(ctx, dir+"/manifest.json"); err == nil {
		if err := json.Unmarshal(old, rec); err != nil {
			return nil, c.errorf("%s/manifest.json is damaged: %w", dir, err)
		}
		rec.Restored = nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, c.errorf("read %s/manifest.json: %w", dir, err)
	}
	have := map[string]bool{}
	for _, f := range rec.Files {
		have[f.Path] = true
	}
	for _, e := range edits {
		if have[e.Path] {
			continue
		}
		name := "orig-" + strconv.Itoa(len(rec.Files))
		if err := c.Exec.WriteFile(ctx, dir+"/"+name, e.Before, 0o600); err != nil {
			return nil, c.errorf("keep the original of %s in %s: %w", e.Path, dir, err)
		}
		rec.Files = append(rec.Files, editedFile{Path: e.Path, Orig: name, BeforeSHA256: sha256Hex(e.Before), AfterSHA256: sha256Hex(e.After), What: e.What})
	}
	if err := c.writeManifest(ctx, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

func (c *Target) writeManifest(ctx context.Context, rec *editRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := c.Exec.WriteFile(ctx, rec.dir+"/manifest.json", append(b, '\n'), 0o600); err != nil {
		return c.errorf("write %s/manifest.json: %w", rec.dir, err)
	}
	return nil
}

// restoreRecords puts back the originals of every unrestored record of
// kind, newest first. A file that holds neither the edited nor the original
// content was changed by someone else since: it is left alone and reported.
// It returns the paths written (or that would be written in check mode).
func (c *Target) restoreRecords(ctx context.Context, kind string) ([]string, error) {
	recs, err := c.loadRecords(ctx, kind)
	if err != nil {
		return nil, err
	}
	var pending []*editRecord
	for _, r := range recs {
		if r.Restored == nil {
			pending = append(pending, r)
		}
	}
	if len(pending) == 0 {
		return nil, nil
	}
	var pats []string
	for _, r := range pending {
		for _, f := range r.Files {
			pats = append(pats, f.Path, r.dir+"/"+f.Orig)
		}
	}
	cur, err := c.fetchMap(ctx, pats...)
	if err != nil {
		return nil, err
	}
	plan, conflicts, err := c.planRestore(kind, pending, cur)
	if err != nil {
		return nil, err
	}
	if len(conflicts) > 0 {
		return nil, c.errorf("not restoring, to keep changes made since: %s; compare and restore by hand", strings.Join(conflicts, "; "))
	}
	var what []string
	for _, w := range plan {
		what = append(what, w.path)
	}
	desc := fmt.Sprintf("restore %s on %s from %d record(s): %s", kind, c.Node.Name, len(pending), strings.Join(what, ", "))
	if len(plan) == 0 {
		desc = fmt.Sprintf("mark %d %s record(s) on %s restored (files already hold the originals)", len(pending), kind, c.Node.Name)
	}
	var written []string
	inCheck := true // stays true in check mode
	err = c.Run.Wet(desc, func() error {
		inCheck = false
		var werr error
		written, werr = c.applyRestore(ctx, plan, pending)
		return werr
	})
	if err != nil {
		return nil, err
	}
	if inCheck {
		for _, w := range plan {
			written = append(written, w.path)
		}
	} else {
		c.Run.ResolveUndo(c.Node.Name, map[string]string{"strip": "k3s.restore_server", "token": "k3s.restore_token"}[kind])
	}
	return written, nil
}

// restoreWrite is one file a restore puts back.
type restoreWrite struct {
	path string
	data []byte
	mode fs.FileMode
}

// planRestore decides, for the pending records of kind (newest first),
// which files get their originals back; files changed by someone else
// since are conflicts.
func (c *Target) planRestore(kind string, pending []*editRecord, cur map[string]remoteFile) ([]restoreWrite, []string, error) {
	var plan []restoreWrite
	var conflicts []string
	planned := map[string][]byte{}
	for _, r := range pending {
		for _, f := range r.Files {
			orig, ok := cur[r.dir+"/"+f.Orig]
			if !ok || sha256Hex(orig.Data) != f.BeforeSHA256 {
				return nil, nil, c.errorf("the original of %s in %s is missing or damaged (sha256 differs from the manifest); restore it by hand from a backup (k3s.restore)", f.Path, r.dir)
			}
			now, exists := cur[f.Path]
			data := now.Data
			if p, ok := planned[f.Path]; ok {
				data, exists = p, true
			}
			switch {
			case exists && sha256Hex(data) == f.BeforeSHA256:
				// Already the original.
			case exists && sha256Hex(data) == f.AfterSHA256:
				mode := fs.FileMode(now.Mode)
				if mode == 0 {
					mode = fs.FileMode(orig.Mode)
				}
				plan = append(plan, restoreWrite{f.Path, orig.Data, mode})
				planned[f.Path] = orig.Data
			default:
				conflicts = append(conflicts, fmt.Sprintf("%s changed since %s edited it on %s (the original is in %s/%s)", f.Path, kind, r.Created.Format(time.RFC3339), r.dir, f.Orig))
			}
		}
	}
	return plan, conflicts, nil
}

// applyRestore writes plan, reloads systemd when a unit changed and marks
// the records restored; it returns the paths written.
func (c *Target) applyRestore(ctx context.Context, plan []restoreWrite, pending []*editRecord) ([]string, error) {
	var written []string
	reload := false
	for _, w := range plan {
		if err := c.Exec.WriteFile(ctx, w.path, w.data, w.mode); err != nil {
			return written, c.errorf("write %s: %w", w.path, err)
		}
		c.Run.MarkChanged()
		written = append(written, w.path)
		c.Run.Output(runner.StreamLog, "restored "+w.path)
		if w.path == c.Node.K3s.UnitFile || strings.HasPrefix(w.path, c.Node.K3s.UnitFile+".d/") {
			reload = true
		}
	}
	if reload {
		if err := c.daemonReload(ctx); err != nil {
			return written, err
		}
	}
	now := time.Now().UTC()
	for _, r := range pending {
		r.Restored = &now
		if err := c.writeManifest(ctx, r); err != nil {
			return written, err
		}
	}
	c.Run.MarkChanged()
	return written, nil
}

// daemonReload makes systemd read the edited unit files.
func (c *Target) daemonReload(ctx context.Context) error {
	_, errOut, err := c.runQuiet(ctx, "systemctl daemon-reload", time.Minute)
	if err != nil {
		return c.errorf("systemctl daemon-reload: %w%s", err, tail(errOut))
	}
	c.Run.Output(runner.StreamLog, "systemctl daemon-reload")
	return nil
}

// Edit is one change to a config source.
type Edit struct {
	Path string `json:"path"`
	What string `json:"what"`
}

// EditResult is what StripServer or UpdateToken changed (or would change
// in check mode). Record is the directory on the node that keeps the
// originals.
type EditResult struct {
	Changed bool   `json:"changed"`
	Edits   []Edit `json:"edits"`
	Record  string `json:"record"`
}

func editResult(edits []k3s.Edit, dir string) EditResult {
	out := EditResult{Changed: len(edits) > 0, Edits: []Edit{}, Record: dir}
	for _, e := range edits {
		out.Edits = append(out.Edits, Edit{Path: e.Path, What: e.What})
	}
	return out
}

// StripServer removes `server` from every config source that sets it,
// keeping the originals on the node (RestoreServer puts them back) and
// recording the undo first.
func StripServer(ctx context.Context, c *Target) (*EditResult, error) {
	ns, err := c.readSources(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := c.effective(ns); err != nil {
		return nil, err
	}
	edits, err := k3s.StripServer(ns.src)
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	applied, dir, err := c.applyEdits(ctx, "strip", "k3s.restore_server", "strip server", edits, ns, undoData{})
	if err != nil {
		return nil, err
	}
	if len(applied) == 0 {
		c.Run.Output(runner.StreamLog, "no source sets server: nothing to strip")
	}
	res := editResult(applied, dir)
	return &res, nil
}

// wouldStrip lists the sources StripServer would edit now.
func (c *Target) wouldStrip(ctx context.Context) ([]string, error) {
	ns, err := c.readSources(ctx)
	if err != nil {
		return nil, err
	}
	edits, err := k3s.StripServer(ns.src)
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	paths := make([]string, 0, len(edits))
	for _, e := range edits {
		paths = append(paths, e.Path)
	}
	return paths, nil
}

// RestoredResult lists the files a restore of edit records wrote.
type RestoredResult struct {
	Changed bool     `json:"changed"`
	Files   []string `json:"files"`
}

// RestoreServer puts back what StripServer removed, byte for byte, from
// the records on the node.
func RestoreServer(ctx context.Context, c *Target) (*RestoredResult, error) {
	return restoreKind(ctx, c, "strip")
}

// RestoreToken puts back what UpdateToken changed.
func RestoreToken(ctx context.Context, c *Target) (*RestoredResult, error) {
	return restoreKind(ctx, c, "token")
}

func restoreKind(ctx context.Context, c *Target, kind string) (*RestoredResult, error) {
	written, err := c.restoreRecords(ctx, kind)
	if err != nil {
		return nil, err
	}
	if len(written) == 0 && kind == "strip" {
		// In check mode the strip before this was only planned, so there
		// is no record yet: say what a real run does with the one it writes.
		paths, err := c.wouldStrip(ctx)
		if err != nil {
			return nil, err
		}
		if len(paths) > 0 {
			planned := true
			_ = c.Run.Wet(fmt.Sprintf("put `server` back byte for byte on %s in %s (from the record strip_server writes)", c.Node.Name, strings.Join(paths, ", ")), func() error {
				planned = false
				return nil
			})
			if planned {
				return &RestoredResult{Changed: true, Files: paths}, nil
			}
		}
	}
	if len(written) == 0 {
		c.Run.Output(runner.StreamLog, "nothing to restore")
	}
	return &RestoredResult{Changed: len(written) > 0, Files: append([]string{}, written...)}, nil
}

// TokenUpdate is what UpdateToken did: the edits, the kind of token the
// node is configured with and why.
type TokenUpdate struct {
	EditResult
	TokenKind string `json:"token_kind"`
	Reason    string `json:"reason"`
}

// UpdateToken puts caHash (the new server CA's, as in a secure token)
// into the node's configured token when it is a secure token
// (K10<hash>::user:pass), keeping the node's own credentials. The
// originals are kept on the node (RestoreToken) and the undo recorded
// first.
func UpdateToken(ctx context.Context, c *Target, caHash string) (*TokenUpdate, error) {
	ns, err := c.readSources(ctx)
	if err != nil {
		return nil, err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return nil, err
	}
	res := &TokenUpdate{EditResult: editResult(nil, ""), TokenKind: tokenKind(eff)}
	switch res.TokenKind {
	case "secure":
	case "file":
		f := eff["token-file"]
		return nil, c.errorf("the token is read from %s (set at %s:%d); write the new token (k3s.token(...)) into that file by hand: %w", f.Value, f.Source, f.Line, k3s.ErrTokenFromFile)
	default:
		res.Reason = fmt.Sprintf("the node uses a %s token, which carries no CA hash: nothing to update", res.TokenKind)
		c.Run.Output(runner.StreamLog, res.Reason)
		return res, nil
	}
	cur, _ := k3s.ParseToken(strings.TrimSpace(eff["token"].Value))
	if cur.CAHash == caHash {
		res.Reason = "the configured token already carries the new CA hash"
		c.Run.Output(runner.StreamLog, res.Reason)
		return res, nil
	}
	newTok := cur.WithCAHash(caHash).String()
	c.redactToken(newTok)
	edits, err := k3s.ReplaceToken(ns.src, newTok)
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	applied, dir, err := c.applyEdits(ctx, "token", "k3s.restore_token", "put the new CA hash in the token", edits, ns, undoData{FromCAHash: cur.CAHash, ToCAHash: caHash})
	if err != nil {
		return nil, err
	}
	res.EditResult, res.Reason = editResult(applied, dir), "the CA hash in the token changed"
	return res, nil
}

// CAHashOfToken checks that token is a secure server token
// (K10<ca-hash>::user:password), registers it as a secret and returns its
// CA hash.
func CAHashOfToken(run Run, token string) (string, error) {
	redactToken(run, token)
	nt, err := k3s.ParseToken(strings.TrimSpace(token))
	if err != nil || !nt.Secure() {
		return "", errors.New("the token given is not a secure token (K10<ca-hash>::user:password); pass the new server token (k3s.token(server).token)")
	}
	return nt.CAHash, nil
}
