package builtins

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// K3s is the `k3s` module: the K3s maintenance steps playbooks call. Every
// node argument is a node value or a node name. Every mutating call
// records its undo before it acts, goes through check mode, is idempotent
// (a second call changes nothing and reports ok) and marks the step
// changed when it changed something. Tokens and keys never appear in
// output, errors or notes.
//
//	k3s.facts(node) -> struct          version, role, effective server/token/
//	                                   cluster-init/data-dir with their source,
//	                                   bug gate, service state, CAs on disk
//	k3s.backup_certs(node, name="")    archive certs, creds, token and config
//	                                   sources on the node and the controller
//	k3s.restore(node, backup="", restart=False)
//	                                   put a backup back (latest if no name)
//	k3s.strip_server(node)             remove `server` from every source
//	k3s.restore_server(node)           put it back byte for byte
//	k3s.generate_ca(node, root_cert="", root_key="", intermediate_cert="",
//	                intermediate_key="", force=False)
//	                                   a new CA set, staged on the node
//	k3s.rotate_ca(node, path, force=False)
//	                                   k3s certificate rotate-ca, then check
//	                                   the datastore holds the staged set
//	k3s.restart(node, timeout="3m", check=True)
//	                                   restart and wait until up
//	k3s.datastore(node) -> struct      the decrypted bootstrap data's CAs
//	k3s.verify(nodes=None, expect="", focus=None, live=True, fail=True, quiet=False)
//	                                   every node holds the datastore CA
//	k3s.check(nodes=None, warn_days=120, fail=False)
//	                                   certificate expiry on every node
//	k3s.token(node, save=False)        the server token (redacted everywhere)
//	k3s.update_token(node, token)      new CA hash in the configured token
//	k3s.restore_token(node)            undo update_token byte for byte
var K3s = &starlarkstruct.Module{
	Name: "k3s",
	Members: starlark.StringDict{
		"facts":          starlark.NewBuiltin("k3s.facts", k3sFacts),
		"backup_certs":   starlark.NewBuiltin("k3s.backup_certs", k3sBackupCerts),
		"restore":        starlark.NewBuiltin("k3s.restore", k3sRestore),
		"strip_server":   starlark.NewBuiltin("k3s.strip_server", k3sStripServer),
		"restore_server": starlark.NewBuiltin("k3s.restore_server", k3sRestoreServer),
		"generate_ca":    starlark.NewBuiltin("k3s.generate_ca", k3sGenerateCA),
		"rotate_ca":      starlark.NewBuiltin("k3s.rotate_ca", k3sRotateCA),
		"restart":        starlark.NewBuiltin("k3s.restart", k3sRestart),
		"datastore":      starlark.NewBuiltin("k3s.datastore", k3sDatastore),
		"verify":         starlark.NewBuiltin("k3s.verify", k3sVerify),
		"check":          starlark.NewBuiltin("k3s.check", k3sCheck),
		"token":          starlark.NewBuiltin("k3s.token", k3sToken),
		"update_token":   starlark.NewBuiltin("k3s.update_token", k3sUpdateToken),
		"restore_token":  starlark.NewBuiltin("k3s.restore_token", k3sRestoreToken),
	},
}

// k3sCall is what every k3s builtin starts from: the run's env, the target
// node and its executor.
type k3sCall struct {
	env  *runner.Env
	node *inventory.Node
	ex   transport.Executor
	name string // builtin name, for messages
}

func (c *k3sCall) ctx() context.Context { return c.env.Ctx }

// errorf builds an error that starts with the builtin and node.
func (c *k3sCall) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s: "+format, append([]any{c.name, c.node.Name}, args...)...)
}

// sd is the node's K3s server dir.
func (c *k3sCall) sd() string { return serverDir(c.node) }

// dd is the node's K3s data dir.
func (c *k3sCall) dd() string { return strings.TrimSuffix(c.node.K3s.DataDir, "/") }

func serverDir(n *inventory.Node) string { return strings.TrimSuffix(n.K3s.DataDir, "/") + "/server" }

