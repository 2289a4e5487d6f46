package k3sops

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// testRun is a Run for unit tests: it records output, notes, undo records
// and secrets; check says whether Wet runs its changes.
type testRun struct {
	check bool
	nodes []*inventory.Node
	execs map[string]transport.Executor

	mu      sync.Mutex
	out     []string
	notes   []string
	undos   []string
	secrets []string
	changed bool
}

func (r *testRun) Wet(what string, fn func() error) error {
	if r.check {
		r.Output("check", "would "+what)
		return nil
	}
	return fn()
}
func (r *testRun) CheckStop() error { return nil }
func (r *testRun) RunCommand(ctx context.Context, ex transport.Executor, n *inventory.Node, c transport.Command, changes, quiet bool) (transport.Result, string, string, error) {
	if changes && r.check {
		r.Output("check", "would run on "+n.Name+": "+c.Line)
		return transport.Result{}, "", "", nil
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	res, err := ex.Run(ctx, c)
	if changes && err == nil {
		r.MarkChanged()
	}
	return res, out.String(), errb.String(), err
}
func (r *testRun) Output(stream, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out = append(r.out, stream+": "+text)
}
func (r *testRun) Note(text string)              { r.mu.Lock(); r.notes = append(r.notes, text); r.mu.Unlock() }
func (r *testRun) Redact(s string)               { r.mu.Lock(); r.secrets = append(r.secrets, s); r.mu.Unlock() }
func (r *testRun) MarkChanged()                  { r.mu.Lock(); r.changed = true; r.mu.Unlock() }
func (r *testRun) ResolveUndo(node, kind string) {}

func (r *testRun) Undo(kind string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.undos = append(r.undos, kind)
	return nil
}
func (r *testRun) Executor(_ context.Context, n *inventory.Node) (transport.Executor, error) {
	ex, ok := r.execs[n.Name]
	if !ok {
		return nil, fmt.Errorf("%s is unreachable", n.Name)
	}
	return ex, nil
}
func (r *testRun) Nodes() []*inventory.Node { return r.nodes }
func (r *testRun) RunID() string            { return "run-1" }
func (r *testRun) StateDir() string         { return "/nonexistent-state" }

func (r *testRun) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.out, "\n")
}

// testNode is an inventory node with K3s's default paths.
func testNode(name, role string) *inventory.Node {
	return &inventory.Node{Name: name, Role: role, K3s: inventory.K3sPaths{
		DataDir: inventory.DefaultDataDir, Service: map[bool]string{true: "k3s", false: "k3s-agent"}[role == inventory.RoleServer],
		SupervisorEndpoint: "127.0.0.1:6443", EtcdEndpoint: "127.0.0.1:2379",
	}}
}

// answerFetch makes ex answer the fetch script as a shell would: every
// regular file matching a pattern on stdin, as a header and a base64 tar.
func answerFetch(ex *fake.Executor) {
	ex.OnFunc(quoteRE(fetchTar), func(_ string, stdin []byte, stdout, _ io.Writer) int {
		var found []string
		for _, pat := range strings.Split(strings.TrimSpace(string(stdin)), "\n") {
			for _, f := range ex.Files() {
				if ok, _ := path.Match(pat, f); ok {
					found = append(found, f)
				}
			}
		}
		if len(found) == 0 {
			return 0
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, f := range found {
			data, _ := ex.File(f)
			_ = tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(f, "/"), Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg})
			_, _ = tw.Write(data)
			fmt.Fprintf(stdout, "%s%s\n", fetchHeader, f)
		}
		_ = tw.Close()
		fmt.Fprintf(stdout, "%s\n%s\n", fetchTar, base64.StdEncoding.EncodeToString(buf.Bytes()))
		return 0
	})
}

func quoteRE(s string) string { return strings.NewReplacer("-", `\-`).Replace(s) }

// must returns v, and panics on err (test set-up that cannot fail).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type transportExecutor = transport.Executor

func ioNopCloser(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }
