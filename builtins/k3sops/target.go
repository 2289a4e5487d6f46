// Package k3sops is caretaker's K3s operations as typed Go functions: facts
// of a node, backups and restores, stripping and restoring `server`, CA
// generation and rotation, restarts, the datastore, verification, the
// certificate check and join tokens. Each takes a context, a Target (a node
// of a run with its executor) or the Run itself, and options, and returns a
// typed result. The Starlark `k3s` module (package builtins) is a thin layer
// over it, and `caretaker check` calls it directly.
//
// Check mode is decided in one place: every change goes through Run.Wet,
// which runs it or, in check mode, reports "would <what>". Undo actions are
// recorded through Run.Undo before the change they protect. Tokens and keys
// are registered with Run.Redact before anything could show them.
//
// The package imports no Starlark.
package k3sops

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// Run is what an operation needs of the run it is part of; *runner.Env is
// one. Operations never decide check mode themselves: Wet and RunCommand
// do.
type Run interface {
	// Wet runs fn unless in check mode; in check mode it reports
	// "would <what>" and returns nil.
	Wet(what string, fn func() error) error
	// CheckStop fails once the run was asked to stop.
	CheckStop() error
	// RunCommand runs a command on a node with its output in the run's
	// events; changes=true commands go through check mode.
	RunCommand(ctx context.Context, ex transport.Executor, n *inventory.Node, c transport.Command, changes, quiet bool) (transport.Result, string, string, error)
	// Output emits one line of the step's output on the given stream.
	Output(stream, text string)
	// Note adds a line to the run's summary.
	Note(text string)
	// Redact registers a secret that must never appear in an event.
	Redact(secret string)
	// MarkChanged records that the step changed something.
	MarkChanged()
	// Undo records an undo action before the change it protects;
	// ResolveUndo says the node's changes recorded as kind are put back.
	Undo(kind string, data []byte) error
	ResolveUndo(node, kind string)
	// Executor returns the executor of a node of the run's cluster.
	Executor(ctx context.Context, n *inventory.Node) (transport.Executor, error)
	// Nodes are the nodes taking part in the run.
	Nodes() []*inventory.Node
	// RunID identifies the run; StateDir is the controller's state dir.
	RunID() string
	StateDir() string
}

// Target is one node of a run that an operation acts on, with its
// executor. Op names the operation in messages ("k3s.restart").
type Target struct {
	Run  Run
	Node *inventory.Node
	Exec transport.Executor
	Op   string
}

// NewTarget returns the target for node n of run, connecting through the
// run's pool when ex is nil.
func NewTarget(ctx context.Context, run Run, n *inventory.Node, ex transport.Executor, op string) (*Target, error) {
	if ex == nil {
		var err error
		if ex, err = run.Executor(ctx, n); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", op, n.Name, err)
		}
	}
	return &Target{Run: run, Node: n, Exec: ex, Op: op}, nil
}

// errorf builds an error that starts with the operation and node.
func (c *Target) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s: "+format, append([]any{c.Op, c.Node.Name}, args...)...)
}

// sd is the node's K3s server dir.
func (c *Target) sd() string { return ServerDir(c.Node) }

// dd is the node's K3s data dir.
func (c *Target) dd() string { return strings.TrimSuffix(c.Node.K3s.DataDir, "/") }

// ServerDir is a node's K3s server directory (DATA_DIR/server).
func ServerDir(n *inventory.Node) string { return strings.TrimSuffix(n.K3s.DataDir, "/") + "/server" }

// forEachNode runs fn for every node at once (the run's pool gives one
// connection per node) and returns the results in node order.
func forEachNode[T any](ctx context.Context, run Run, nodes []*inventory.Node, op string, fn func(c *Target) (T, error)) ([]T, []error) {
	out := make([]T, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := NewTarget(ctx, run, n, nil, op)
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
func (c *Target) fetch(ctx context.Context, patterns ...string) ([]remoteFile, error) {
	if err := c.Run.CheckStop(); err != nil {
		return nil, err
	}
	var out, errb bytes.Buffer
	_, err := c.Exec.Run(ctx, transport.Command{Line: fetchScript, Stdin: strings.NewReader(strings.Join(patterns, "\n") + "\n"), Stdout: &out, Stderr: &errb})
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
func (c *Target) fetchMap(ctx context.Context, patterns ...string) (map[string]remoteFile, error) {
	files, err := c.fetch(ctx, patterns...)
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
func (c *Target) runQuiet(ctx context.Context, line string, timeout time.Duration) (string, string, error) {
	if err := c.Run.CheckStop(); err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	_, err := c.Exec.Run(ctx, transport.Command{Line: line, Stdout: &out, Stderr: &errb, Timeout: timeout})
	return out.String(), errb.String(), err
}

// mkdirPrivate creates dir (and parents) readable by root only.
func (c *Target) mkdirPrivate(ctx context.Context, dir string) error {
	_, _, err := c.runQuiet(ctx, "umask 077 && mkdir -p -- "+transport.ShellQuote(dir), 30*time.Second)
	if err != nil {
		return c.errorf("create %s: %w", dir, err)
	}
	return nil
}

// caretakerDir is where caretaker keeps its records on a node.
func (c *Target) caretakerDir(parts ...string) string {
	return path.Join(append([]string{c.dd(), "caretaker"}, parts...)...)
}

// shortSHA shortens a hex digest for tables.
func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
