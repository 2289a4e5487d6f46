package k3sops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// stageManifest describes a staged CA set on a node.
type stageManifest struct {
	RunID       string            `json:"run_id"`
	Created     time.Time         `json:"created"`
	Kind        string            `json:"kind"` // "self-signed" or "custom"
	RootChanged bool              `json:"root_changed"`
	CAHash      string            `json:"ca_hash"`
	Files       map[string]string `json:"files"` // path relative to the stage dir -> sha256
}

// rotatablePaths are the SD-relative paths rotate-ca replaces.
func rotatablePaths() []string {
	var out []string
	for _, bf := range k3s.BootstrapFiles {
		if bf.Rotate {
			out = append(out, bf.Path)
		}
	}
	return out
}

// readCASet reads the rotatable files under dir (SD or a stage dir),
// keyed relative to dir.
func (c *Target) readCASet(ctx context.Context, dir string) (map[string][]byte, error) {
	var pats []string
	for _, p := range rotatablePaths() {
		pats = append(pats, dir+"/"+p)
	}
	files, err := c.fetch(ctx, pats...)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, f := range files {
		out[strings.TrimPrefix(f.Path, dir+"/")] = f.Data
	}
	return out, nil
}

func readLocal(what, p string) ([]byte, error) {
	if p == "" {
		return nil, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// CASet is a CA set staged on a node for RotateCA.
type CASet struct {
	Path    string `json:"path"`
	Changed bool   `json:"changed"`
	// Kind is "self-signed" or "custom".
	Kind        string `json:"kind"`
	RootChanged bool   `json:"root_changed"`
	// CAHash is the new server CA's hash, as in secure join tokens.
	CAHash   string   `json:"ca_hash"`
	ServerCA CA       `json:"server_ca"`
	SHA256   string   `json:"sha256"`
	Files    []string `json:"files"`
}

// caSetOf describes a staged set.
func caSetOf(dir string, changed bool, m stageManifest, serverCA []byte) (*CASet, error) {
	fp, err := k3s.CAFingerprints(serverCA)
	if err != nil {
		return nil, fmt.Errorf("the staged server-ca.crt: %w", err)
	}
	files := []string{}
	for p := range m.Files {
		files = append(files, p)
	}
	sort.Strings(files)
	return &CASet{Path: dir, Changed: changed, Kind: m.Kind, RootChanged: m.RootChanged, CAHash: m.CAHash, ServerCA: caOf(fp), SHA256: fp.SHA256, Files: files}, nil
}

// GenerateOptions choose the CA GenerateCA makes: empty, a new
// self-signed root per CA; with RootCert (and RootKey, or an intermediate
// cert and key it signed), a custom CA. The files are on the controller.
type GenerateOptions struct {
	RootCert, RootKey, IntermediateCert, IntermediateKey string
	// Force only warns when K3s's rotate-ca validation would refuse the set.
	Force bool
}

// GenerateCA generates a new CA set from the node's current one and stages
// it on the node under DATA_DIR/caretaker/rotate-ca/<run-id> (0600), ready
// for RotateCA. Without custom files it is what rotate-default-ca-certs.sh
// makes (a new root per CA, cross-signed by the old one, a new
// intermediate, the old service key kept); with them it is what
// generate-custom-ca-certs.sh makes. The set is checked with K3s's
// rotate-ca validation first. A second call in the same run returns the
// staged set unchanged.
func GenerateCA(ctx context.Context, c *Target, o GenerateOptions) (*CASet, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the CA set is generated on a server")
	}
	dir := c.caretakerDir("rotate-ca", c.Run.RunID())
	if set, err := c.stagedSet(ctx, dir); set != nil || err != nil {
		return set, err
	}
	current, err := c.readCASet(ctx, c.sd())
	if err != nil {
		return nil, err
	}
	if len(current[k3s.PathServerCA]) == 0 {
		return nil, c.errorf("%s/%s is missing: is this a K3s server that has started?", c.sd(), k3s.PathServerCA)
	}
	now := time.Now()
	staged, kind, err := c.generate(current, o, now)
	if err != nil {
		return nil, err
	}
	oldHash, err1 := k3s.HashCA(current[k3s.PathServerCA])
	newHash, err2 := k3s.HashCA(staged[k3s.PathServerCA])
	if err := errors.Join(err1, err2); err != nil {
		return nil, c.errorf("CA hash: %w", err)
	}
	m := stageManifest{RunID: c.Run.RunID(), Created: now.UTC(), Kind: kind, RootChanged: oldHash != newHash, CAHash: newHash, Files: map[string]string{}}
	for p, data := range staged {
		m.Files[p] = sha256Hex(data)
	}
	changed, err := c.stage(ctx, dir, staged, m)
	if err != nil {
		return nil, err
	}
	if changed {
		c.Run.Output(runner.StreamLog, fmt.Sprintf("staged a new %s CA set in %s: server CA %s, root changed: %v", kind, dir, caDesc(staged[k3s.PathServerCA]), m.RootChanged))
	}
	return caSetOf(dir, changed, m, staged[k3s.PathServerCA])
}

// stagedSet returns the set staged earlier in this run in dir, nil when
// there is none.
func (c *Target) stagedSet(ctx context.Context, dir string) (*CASet, error) {
	got, err := c.fetchMap(ctx, dir+"/manifest.json")
	if err != nil {
		return nil, err
	}
	f, ok := got[dir+"/manifest.json"]
	if !ok {
		return nil, nil
	}
	var m stageManifest
	if err := json.Unmarshal(f.Data, &m); err != nil {
		return nil, c.errorf("%s/manifest.json is damaged: %w", dir, err)
	}
	staged, err := c.readCASet(ctx, dir)
	if err != nil {
		return nil, err
	}
	for p, sum := range m.Files {
		if sha256Hex(staged[p]) != sum {
			return nil, c.errorf("the staged file %s/%s changed since it was generated; remove %s to generate a new set", dir, p, dir)
		}
	}
	c.Run.Output(runner.StreamLog, "a CA set is already staged in "+dir)
	return caSetOf(dir, false, m, staged[k3s.PathServerCA])
}

// generate makes the new set (staged file names) and validates it as
// K3s's rotate-ca would.
func (c *Target) generate(current map[string][]byte, o GenerateOptions, now time.Time) (map[string][]byte, string, error) {
	var gen map[string][]byte
	var err error
	kind := "self-signed"
	if o.RootCert != "" || o.IntermediateCert != "" {
		kind = "custom"
		rc, err1 := readLocal("root_cert", o.RootCert)
		rk, err2 := readLocal("root_key", o.RootKey)
		ic, err3 := readLocal("intermediate_cert", o.IntermediateCert)
		ik, err4 := readLocal("intermediate_key", o.IntermediateKey)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, "", c.errorf("read the custom CA files on the controller: %w", err)
		}
		if ic == nil && rk == nil {
			return nil, "", c.errorf("a custom root needs its key (root_key) to sign an intermediate, or an intermediate cert and key it signed")
		}
		if ic != nil && ik == nil {
			return nil, "", c.errorf("intermediate_cert needs intermediate_key")
		}
		gen, err = k3s.GenerateCustomRotation(current, rc, rk, ic, ik, now)
	} else {
		gen, err = k3s.GenerateRotation(current, now)
	}
	if err != nil {
		return nil, "", c.errorf("generate the new CA set: %w", err)
	}
	staged := k3s.StagedFiles(gen)
	if errs := k3s.ValidateCARotation(current, staged); len(errs) > 0 {
		msg := strings.ReplaceAll(errors.Join(errs...).Error(), "\n", "; ")
		if !o.Force {
			return nil, "", c.errorf("K3s would refuse this CA set (rotate-ca validation): %s; fix the custom CA or pass force=True", msg)
		}
		c.Run.Output(runner.StreamStderr, "warning: K3s's rotate-ca validation fails, continuing because force=True: "+msg)
	}
	return staged, kind, nil
}