// resolveNode turns a node value or name into the run's node.
func resolveNode(env *runner.Env, v starlark.Value) (*inventory.Node, error) {
	switch x := v.(type) {
	case *Node:
		return x.N, nil
	case starlark.String:
		for _, n := range env.Nodes() {
			if n.Name == string(x) {
				return n, nil
			}
		}
		for _, n := range env.Cluster().Nodes {
			if n.Name == string(x) {
				return n, nil
			}
		}
		return nil, fmt.Errorf("no node named %q in cluster %s", string(x), env.Cluster().Name)
	case starlark.NoneType:
		if env.Node != nil {
			return env.Node, nil
		}
	}
	return nil, fmt.Errorf("want a node or a node name, got %s", v.Type())
}

// unpackK3sCall unpacks a builtin's arguments — an optional first "node"
// (a node value or name; default the step's node) followed by pairs of
// further parameter names and pointers, as starlark.UnpackArgs takes them —
// and prepares the call on that node.
func unpackK3sCall(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple, pairs ...any) (*k3sCall, error) {
	var nodeArg starlark.Value = starlark.None
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, append([]any{"node?", &nodeArg}, pairs...)...); err != nil {
		return nil, err
	}
	return newK3sCall(th, b, nodeArg)
}

// newK3sCall resolves the env and node of a builtin call.
func newK3sCall(th *starlark.Thread, b *starlark.Builtin, nodeArg starlark.Value) (*k3sCall, error) {
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	n, err := resolveNode(env, nodeArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return callFor(env, n, b.Name())
}

// callFor returns the call context for node n, connecting if needed.
func callFor(env *runner.Env, n *inventory.Node, name string) (*k3sCall, error) {
	if env.Node == n && env.Exec != nil {
		return &k3sCall{env: env, node: n, ex: env.Exec, name: name}, nil
	}
	ex, err := env.Executor(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", name, n.Name, err)
	}
	return &k3sCall{env: env, node: n, ex: ex, name: name}, nil
}

// nodeList resolves a list of nodes (values, names or selectors); None
// means every node of the run.
func nodeList(env *runner.Env, v starlark.Value) ([]*inventory.Node, error) {
	if v == nil || v == starlark.None {
		return append([]*inventory.Node(nil), env.Nodes()...), nil
	}
	if n, ok := v.(*Node); ok {
		return []*inventory.Node{n.N}, nil
	}
	terms, err := selectorTerms(v)
	if err != nil {
		return nil, err
	}
	var out []*inventory.Node
	seen := map[*inventory.Node]bool{}
	for _, t := range terms {
		t = strings.TrimSpace(t)
		matched := false
		for _, n := range env.Nodes() {
			if n.Matches(t) {
				matched = true
				if !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
		if !matched && t != "" {
			return nil, fmt.Errorf("%q matches no node of the run", t)
		}
	}
	// Keep the run's order (servers first).
	order := map[*inventory.Node]int{}
	for i, n := range env.Nodes() {
		order[n] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return order[out[i]] < order[out[j]] })
	return out, nil
}

// forEachNode runs fn for every node at once (one connection per node is
// given by the pool) and returns the results in node order.
func forEachNode[T any](env *runner.Env, nodes []*inventory.Node, name string, fn func(c *k3sCall) (T, error)) ([]T, []error) {
	out := make([]T, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := callFor(env, n, name)
			if err != nil {
				errs[i] = err
				return
			}
			out[i], errs[i] = fn(c)
		}()
	}
	wg.Wait()
	return out, errs
}

// remoteFile is a file read from a node with its metadata.
type remoteFile struct {
	Path  string
	Data  []byte
	Mode  uint32 // permission bits
	UID   int
	GID   int
	MTime time.Time
}

// fetchScript sends every existing regular file matching the patterns
// given on stdin (one per line; shell globs allowed, newline is the only
// separator) as one tar stream, so that reading many files costs two
// processes on the node: first a line "#caretaker-file <path>" per file
// found, then "#caretaker-tar", then the base64 of `tar -ch` of them
// (symlinks followed; modes, owners and modification times kept). '#' is
// not in the base64 alphabet.
const fetchScript = `IFS='
'
set --
while IFS= read -r p; do
  [ -n "$p" ] || continue
  for f in $p; do
    [ -f "$f" ] && set -- "$@" "$f"
  done
done
[ $# -gt 0 ] || exit 0
for f in "$@"; do printf '#caretaker-file %s\n' "$f"; done
echo '#caretaker-tar'
tar -chf - -- "$@" 2>/dev/null | base64`

// Markers of fetchScript's output.
const (
	fetchHeader = "#caretaker-file "
	fetchTar    = "#caretaker-tar"
)

// fetch reads every existing file matching patterns (paths or globs) from
// the node with one command. It is read-only and runs in check mode too.
func (c *k3sCall) fetch(patterns ...string) ([]remoteFile, error) {
	if err := c.env.CheckStop(); err != nil {
		return nil, err
	}
	var out, errb bytes.Buffer
	_, err := c.ex.Run(c.ctx(), transport.Command{Line: fetchScript, Stdin: strings.NewReader(strings.Join(patterns, "\n") + "\n"), Stdout: &out, Stderr: &errb})
	if err != nil {
		return nil, c.errorf("read files %s: %w", strings.Join(patterns, ", "), err)
	}
	files, err := parseFetch(out.Bytes())
	if err != nil {
		return nil, c.errorf("read files %s: %w", strings.Join(patterns, ", "), err)
	}
	return files, nil
}

// parseFetch decodes fetchScript's output.
func parseFetch(out []byte) ([]remoteFile, error) {
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	var listed []string
	var b64 strings.Builder
	inTar := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20) // grows to 1 MiB only for long lines
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inTar:
			b64.WriteString(strings.TrimSpace(line))
		case line == fetchTar:
			inTar = true
		case strings.HasPrefix(line, fetchHeader):
			listed = append(listed, strings.TrimPrefix(line, fetchHeader))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(b64.String())
	if err != nil {
		return nil, fmt.Errorf("decode the archive: %w", err)
	}
	entries := map[string]remoteFile{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the archive: %w", err)
		}
		name := strings.TrimPrefix(h.Name, "/")
		f := remoteFile{Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid, MTime: h.ModTime}
		switch h.Typeflag {
		case tar.TypeReg:
			if f.Data, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("read %s from the archive: %w", h.Name, err)
			}
		case tar.TypeLink:
			target, ok := entries[strings.TrimPrefix(h.Linkname, "/")]
			if !ok {
				continue
			}
			f.Data = target.Data
		default:
			continue
		}
		entries[name] = f
	}
	var files []remoteFile
	seen := map[string]bool{}
	for _, p := range listed {
		if seen[p] {
			continue
		}
		seen[p] = true
		f, ok := entries[strings.TrimPrefix(p, "/")]
		if !ok {
			return nil, fmt.Errorf("%s exists but could not be read (permission denied? give the inventory user root or sudo)", p)
		}
		f.Path = p
		files = append(files, f)
	}
	return files, nil
}

