package builtins

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// nodeSources are the config sources of a node as read from it.
type nodeSources struct {
	src k3s.Sources
	// files are the source files that exist, with their metadata.
	files map[string]remoteFile
	// unitPaths are the unit and its drop-ins (a change needs
	// daemon-reload).
	unitPaths map[string]bool
}

// paths lists the existing source files, sorted.
func (s *nodeSources) paths() []string {
	var out []string
	for p := range s.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// readSources reads every file K3s takes its flags from on the node
// (k3s-ca-rotation.md §7): the unit and its <unit>.d/*.conf drop-ins,
// config.yaml and config.yaml.d/*.yaml|*.yml, and the environment files
// the unit names (plus those the inventory lists).
func (c *k3sCall) readSources() (*nodeSources, error) {
	k := c.node.K3s
	patterns := []string{k.UnitFile, k.UnitFile + ".d/*.conf", k.ConfigFile, k.ConfigFile + ".d/*.yaml", k.ConfigFile + ".d/*.yml"}
	patterns = append(patterns, k.EnvFiles...)
	got, err := c.fetchMap(patterns...)
	if err != nil {
		return nil, err
	}
	ns := &nodeSources{files: map[string]remoteFile{}, unitPaths: map[string]bool{k.UnitFile: true}}
	src := k3s.Sources{UnitPath: k.UnitFile, ConfigPath: k.ConfigFile}
	if f, ok := got[k.UnitFile]; ok {
		src.Unit = f.Data
		ns.files[f.Path] = f
	}
	if f, ok := got[k.ConfigFile]; ok {
		src.Config = f.Data
		ns.files[f.Path] = f
	}
	var unitDrops, cfgDrops []remoteFile
	for p, f := range got {
		switch {
		case path.Dir(p) == k.UnitFile+".d" && strings.HasSuffix(p, ".conf"):
			unitDrops = append(unitDrops, f)
		case path.Dir(p) == k.ConfigFile+".d" && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")):
			cfgDrops = append(cfgDrops, f)
		}
	}
	sort.Slice(unitDrops, func(i, j int) bool { return unitDrops[i].Path < unitDrops[j].Path })
	sort.Slice(cfgDrops, func(i, j int) bool { return path.Base(cfgDrops[i].Path) < path.Base(cfgDrops[j].Path) })
	for _, f := range unitDrops {
		src.UnitDropIns = append(src.UnitDropIns, k3s.NamedFile{Path: f.Path, Data: f.Data})
		ns.files[f.Path] = f
		ns.unitPaths[f.Path] = true
	}
	for _, f := range cfgDrops {
		src.DropIns = append(src.DropIns, k3s.NamedFile{Path: f.Path, Data: f.Data})
		ns.files[f.Path] = f
	}

	// Environment files: the ones the unit names, in its order (a later
	// file wins), then any the inventory adds.
	var envPaths []string
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			envPaths = append(envPaths, p)
		}
	}
	for _, p := range k3s.UnitEnvironmentFiles(src.Unit, k.Service) {
		add(p)
	}
	for _, d := range src.UnitDropIns {
		for _, p := range k3s.UnitEnvironmentFiles(d.Data, k.Service) {
			add(p)
		}
	}
	for _, p := range k.EnvFiles {
		add(p)
	}
	var missing []string
	for _, p := range envPaths {
		if _, ok := got[p]; !ok && !contains(k.EnvFiles, p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		more, err := c.fetchMap(missing...)
		if err != nil {
			return nil, err
		}
		for p, f := range more {
			got[p] = f
		}
	}
	for _, p := range envPaths {
		f, ok := got[p]
		src.EnvFiles = append(src.EnvFiles, k3s.NamedFile{Path: p, Data: f.Data})
		if ok {
			ns.files[p] = f
		}
	}
	ns.src = src
	return ns, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// effective merges the sources; it registers the token as a secret so it
// can never reach an event.
func (c *k3sCall) effective(ns *nodeSources) (map[string]k3s.Setting, error) {
	eff, err := k3s.Effective(ns.src)
	if err != nil {
		return nil, c.errorf("merge the config sources (%s): %w", strings.Join(ns.paths(), ", "), err)
	}
	if t, ok := eff["token"]; ok {
		c.redactToken(t.Value)
		for _, o := range t.Shadowed {
			c.redactToken(o.Value)
		}
	}
	if t, ok := eff["agent-token"]; ok {
		c.redactToken(t.Value)
	}
	return eff, nil
}

// redactToken registers a token and its password part as secrets.
func (c *k3sCall) redactToken(tok string) {
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return
	}
	c.env.Redact(tok)
	if t, err := k3s.ParseToken(tok); err == nil {
		c.env.Redact(t.Password)
		c.env.Redact(t.Bootstrap)
	}
}

