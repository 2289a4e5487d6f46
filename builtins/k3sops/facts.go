package k3sops

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

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
func (c *Target) readSources(ctx context.Context) (*nodeSources, error) {
	k := c.Node.K3s
	patterns := []string{k.UnitFile, k.UnitFile + ".d/*.conf", k.ConfigFile, k.ConfigFile + ".d/*.yaml", k.ConfigFile + ".d/*.yml"}
	patterns = append(patterns, k.EnvFiles...)
	got, err := c.fetchMap(ctx, patterns...)
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
		more, err := c.fetchMap(ctx, missing...)
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
func (c *Target) effective(ns *nodeSources) (map[string]k3s.Setting, error) {
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
func (c *Target) redactToken(tok string) { redactToken(c.Run, tok) }

func redactToken(run Run, tok string) {
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return
	}
	run.Redact(tok)
	if t, err := k3s.ParseToken(tok); err == nil {
		run.Redact(t.Password)
		run.Redact(t.Bootstrap)
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

// Setting is a config setting as K3s sees it, with where it came from.
// Value is empty for secret settings (the token).
type Setting struct {
	Source   string   `json:"source"`
	Line     int      `json:"line"`
	Kind     string   `json:"kind"`
	Set      bool     `json:"set"`
	Value    *string  `json:"value,omitempty" star:"value,omitnil"`
	Shadowed []Origin `json:"shadowed"`
}

// Origin is a source whose value a later one overrides.
type Origin struct {
	Source string  `json:"source"`
	Line   int     `json:"line"`
	Kind   string  `json:"kind"`
	Value  *string `json:"value,omitempty" star:"value,omitnil"`
}

// settingOf describes a setting; secret settings omit the value. nil when
// no source sets it.
func settingOf(s k3s.Setting, ok, secret bool) *Setting {
	if !ok {
		return nil
	}
	out := &Setting{Source: s.Source, Line: s.Line, Kind: s.Kind, Set: strings.TrimSpace(s.Value) != "", Shadowed: []Origin{}}
	if !secret {
		out.Value = &s.Value
	}
	for _, o := range s.Shadowed {
		or := Origin{Source: o.Source, Line: o.Line, Kind: o.Kind}
		if !secret {
			v := o.Value
			or.Value = &v
		}
		out.Shadowed = append(out.Shadowed, or)
	}
	return out
}

// version runs `k3s --version` on the node.
func (c *Target) version(ctx context.Context) (k3s.Version, string, error) {
	out, errOut, err := c.runQuiet(ctx, "k3s --version", 30*time.Second)
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
func (c *Target) serviceState(ctx context.Context) (string, error) {
	out, _, err := c.runQuiet(ctx, "systemctl is-active "+transport.ShellQuote(c.Node.K3s.Service), 30*time.Second)
	state := strings.TrimSpace(out)
	if err != nil && !errors.Is(err, errs.ErrNonZeroExit) {
		return "", c.errorf("systemctl is-active: %w", err)
	}
	if state == "" {
		state = "unknown"
	}
	return state, nil
}

// settledState is the unit's state once it is no longer "activating",
// or after settle (then still "activating"); it says when it waits.
func (c *Target) settledState(ctx context.Context, settle time.Duration) (string, error) {
	state, err := c.serviceState(ctx)
	if err != nil || state != "activating" || settle <= 0 {
		return state, err
	}
	c.Run.Output(runner.StreamLog, fmt.Sprintf("%s is starting (activating): waiting up to %s for it to become active", c.Node.K3s.Service, settle))
	began := time.Now()
	err = pollEvery(ctx, time.Second, func() (bool, error) {
		if state, err = c.serviceState(ctx); err != nil {
			return false, err
		}
		return state != "activating" || time.Since(began) >= settle, nil
	})
	if err != nil {
		return "", err
	}
	if state == "activating" {
		c.Run.Output(runner.StreamStderr, fmt.Sprintf("%s is still starting (activating) after %s: it is stuck or slow; see journalctl -u %s", c.Node.K3s.Service, settle, c.Node.K3s.Service))
	} else {
		c.Run.Output(runner.StreamLog, fmt.Sprintf("%s is %s after %s", c.Node.K3s.Service, state, time.Since(began).Round(100*time.Millisecond)))
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
func (c *Target) caFingerprints(ctx context.Context) (map[string]k3s.CAFingerprint, error) {
	var pats []string
	for _, p := range caPaths(c.Node.Role) {
		pats = append(pats, c.dd()+"/"+p)
	}
	files, err := c.fetchMap(ctx, pats...)
	if err != nil {
		return nil, err
	}
	out := map[string]k3s.CAFingerprint{}
	for _, p := range caPaths(c.Node.Role) {
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

// CA describes a CA bundle: the sha256 of its bytes, the subject of its
// first certificate and how many certificates it holds.
type CA struct {
	Certs   int    `json:"certs"`
	SHA256  string `json:"sha256"`
	Subject string `json:"subject"`
	// Roots are the sha256 (of the DER) of the bundle's self-signed roots,
	// the one its first certificate chains to first; after a cross-signed
	// rotation the others are the roots it was rotated from. Not in JSON
	// output (check's tables stay as they were).
	Roots []string `json:"-" star:"roots"`
}

func caOf(fp k3s.CAFingerprint) CA {
	return CA{Certs: fp.Certs, SHA256: fp.SHA256, Subject: fp.Subject, Roots: append([]string{}, fp.Roots...)}
}

// Facts is what caretaker knows about a node's K3s.
type Facts struct {
	Name            string `json:"name"`
	Role            string `json:"role"`
	Version         string `json:"version"`
	VersionLine     string `json:"version_line"`
	NeedsWorkaround bool   `json:"needs_workaround"`
	// BugGate says what decided NeedsWorkaround.
	BugGate        string        `json:"bug_gate"`
	Service        string        `json:"service"`
	ServiceState   string        `json:"service_state"`
	DataDir        string        `json:"data_dir"`
	Server         *Setting      `json:"server"`
	ServerURL      string        `json:"server_url"`
	Token          *Setting      `json:"token"`
	TokenKind      string        `json:"token_kind"`
	ClusterInit    *Setting      `json:"cluster_init"`
	DataDirSetting *Setting      `json:"data_dir_setting"`
	CAs            map[string]CA `json:"cas"`
	Sources        []string      `json:"sources"`
}

// DefaultFactsSettle is how long ReadFacts waits, by default, for a K3s
// that is starting (unit "activating") to become active or fail.
const DefaultFactsSettle = time.Minute

// ReadFacts reads a node's K3s facts: version, role, the effective
// server/token/cluster-init/data-dir with their sources, the bug gate,
// the service state and the CAs on disk. It logs a one-line summary.
// A K3s that is starting has no settled facts (its etcd member, the
// datastore and :6443 come up one after the other): ReadFacts first
// waits up to settle for it to leave "activating" — a K3s brought back
// just before the run — and reports the state it ends in (still
// "activating" when it did not settle: stuck, e.g. under
// TimeoutStartSec=0).
func ReadFacts(ctx context.Context, c *Target, settle time.Duration) (*Facts, error) {
	state, err := c.settledState(ctx, settle)
	if err != nil {
		return nil, err
	}
	ns, err := c.readSources(ctx)
	if err != nil {
		return nil, err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return nil, err
	}
	v, vline, verr := c.version(ctx)
	cas, err := c.caFingerprints(ctx)
	if err != nil {
		return nil, err
	}
	version := ""
	if verr == nil {
		version = v.String()
	}
	needs, gate := bugGate(c.Node, v, verr)
	if verr != nil && c.Node.K3s.BootstrapBug == inventory.BootstrapBugAuto {
		c.Run.Output(runner.StreamStderr, fmt.Sprintf("k3s version unknown (%v); assuming it needs the --server workaround", verr))
	}
	dataDir := c.Node.K3s.DataDir
	if s, ok := eff["data-dir"]; ok && strings.TrimSpace(s.Value) != "" && path.Clean(s.Value) != path.Clean(dataDir) {
		c.Run.Output(runner.StreamStderr, fmt.Sprintf("warning: %s:%d sets data-dir %s but the inventory says %s; caretaker uses the inventory's (set k3s.data_dir)", s.Source, s.Line, s.Value, dataDir))
	}
	f := &Facts{
		Name: c.Node.Name, Role: c.Node.Role, Version: version, VersionLine: vline,
		NeedsWorkaround: needs, BugGate: gate, Service: c.Node.K3s.Service, ServiceState: state,
		DataDir: dataDir, TokenKind: tokenKind(eff), CAs: map[string]CA{}, Sources: ns.paths(),
	}
	for p, fp := range cas {
		f.CAs[p] = caOf(fp)
	}
	server, hasServer := eff["server"]
	if hasServer {
		f.ServerURL = strings.TrimSpace(server.Value)
	}
	f.Server = settingOf(server, hasServer, false)
	tok, hasTok := eff["token"]
	f.Token = settingOf(tok, hasTok, true)
	ci, hasCI := eff["cluster-init"]
	f.ClusterInit = settingOf(ci, hasCI, false)
	ddSet, hasDD := eff["data-dir"]
	f.DataDirSetting = settingOf(ddSet, hasDD, false)
	log := fmt.Sprintf("k3s %s, %s, service %s, server=%q, token %s", orUnknown(version), c.Node.Role, state, f.ServerURL, f.TokenKind)
	if c.Node.Role == inventory.RoleServer {
		log += fmt.Sprintf(", needs --server workaround: %v (%s)", needs, gate)
	}
	c.Run.Output(runner.StreamLog, log)
	return f, nil
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