// fetchMap is fetch keyed by path.
func (c *k3sCall) fetchMap(patterns ...string) (map[string]remoteFile, error) {
	files, err := c.fetch(patterns...)
	if err != nil {
		return nil, err
	}
	m := make(map[string]remoteFile, len(files))
	for _, f := range files {
		m[f.Path] = f
	}
	return m, nil
}

// runQuiet runs a read-only command and returns its stdout; its output is
// not streamed into the run's events.
func (c *k3sCall) runQuiet(line string, timeout time.Duration) (string, string, error) {
	if err := c.env.CheckStop(); err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	_, err := c.ex.Run(c.ctx(), transport.Command{Line: line, Stdout: &out, Stderr: &errb, Timeout: timeout})
	return out.String(), errb.String(), err
}

// mkdirPrivate creates dir (and parents) readable by root only.
func (c *k3sCall) mkdirPrivate(dir string) error {
	_, _, err := c.runQuiet("umask 077 && mkdir -p -- "+transport.ShellQuote(dir), 30*time.Second)
	if err != nil {
		return c.errorf("create %s: %w", dir, err)
	}
	return nil
}

// caretakerDir is where caretaker keeps its records on a node.
func (c *k3sCall) caretakerDir(parts ...string) string {
	return path.Join(append([]string{c.dd(), "caretaker"}, parts...)...)
}

// structOf builds a Starlark struct.
func structOf(name string, d starlark.StringDict) *starlarkstruct.Struct {
	return starlarkstruct.FromStringDict(starlark.String(name), d)
}

func strList(ss []string) *starlark.List {
	l := starlark.NewList(nil)
	for _, s := range ss {
		l.Append(starlark.String(s))
	}
	return l
}

// shortSHA shortens a hex digest for tables.
func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// firstErr returns the first non-nil error.
func firstErr(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
