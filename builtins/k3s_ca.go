package builtins

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"go.starlark.net/starlark"

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
func (c *k3sCall) readCASet(dir string) (map[string][]byte, error) {
	var pats []string
	for _, p := range rotatablePaths() {
		pats = append(pats, dir+"/"+p)
	}
	files, err := c.fetch(pats...)
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

// caSetValue describes a staged set for Starlark.
func caSetValue(dir string, changed bool, m stageManifest, serverCA []byte) (starlark.Value, error) {
	fp, err := k3s.CAFingerprints(serverCA)
	if err != nil {
		return nil, fmt.Errorf("the staged server-ca.crt: %w", err)
	}
	var files []string
	for p := range m.Files {
		files = append(files, p)
	}
	sort.Strings(files)
	return structOf("ca_set", starlark.StringDict{
		"path":         starlark.String(dir),
		"changed":      starlark.Bool(changed),
		"kind":         starlark.String(m.Kind),
		"root_changed": starlark.Bool(m.RootChanged),
		"ca_hash":      starlark.String(m.CAHash),
		"server_ca":    fingerprintValue(fp),
		"sha256":       starlark.String(fp.SHA256),
		"files":        strList(files),
	}), nil
}

// k3s.generate_ca(node, root_cert="", root_key="", intermediate_cert="",
// intermediate_key="", force=False): generate a new CA set from the node's
// current one and stage it on the node under
// DATA_DIR/caretaker/rotate-ca/<run-id> (0600), ready for rotate_ca.
// Without custom files it is what rotate-default-ca-certs.sh makes (a new
// root per CA, cross-signed by the old one, a new intermediate, the old
// service key kept); with root_cert (and root_key, or an intermediate cert
// and key it signed) it is what generate-custom-ca-certs.sh makes. The
// custom files are read on the controller. The set is checked with K3s's
// rotate-ca validation first (force=True only warns). A second call in the
// same run returns the staged set unchanged.
func k3sGenerateCA(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		nodeArg                                starlark.Value = starlark.None
		rootCert, rootKey, interCert, interKey string
		force                                  bool
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node?", &nodeArg, "root_cert?", &rootCert, "root_key?", &rootKey,
		"intermediate_cert?", &interCert, "intermediate_key?", &interKey, "force?", &force); err != nil {
		return nil, err
	}
	c, err := newK3sCall(th, b, nodeArg)
	if err != nil {
		return nil, err
	}
	if c.node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the CA set is generated on a server")
	}
	dir := c.caretakerDir("rotate-ca", c.env.RunID())

	// Idempotent: a set staged earlier in this run is reused.
	if got, err := c.fetchMap(dir + "/manifest.json"); err != nil {
		return nil, err
	} else if f, ok := got[dir+"/manifest.json"]; ok {
		var m stageManifest
		if err := json.Unmarshal(f.Data, &m); err != nil {
			return nil, c.errorf("%s/manifest.json is damaged: %w", dir, err)
		}
		staged, err := c.readCASet(dir)
		if err != nil {
			return nil, err
		}
		for p, sum := range m.Files {
			if sha256Hex(staged[p]) != sum {
				return nil, c.errorf("the staged file %s/%s changed since it was generated; remove %s to generate a new set", dir, p, dir)
			}
		}
		c.env.Output(runner.StreamLog, "a CA set is already staged in "+dir)
		return caSetValue(dir, false, m, staged[k3s.PathServerCA])
	}

	current, err := c.readCASet(c.sd())
	if err != nil {
		return nil, err
	}
	if len(current[k3s.PathServerCA]) == 0 {
		return nil, c.errorf("%s/%s is missing: is this a K3s server that has started?", c.sd(), k3s.PathServerCA)
	}
	now := time.Now()
	var gen map[string][]byte
	kind := "self-signed"
	if rootCert != "" || interCert != "" {
		kind = "custom"
		rc, err1 := readLocal("root_cert", rootCert)
		rk, err2 := readLocal("root_key", rootKey)
		ic, err3 := readLocal("intermediate_cert", interCert)
		ik, err4 := readLocal("intermediate_key", interKey)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, c.errorf("read the custom CA files on the controller: %w", err)
		}
		if ic == nil && rk == nil {
			return nil, c.errorf("a custom root needs its key (root_key) to sign an intermediate, or an intermediate cert and key it signed")
		}
		if ic != nil && ik == nil {
			return nil, c.errorf("intermediate_cert needs intermediate_key")
		}
		gen, err = k3s.GenerateCustomRotation(current, rc, rk, ic, ik, now)
	} else {
		gen, err = k3s.GenerateRotation(current, now)
	}
	if err != nil {
		return nil, c.errorf("generate the new CA set: %w", err)
	}
	staged := k3s.StagedFiles(gen)
	if errs := k3s.ValidateCARotation(current, staged); len(errs) > 0 {
		msg := errors.Join(errs...).Error()
		if !force {
			return nil, c.errorf("K3s would refuse this CA set (rotate-ca validation): %s; fix the custom CA or pass force=True", strings.ReplaceAll(msg, "\n", "; "))
		}
		c.env.Output(runner.StreamStderr, "warning: K3s's rotate-ca validation fails, continuing because force=True: "+strings.ReplaceAll(msg, "\n", "; "))
	}
	oldHash, err1 := k3s.HashCA(current[k3s.PathServerCA])
	newHash, err2 := k3s.HashCA(staged[k3s.PathServerCA])
	if err := errors.Join(err1, err2); err != nil {
		return nil, c.errorf("CA hash: %w", err)
	}
	m := stageManifest{RunID: c.env.RunID(), Created: now.UTC(), Kind: kind, RootChanged: oldHash != newHash, CAHash: newHash, Files: map[string]string{}}
	var rels []string
	for p, data := range staged {
		m.Files[p] = sha256Hex(data)
		rels = append(rels, p)
	}
	sort.Strings(rels)
	err = c.env.Wet(fmt.Sprintf("stage a new %s CA set (%d files, server CA %s) in %s on %s", kind, len(rels), caDesc(staged[k3s.PathServerCA]), dir, c.node.Name), func() error {
		dirs := map[string]bool{}
		for _, p := range rels {
			dirs[path.Dir(dir+"/"+p)] = true
		}
		for d := range dirs {
			if err := c.mkdirPrivate(d); err != nil {
				return err
			}
		}
		for _, p := range rels {
			if err := c.ex.WriteFile(c.ctx(), dir+"/"+p, staged[p], 0o600); err != nil {
				return c.errorf("stage %s: %w", dir+"/"+p, err)
			}
		}
		mb, _ := json.MarshalIndent(m, "", "  ")
		if err := c.ex.WriteFile(c.ctx(), dir+"/manifest.json", append(mb, '\n'), 0o600); err != nil {
			return c.errorf("write %s/manifest.json: %w", dir, err)
		}
		c.env.MarkChanged()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !c.env.Check {
		c.env.Output(runner.StreamLog, fmt.Sprintf("staged a new %s CA set in %s: server CA %s, root changed: %v", kind, dir, caDesc(staged[k3s.PathServerCA]), m.RootChanged))
	}
	return caSetValue(dir, !c.env.Check, m, staged[k3s.PathServerCA])
}

// rotateCALine is the rotate-ca command for a staged set.
func (c *k3sCall) rotateCALine(p string, force bool) string {
	line := "k3s certificate rotate-ca --path=" + transport.ShellQuote(p)
	if path.Clean(c.node.K3s.DataDir) != inventory.DefaultDataDir {
		line += " --data-dir=" + transport.ShellQuote(c.node.K3s.DataDir)
	}
	// Name the supervisor explicitly: an exported K3S_URL would otherwise
	// send the PUT elsewhere (k3s-ca-rotation.md §5 "Pitfall").
	line += " --server=" + transport.ShellQuote("https://"+c.node.K3s.SupervisorEndpoint)
	if force {
		line += " --force"
	}
	return line
}

// datastoreDiff lists the staged files the datastore does not hold.
func datastoreDiff(ds *dsRead, staged map[string][]byte) []string {
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

// k3s.rotate_ca(node, path, force=False): run `k3s certificate rotate-ca
// --path=<path>` on the node (a running server) and check that the
// datastore now holds the staged set. A datastore that already holds it
// is left alone.
func k3sRotateCA(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		nodeArg starlark.Value
		p       string
		force   bool
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node", &nodeArg, "path", &p, "force?", &force); err != nil {
		return nil, err
	}
	c, err := newK3sCall(th, b, nodeArg)
	if err != nil {
		return nil, err
	}
	if c.node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; rotate-ca runs on a server")
	}
	p = strings.TrimSuffix(p, "/")
	line := c.rotateCALine(p, force)
	staged, err := c.readCASet(p)
	if err != nil {
		return nil, err
	}
	if len(staged) == 0 {
		if c.env.Check {
			c.env.Output(runner.StreamCheck, "would run on "+c.node.Name+": "+line)
			return structOf("rotate_ca", starlark.StringDict{"changed": starlark.True, "server_ca": starlark.None}), nil
		}
		return nil, c.errorf("no staged CA set in %s/tls (run k3s.generate_ca first)", p)
	}
	before, err := c.readDatastore()
	if err != nil {
		return nil, err
	}
	result := func(changed bool, ds *dsRead) (starlark.Value, error) {
		fp, err := k3s.CAFingerprints(ds.serverCA())
		if err != nil {
			return nil, c.errorf("the datastore's ServerCA: %w", err)
		}
		return structOf("rotate_ca", starlark.StringDict{"changed": starlark.Bool(changed), "server_ca": fingerprintValue(fp)}), nil
	}
	if len(datastoreDiff(before, staged)) == 0 {
		c.env.Output(runner.StreamLog, "the datastore already holds the staged CA set: nothing to do")
		return result(false, before)
	}
	undo, _ := json.Marshal(map[string]string{"node": c.node.Name, "path": p, "previous_server_ca_sha256": sha256Hex(before.serverCA()),
		"how": "the previous CA set is in this run's backup (k3s.backup_certs); putting it back needs rotate-ca --force with it"})
	if !c.env.Check {
		if err := c.env.Undo("k3s.rotate_ca", undo); err != nil {
			return nil, c.errorf("record the undo action before rotating (nothing was changed): %w", err)
		}
	}
	_, _, stderr, err := RunResult(c.env, c.ex, c.node, transport.Command{Line: line, Timeout: 2 * time.Minute}, true, false)
	if err != nil {
		return nil, c.errorf("%s: %w%s", line, err, tail(stderr))
	}
	if c.env.Check {
		return result(true, before)
	}
	after, err := c.readDatastore()
	if err != nil {
		return nil, err
	}
	if diff := datastoreDiff(after, staged); len(diff) > 0 {
		return nil, c.errorf("rotate-ca reported success but the datastore does not hold the staged %s; see journalctl -u %s on %s", strings.Join(diff, ", "), c.node.K3s.Service, c.node.Name)
	}
	c.env.Output(runner.StreamLog, fmt.Sprintf("the datastore now holds server CA %s", caDesc(after.serverCA())))
	return result(true, after)
}