// tokenKind classifies the configured token of a node: secure (K10<hash>),
// short (password only), bootstrap (kubeadm-style), file (--token-file
// only) or none.
func tokenKind(eff map[string]k3s.Setting) string {
	t, ok := eff["token"]
	if !ok || strings.TrimSpace(t.Value) == "" {
		if f, ok := eff["token-file"]; ok && f.Value != "" {
			return "file"
		}
		return "none"
	}
	pt, err := k3s.ParseToken(strings.TrimSpace(t.Value))
	switch {
	case err != nil:
		return "invalid"
	case pt.Bootstrap != "":
		return "bootstrap"
	case pt.Secure():
		return "secure"
	}
	return "short"
}

// settingValue describes a setting for Starlark; secret settings omit the
// value.
func settingValue(s k3s.Setting, ok, secret bool) starlark.Value {
	if !ok {
		return starlark.None
	}
	d := starlark.StringDict{
		"source": starlark.String(s.Source),
		"line":   starlark.MakeInt(s.Line),
		"kind":   starlark.String(s.Kind),
		"set":    starlark.Bool(strings.TrimSpace(s.Value) != ""),
	}
	if !secret {
		d["value"] = starlark.String(s.Value)
	}
	var sh []starlark.Value
	for _, o := range s.Shadowed {
		sd := starlark.StringDict{"source": starlark.String(o.Source), "line": starlark.MakeInt(o.Line), "kind": starlark.String(o.Kind)}
		if !secret {
			sd["value"] = starlark.String(o.Value)
		}
		sh = append(sh, structOf("origin", sd))
	}
	d["shadowed"] = starlark.NewList(sh)
	return structOf("setting", d)
}

// version runs `k3s --version` on the node.
func (c *k3sCall) version() (k3s.Version, string, error) {
	out, errOut, err := c.runQuiet("k3s --version", 30*time.Second)
	if err != nil {
		return k3s.Version{}, "", c.errorf("k3s --version: %w%s", err, tail(errOut))
	}
	first := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	v, err := k3s.ParseVersion(first)
	if err != nil {
		return k3s.Version{}, first, c.errorf("parse the output of k3s --version %q: %w", first, err)
	}
	return v, first, nil
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return " (" + strings.Join(lines, "; ") + ")"
}

// serviceState is `systemctl is-active <service>`: active, inactive,
// failed, activating, ...
func (c *k3sCall) serviceState() (string, error) {
	out, _, err := c.runQuiet("systemctl is-active "+transport.ShellQuote(c.node.K3s.Service), 30*time.Second)
	state := strings.TrimSpace(out)
	if err != nil && !errors.Is(err, errs.ErrNonZeroExit) {
		return "", c.errorf("systemctl is-active: %w", err)
	}
	if state == "" {
		state = "unknown"
	}
	return state, nil
}

// caPaths are the CA bundles of a node relative to DD.
func caPaths(role string) []string {
	if role == inventory.RoleAgent {
		return []string{"agent/server-ca.crt", "agent/client-ca.crt"}
	}
	var out []string
	for _, t := range k3s.CATypes {
		out = append(out, "server/"+t.CertPath)
	}
	return out
}

// caFingerprints reads and fingerprints the node's CA bundles.
func (c *k3sCall) caFingerprints() (map[string]k3s.CAFingerprint, error) {
	var pats []string
	for _, p := range caPaths(c.node.Role) {
		pats = append(pats, c.dd()+"/"+p)
	}
	files, err := c.fetchMap(pats...)
	if err != nil {
		return nil, err
	}
	out := map[string]k3s.CAFingerprint{}
	for _, p := range caPaths(c.node.Role) {
		f, ok := files[c.dd()+"/"+p]
		if !ok {
			continue
		}
		fp, err := k3s.CAFingerprints(f.Data)
		if err != nil {
			return nil, c.errorf("%s: %w", f.Path, err)
		}
		out[p] = fp
	}
	return out, nil
}

func fingerprintValue(fp k3s.CAFingerprint) starlark.Value {
	return structOf("ca", starlark.StringDict{
		"sha256":  starlark.String(fp.SHA256),
		"subject": starlark.String(fp.Subject),
		"certs":   starlark.MakeInt(fp.Certs),
	})
}

