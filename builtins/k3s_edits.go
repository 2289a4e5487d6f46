package builtins

import (
	"bytes"
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
	"go.starlark.net/starlark"
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

// undoData is the JSON handed to env.Undo for edit records.
type undoData struct {
	Node   string   `json:"node"`
	Record string   `json:"record"`
	Files  []string `json:"files"`
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// recordRoot is DATA_DIR/caretaker/<kind>.
func (c *k3sCall) recordRoot(kind string) string { return c.caretakerDir(kind) }

// loadRecords reads every record of kind on the node, newest first.
func (c *k3sCall) loadRecords(kind string) ([]*editRecord, error) {
	files, err := c.fetch(c.recordRoot(kind) + "/*/manifest.json")
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
func (c *k3sCall) applyEdits(kind, undoKind, verb string, edits []k3s.Edit, ns *nodeSources) ([]k3s.Edit, string, error) {
	var real []k3s.Edit
	for _, e := range edits {
		if !bytes.Equal(e.Before, e.After) {
			real = append(real, e)
		}
	}
	if len(real) == 0 {
		return nil, "", nil
	}
	dir := path.Join(c.recordRoot(kind), c.env.RunID())
	var paths []string
	for _, e := range real {
		paths = append(paths, fmt.Sprintf("%s (%s)", e.Path, e.What))
	}
	what := fmt.Sprintf("%s on %s: %s; originals kept in %s", verb, c.node.Name, strings.Join(paths, "; "), dir)
	err := c.env.Wet(what, func() error {
		rec, err := c.writeRecord(kind, dir, real)
		if err != nil {
			return err
		}
		var files []string
		for _, f := range rec.Files {
			files = append(files, f.Path)
		}
		data, _ := json.Marshal(undoData{Node: c.node.Name, Record: dir, Files: files})
		if err := c.env.Undo(undoKind, data); err != nil {
			return c.errorf("record the undo action before editing (nothing was changed): %w", err)
		}
		reload := false
		for _, e := range real {
			mode := fs.FileMode(0o600)
			if f, ok := ns.files[e.Path]; ok {
				mode = fs.FileMode(f.Mode)
			}
			if err := c.ex.WriteFile(c.ctx(), e.Path, e.After, mode); err != nil {
				return c.errorf("write %s: %w (the original is kept in %s)", e.Path, err, dir)
			}
			c.env.MarkChanged()
			c.env.Output(runner.StreamLog, fmt.Sprintf("%s: %s", e.Path, e.What))
			if ns.unitPaths[e.Path] {
				reload = true
			}
		}
		if reload {
			return c.daemonReload()
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
func (c *k3sCall) writeRecord(kind, dir string, edits []k3s.Edit) (*editRecord, error) {
	if err := c.mkdirPrivate(dir); err != nil {
		return nil, err
	}
	rec := &editRecord{Kind: kind, RunID: c.env.RunID(), Node: c.node.Name, Created: time.Now().UTC(), dir: dir}
	if old, err := c.ex.ReadFile(c.ctx(), dir+"/manifest.json"); err == nil {
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
		if err := c.ex.WriteFile(c.ctx(), dir+"/"+name, e.Before, 0o600); err != nil {
			return nil, c.errorf("keep the original of %s in %s: %w", e.Path, dir, err)
		}
		rec.Files = append(rec.Files, editedFile{Path: e.Path, Orig: name, BeforeSHA256: sha256Hex(e.Before), AfterSHA256: sha256Hex(e.After), What: e.What})
	}
	if err := c.writeManifest(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

func (c *k3sCall) writeManifest(rec *editRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := c.ex.WriteFile(c.ctx(), rec.dir+"/manifest.json", append(b, '\n'), 0o600); err != nil {
		return c.errorf("write %s/manifest.json: %w", rec.dir, err)
	}
	return nil
}

// restoreRecords puts back the originals of every unrestored record of
// kind, newest first. A file that holds neither the edited nor the original
// content was changed by someone else since: it is left alone and reported.
// It returns the paths written (or that would be written in check mode).
func (c *k3sCall) restoreRecords(kind string) ([]string, error) {
	recs, err := c.loadRecords(kind)
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
	cur, err := c.fetchMap(pats...)
	if err != nil {
		return nil, err
	}
	unitPaths := map[string]bool{c.node.K3s.UnitFile: true}
	var written []string
	var conflicts []string
	type write struct {
		path string
		data []byte
		mode fs.FileMode
	}
	var plan []write
	planned := map[string][]byte{}
	for _, r := range pending {
		for _, f := range r.Files {
			orig, ok := cur[r.dir+"/"+f.Orig]
			if !ok || sha256Hex(orig.Data) != f.BeforeSHA256 {
				return nil, c.errorf("the original of %s in %s is missing or damaged (sha256 differs from the manifest); restore it by hand from a backup (k3s.restore)", f.Path, r.dir)
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
				plan = append(plan, write{f.Path, orig.Data, mode})
				planned[f.Path] = orig.Data
			default:
				conflicts = append(conflicts, fmt.Sprintf("%s changed since %s edited it on %s (the original is in %s/%s)", f.Path, kind, r.Created.Format(time.RFC3339), r.dir, f.Orig))
			}
		}
	}
	if len(conflicts) > 0 {
		return nil, c.errorf("not restoring, to keep changes made since: %s; compare and restore by hand", strings.Join(conflicts, "; "))
	}
	var what []string
	for _, w := range plan {
		what = append(what, w.path)
	}
	desc := fmt.Sprintf("restore %s on %s from %d record(s): %s", kind, c.node.Name, len(pending), strings.Join(what, ", "))
	if len(plan) == 0 {
		desc = fmt.Sprintf("mark %d %s record(s) on %s restored (files already hold the originals)", len(pending), kind, c.node.Name)
	}
	err = c.env.Wet(desc, func() error {
		reload := false
		for _, w := range plan {
			if err := c.ex.WriteFile(c.ctx(), w.path, w.data, w.mode); err != nil {
				return c.errorf("write %s: %w", w.path, err)
			}
			c.env.MarkChanged()
			written = append(written, w.path)
			c.env.Output(runner.StreamLog, "restored "+w.path)
			if unitPaths[w.path] || strings.HasPrefix(w.path, c.node.K3s.UnitFile+".d/") {
				reload = true
			}
		}
		if reload {
			if err := c.daemonReload(); err != nil {
				return err
			}
		}
		now := time.Now().UTC()
		for _, r := range pending {
			r.Restored = &now
			if err := c.writeManifest(r); err != nil {
				return err
			}
		}
		c.env.MarkChanged()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if c.env.Check {
		for _, w := range plan {
			written = append(written, w.path)
		}
	}
	return written, nil
}

// daemonReload makes systemd read the edited unit files.
func (c *k3sCall) daemonReload() error {
	_, errOut, err := c.runQuiet("systemctl daemon-reload", time.Minute)
	if err != nil {
		return c.errorf("systemctl daemon-reload: %w%s", err, tail(errOut))
	}
	c.env.Output(runner.StreamLog, "systemctl daemon-reload")
	return nil
}

// k3s.strip_server(node): remove `server` from every source that sets it.
func k3sStripServer(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	c, err := unpackK3sCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	ns, err := c.readSources()
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
	applied, dir, err := c.applyEdits("strip", "k3s.restore_server", "strip server", edits, ns)
	if err != nil {
		return nil, err
	}
	if len(applied) == 0 {
		c.env.Output(runner.StreamLog, "no source sets server: nothing to strip")
	}
	return editsValue("strip", applied, dir), nil
}

func editsValue(name string, edits []k3s.Edit, dir string) starlark.Value {
	return structOf(name, editsDict(edits, dir))
}

func editsDict(edits []k3s.Edit, dir string) starlark.StringDict {
	var items []starlark.Value
	for _, e := range edits {
		items = append(items, structOf("edit", starlark.StringDict{"path": starlark.String(e.Path), "what": starlark.String(e.What)}))
	}
	return starlark.StringDict{
		"changed": starlark.Bool(len(edits) > 0),
		"edits":   starlark.NewList(items),
		"record":  starlark.String(dir),
	}
}

// k3s.restore_server(node): put back what strip_server removed, byte for
// byte, from the records on the node.
func k3sRestoreServer(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return restoreKind(th, b, args, kwargs, "strip")
}

// k3s.restore_token(node): put back what update_token changed.
func k3sRestoreToken(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return restoreKind(th, b, args, kwargs, "token")
}

func restoreKind(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple, kind string) (starlark.Value, error) {
	c, err := unpackK3sCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	written, err := c.restoreRecords(kind)
	if err != nil {
		return nil, err
	}
	if len(written) == 0 {
		c.env.Output(runner.StreamLog, "nothing to restore")
	}
	return structOf("restored", starlark.StringDict{
		"changed": starlark.Bool(len(written) > 0),
		"files":   strList(written),
	}), nil
}

// k3s.update_token(node, token): when the node is configured with a secure
// token (K10<hash>::user:pass), replace the CA hash in it with the one of
// token (the new server token), keeping the node's own credentials.
func k3sUpdateToken(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var nodeArg starlark.Value
	var token string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node", &nodeArg, "token", &token); err != nil {
		return nil, err
	}
	c, err := newK3sCall(th, b, nodeArg)
	if err != nil {
		return nil, err
	}
	c.redactToken(token)
	nt, err := k3s.ParseToken(strings.TrimSpace(token))
	if err != nil || !nt.Secure() {
		return nil, c.errorf("the token given is not a secure token (K10<ca-hash>::user:password); pass the new server token (k3s.token(server).token)")
	}
	ns, err := c.readSources()
	if err != nil {
		return nil, err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return nil, err
	}
	kind := tokenKind(eff)
	result := func(edits []k3s.Edit, dir, why string) starlark.Value {
		d := editsDict(edits, dir)
		d["token_kind"] = starlark.String(kind)
		d["reason"] = starlark.String(why)
		return structOf("token", d)
	}
	switch kind {
	case "secure":
	case "file":
		f := eff["token-file"]
		return nil, c.errorf("the token is read from %s (set at %s:%d); write the new token (k3s.token(...)) into that file by hand: %w", f.Value, f.Source, f.Line, k3s.ErrTokenFromFile)
	default:
		why := fmt.Sprintf("the node uses a %s token, which carries no CA hash: nothing to update", kind)
		c.env.Output(runner.StreamLog, why)
		return result(nil, "", why), nil
	}
	cur, _ := k3s.ParseToken(strings.TrimSpace(eff["token"].Value))
	if cur.CAHash == nt.CAHash {
		why := "the configured token already carries the new CA hash"
		c.env.Output(runner.StreamLog, why)
		return result(nil, "", why), nil
	}
	newTok := cur.WithCAHash(nt.CAHash).String()
	c.redactToken(newTok)
	edits, err := k3s.ReplaceToken(ns.src, newTok)
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	applied, dir, err := c.applyEdits("token", "k3s.restore_token", "put the new CA hash in the token", edits, ns)
	if err != nil {
		return nil, err
	}
	return result(applied, dir, "the CA hash in the token changed"), nil
}