// stage writes the set and its manifest (last) under dir; false in check
// mode.
func (c *Target) stage(ctx context.Context, dir string, staged map[string][]byte, m stageManifest) (bool, error) {
	var rels []string
	for p := range staged {
		rels = append(rels, p)
	}
	sort.Strings(rels)
	changed := false
	err := c.Run.Wet(fmt.Sprintf("stage a new %s CA set (%d files, server CA %s) in %s on %s", m.Kind, len(rels), caDesc(staged[k3s.PathServerCA]), dir, c.Node.Name), func() error {
		dirs := map[string]bool{}
		for _, p := range rels {
			dirs[path.Dir(dir+"/"+p)] = true
		}
		for d := range dirs {
			if err := c.mkdirPrivate(ctx, d); err != nil {
				return err
			}
		}
		for _, p := range rels {
			if err := c.Exec.WriteFile(ctx, dir+"/"+p, staged[p], 0o600); err != nil {
				return c.errorf("stage %s: %w", dir+"/"+p, err)
			}
		}
		mb, _ := json.MarshalIndent(m, "", "  ")
		if err := c.Exec.WriteFile(ctx, dir+"/manifest.json", append(mb, '\n'), 0o600); err != nil {
			return c.errorf("write %s/manifest.json: %w", dir, err)
		}
		c.Run.MarkChanged()
		changed = true
		return nil
	})
	return changed, err
}