// k3s.facts(node): what caretaker knows about a node's K3s.
func k3sFacts(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	c, err := unpackK3sCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	ns, err := c.readSources()
	if err != nil {
		return nil, err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return nil, err
	}
	v, vline, verr := c.version()
	state, err := c.serviceState()
	if err != nil {
		return nil, err
	}
	cas, err := c.caFingerprints()
	if err != nil {
		return nil, err
	}

	isServer := c.node.Role == inventory.RoleServer
	version := ""
	if verr == nil {
		version = v.String()
	}
	needs, gate := bugGate(c.node, v, verr)
	if verr != nil && c.node.K3s.BootstrapBug == inventory.BootstrapBugAuto {
		c.env.Output(runner.StreamStderr, fmt.Sprintf("k3s version unknown (%v); assuming it needs the --server workaround", verr))
	}
	dataDir := c.node.K3s.DataDir
	if s, ok := eff["data-dir"]; ok && strings.TrimSpace(s.Value) != "" && path.Clean(s.Value) != path.Clean(dataDir) {
		c.env.Output(runner.StreamStderr, fmt.Sprintf("warning: %s:%d sets data-dir %s but the inventory says %s; caretaker uses the inventory's (set k3s.data_dir)", s.Source, s.Line, s.Value, dataDir))
	}

	casDict := starlark.NewDict(len(cas))
	var caKeys []string
	for p := range cas {
		caKeys = append(caKeys, p)
	}
	sort.Strings(caKeys)
	for _, p := range caKeys {
		casDict.SetKey(starlark.String(p), fingerprintValue(cas[p]))
	}
	server, hasServer := eff["server"]
	tok, hasTok := eff["token"]
	ci, hasCI := eff["cluster-init"]
	ddSet, hasDD := eff["data-dir"]
	kind := tokenKind(eff)
	serverURL := ""
	if hasServer {
		serverURL = strings.TrimSpace(server.Value)
	}
	log := fmt.Sprintf("k3s %s, %s, service %s, server=%q, token %s", orUnknown(version), c.node.Role, state, serverURL, kind)
	if isServer {
		log += fmt.Sprintf(", needs --server workaround: %v (%s)", needs, gate)
	}
	c.env.Output(runner.StreamLog, log)
	return structOf("facts", starlark.StringDict{
		"name":             starlark.String(c.node.Name),
		"role":             starlark.String(c.node.Role),
		"version":          starlark.String(version),
		"version_line":     starlark.String(vline),
		"needs_workaround": starlark.Bool(needs),
		"bug_gate":         starlark.String(gate),
		"service":          starlark.String(c.node.K3s.Service),
		"service_state":    starlark.String(state),
		"data_dir":         starlark.String(dataDir),
		"server":           settingValue(server, hasServer, false),
		"server_url":       starlark.String(serverURL),
		"token":            settingValue(tok, hasTok, true),
		"token_kind":       starlark.String(kind),
		"cluster_init":     settingValue(ci, hasCI, false),
		"data_dir_setting": settingValue(ddSet, hasDD, false),
		"cas":              casDict,
		"sources":          strList(ns.paths()),
	}), nil
}

// bugGate decides whether a node has bug k3s-io/k3s#11233 (a server
// restarted with `server` set takes its CA from its peer's disk) and says
// what decided: the inventory's k3s.bootstrap_bug when it is not auto,
// else the version gate. Agents never need the workaround.
func bugGate(n *inventory.Node, v k3s.Version, verr error) (bool, string) {
	if n.Role != inventory.RoleServer {
		return false, "agent"
	}
	switch n.K3s.BootstrapBug {
	case inventory.BootstrapBugTrue:
		return true, "inventory: bootstrap_bug true (" + n.K3s.BootstrapBugFrom + ")"
	case inventory.BootstrapBugFalse:
		return false, "inventory: bootstrap_bug false (" + n.K3s.BootstrapBugFrom + ")"
	}
	if verr != nil {
		return true, "version unknown"
	}
	if k3s.NeedsServerWorkaround(v) {
		return true, "version " + v.String() + " predates the fix (v1.29.15, v1.30.11, v1.31.7, v1.32.3)"
	}
	return false, "version " + v.String() + " has the fix"
}

func orUnknown(s string) string {
	if s == "" {
		return "(version unknown)"
	}
	return s
}
