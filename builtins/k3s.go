package builtins

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
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
	node *runner.Node
	ex   runner.Executor
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

func serverDir(n *runner.Node) string { return strings.TrimSuffix(n.K3s.DataDir, "/") + "/server" }

// resolveNode turns a node value or name into the run's node.
func resolveNode(env *runner.Env, v starlark.Value) (*runner.Node, error) {
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
func callFor(env *runner.Env, n *runner.Node, name string) (*k3sCall, error) {
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
func nodeList(env *runner.Env, v starlark.Value) ([]*runner.Node, error) {
	if v == nil || v == starlark.None {
		return append([]*runner.Node(nil), env.Nodes()...), nil
	}
	if n, ok := v.(*Node); ok {
		return []*runner.Node{n.N}, nil
	}
	terms, err := selectorTerms(v)
	if err != nil {
		return nil, err
	}
	var out []*runner.Node
	seen := map[*runner.Node]bool{}
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
	order := map[*runner.Node]int{}
	for i, n := range env.Nodes() {
		order[n] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return order[out[i]] < order[out[j]] })
	return out, nil
}

// forEachNode runs fn for every node at once (one connection per node is
// given by the pool) and returns the results in node order.
func forEachNode[T any](env *runner.Env, nodes []*runner.Node, name string, fn func(c *k3sCall) (T, error)) ([]T, []error) {
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

// fetchScript prints every existing regular file matching the patterns
// given on stdin (one per line; shell globs allowed, newline is the only
// separator), each as a header line "#caretaker-file <mode> <uid> <gid>
// <mtime> <size> <path>" followed by its base64 content. '#' is not in the
// base64 alphabet, so headers cannot be confused with content.
const fetchScript = `IFS='
'
while IFS= read -r p; do
  [ -n "$p" ] || continue
  for f in $p; do
    [ -f "$f" ] || continue
    s=$(stat -L -c '%a %u %g %Y %s' -- "$f") || exit 1
    printf '#caretaker-file %s %s\n' "$s" "$f"
    base64 < "$f" || exit 1
  done
done`

// fetchHeader starts each file in fetchScript's output.
const fetchHeader = "#caretaker-file "

// fetch reads every existing file matching patterns (paths or globs) from
// the node with one command. It is read-only and runs in check mode too.
func (c *k3sCall) fetch(patterns ...string) ([]remoteFile, error) {
	if err := c.env.CheckStop(); err != nil {
		return nil, err
	}
	var out, errb bytes.Buffer
	_, err := c.ex.Run(c.ctx(), runner.Command{Line: fetchScript, Stdin: strings.NewReader(strings.Join(patterns, "\n") + "\n"), Stdout: &out, Stderr: &errb})
	if err != nil {
		return nil, c.errorf("read files %s: %w", strings.Join(patterns, ", "), err)
	}
	return parseFetch(out.Bytes())
}

func parseFetch(out []byte) ([]remoteFile, error) {
	var files []remoteFile
	var cur *remoteFile
	var b64 strings.Builder
	flush := func() error {
		if cur == nil {
			return nil
		}
		data, err := base64.StdEncoding.DecodeString(b64.String())
		if err != nil {
			return fmt.Errorf("decode %s: %w", cur.Path, err)
		}
		cur.Data = data
		files = append(files, *cur)
		cur = nil
		b64.Reset()
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, fetchHeader) {
			if err := flush(); err != nil {
				return nil, err
			}
			f := strings.SplitN(strings.TrimPrefix(line, fetchHeader), " ", 6)
			if len(f) != 6 {
				return nil, fmt.Errorf("unexpected file header %q", line)
			}
			mode, err1 := strconv.ParseUint(f[0], 8, 32)
			uid, err2 := strconv.Atoi(f[1])
			gid, err3 := strconv.Atoi(f[2])
			mt, err4 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
				return nil, fmt.Errorf("unexpected file header %q", line)
			}
			cur = &remoteFile{Path: f[5], Mode: uint32(mode), UID: uid, GID: gid, MTime: time.Unix(mt, 0)}
			continue
		}
		if cur != nil {
			b64.WriteString(strings.TrimSpace(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
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
	_, err := c.ex.Run(c.ctx(), runner.Command{Line: line, Stdout: &out, Stderr: &errb, Timeout: timeout})
	return out.String(), errb.String(), err
}

// mkdirPrivate creates dir (and parents) readable by root only.
func (c *k3sCall) mkdirPrivate(dir string) error {
	_, _, err := c.runQuiet("umask 077 && mkdir -p -- "+runner.ShellQuote(dir), 30*time.Second)
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