// rotateCALine is the rotate-ca command for a staged set.
func (c *Target) rotateCALine(p string, force bool) string {
	line := "k3s certificate rotate-ca --path=" + transport.ShellQuote(p)
	if path.Clean(c.Node.K3s.DataDir) != inventory.DefaultDataDir {
		line += " --data-dir=" + transport.ShellQuote(c.Node.K3s.DataDir)
	}
	// Name the supervisor explicitly: an exported K3S_URL would otherwise
	// send the PUT elsewhere (k3s-ca-rotation.md §5 "Pitfall").
	line += " --server=" + transport.ShellQuote("https://"+c.Node.K3s.SupervisorEndpoint)
	if force {
		line += " --force"
	}
	return line
}

// datastoreDiff lists the staged files the datastore does not hold.
func datastoreDiff(ds *Datastore, staged map[string][]byte) []string {
	var differ []string
	for _, bf := range k3s.BootstrapFiles {
		data, ok := staged[bf.Path]
		if !ok || len(data) == 0 {
			continue
		}
		if !bytes.Equal(ds.data[bf.Key].Content, data) {
			differ = append(differ, bf.Key)
		}
	}
	return differ
}

// RotateResult is the datastore's server CA after RotateCA; ServerCA is
// nil in check mode when nothing was staged yet.
type RotateResult struct {
	Changed  bool `json:"changed"`
	ServerCA *CA  `json:"server_ca"`
}

// RotateCA runs `k3s certificate rotate-ca --path=<dir>` on the node (a
// running server) and checks that the datastore now holds the staged set.
// A datastore that already holds it is left alone.
func RotateCA(ctx context.Context, c *Target, dir string, force bool) (*RotateResult, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; rotate-ca runs on a server")
	}
	dir = strings.TrimSuffix(dir, "/")
	line := c.rotateCALine(dir, force)
	staged, err := c.readCASet(ctx, dir)
	if err != nil {
		return nil, err
	}
	if len(staged) == 0 {
		// In check mode the set generate_ca would stage is not there.
		err := c.Run.Wet("run on "+c.Node.Name+": "+line, func() error {
			return c.errorf("no staged CA set in %s/tls (run k3s.generate_ca first)", dir)
		})
		return &RotateResult{Changed: true}, err
	}
	before, err := c.readDatastore(ctx)
	if err != nil {
		return nil, err
	}
	if len(datastoreDiff(before, staged)) == 0 {
		c.Run.Output(runner.StreamLog, "the datastore already holds the staged CA set: nothing to do")
		return c.rotateResult(false, before)
	}
	undo, _ := json.Marshal(map[string]string{"node": c.Node.Name, "path": dir, "previous_server_ca_sha256": sha256Hex(before.serverCA()),
		"how": "to put the previous CA back instead, rotate-ca --force with the previous set from this run's backup (k3s.backup_certs)"})
	after := before
	err = c.Run.Wet("run on "+c.Node.Name+": "+line, func() error {
		if err := c.Run.Undo("k3s.rotate_ca", undo); err != nil {
			return c.errorf("record the undo action before rotating (nothing was changed): %w", err)
		}
		_, _, stderr, err := c.Run.RunCommand(ctx, c.Exec, c.Node, transport.Command{Line: line, Timeout: 2 * time.Minute}, true, false)
		if err != nil {
			return c.errorf("%s: %w%s", line, err, tail(stderr))
		}
		if after, err = c.readDatastore(ctx); err != nil {
			return err
		}
		if diff := datastoreDiff(after, staged); len(diff) > 0 {
			return c.errorf("rotate-ca reported success but the datastore does not hold the staged %s; see journalctl -u %s on %s", strings.Join(diff, ", "), c.Node.K3s.Service, c.Node.Name)
		}
		c.Run.Output(runner.StreamLog, fmt.Sprintf("the datastore now holds server CA %s", caDesc(after.serverCA())))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c.rotateResult(true, after)
}

func (c *Target) rotateResult(changed bool, ds *Datastore) (*RotateResult, error) {
	fp, err := k3s.CAFingerprints(ds.serverCA())
	if err != nil {
		return nil, c.errorf("the datastore's ServerCA: %w", err)
	}
	ca := caOf(fp)
	return &RotateResult{Changed: changed, ServerCA: &ca}, nil
}
