package fake

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner/transport"
)

// Executor is an in-memory Executor for unit tests of logic: files live
// in a map, commands are answered by registered handlers matched against the
// command line, and every call is recorded. It is not a shell.
type Executor struct {
	NodeName string

	mu       sync.Mutex
	files    map[string]fakeFile
	handlers []fakeHandler
	calls    []string
	closed   bool
	// RunDelay, when set, is slept (ctx-aware) at every Run, to test
	// concurrency and cancellation.
	RunDelay time.Duration
	// DialFunc answers Dial; nil refuses.
	DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
}

type fakeFile struct {
	data []byte
	mode fs.FileMode
	mod  time.Time
}

type fakeHandler struct {
	re *regexp.Regexp
	fn func(line string, stdin []byte, stdout, stderr io.Writer) int
}

// Reply is a canned answer for FakeExecutor.On.
type Reply struct {
	Stdout, Stderr string
	Code           int
}

// New returns an empty fake node.
func New(name string) *Executor {
	return &Executor{NodeName: name, files: map[string]fakeFile{}}
}

// On answers commands matching the regular expression pattern with reply.
// Later registrations win over earlier ones.
func (f *Executor) On(pattern string, reply Reply) *Executor {
	return f.OnFunc(pattern, func(_ string, _ []byte, stdout, stderr io.Writer) int {
		_, _ = io.WriteString(stdout, reply.Stdout)
		_, _ = io.WriteString(stderr, reply.Stderr)
		return reply.Code
	})
}

// OnFunc answers commands matching pattern by calling fn, which writes the
// output and returns the exit code.
func (f *Executor) OnFunc(pattern string, fn func(line string, stdin []byte, stdout, stderr io.Writer) int) *Executor {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers = append([]fakeHandler{{re: regexp.MustCompile(pattern), fn: fn}}, f.handlers...)
	return f
}

// SetFile puts a file on the fake node.
func (f *Executor) SetFile(path string, data []byte, mode fs.FileMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[path] = fakeFile{data: append([]byte(nil), data...), mode: mode, mod: time.Now()}
}

// RemoveFile deletes a file of the fake node (nothing if it is missing).
func (f *Executor) RemoveFile(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.files, path)
}

// File returns a file of the fake node and whether it exists.
func (f *Executor) File(path string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ff, ok := f.files[path]
	return ff.data, ok
}

// Files lists the paths of the fake node's files, sorted.
func (f *Executor) Files() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Calls returns what was called, in order: "run <line>", "read <path>",
// "write <path>", "stat <path>", "dial <addr>".
func (f *Executor) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *Executor) record(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("%s: executor is closed", f.NodeName)
	}
	f.calls = append(f.calls, s)
	return nil
}

// Name returns the node name.
func (f *Executor) Name() string { return f.NodeName }

// Run answers c with the first matching handler; an unmatched command fails
// with exit code 127 like an unknown command in a shell.
func (f *Executor) Run(ctx context.Context, c transport.Command) (transport.Result, error) {
	if err := f.record("run " + c.Line); err != nil {
		return transport.Result{}, err
	}
	start := time.Now()
	if f.RunDelay > 0 {
		t := time.NewTimer(f.RunDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return transport.Result{}, fmt.Errorf("%s: %q: %w", f.NodeName, c.Line, ctx.Err())
		case <-t.C:
		}
	}
	var stdin []byte
	if c.Stdin != nil {
		stdin, _ = io.ReadAll(c.Stdin)
	}
	stdout, stderr := c.Stdout, c.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	var errBuf strings.Builder
	stderrW := io.MultiWriter(&errBuf, orDiscard(stderr))
	f.mu.Lock()
	var h *fakeHandler
	for i := range f.handlers {
		if f.handlers[i].re.MatchString(c.Line) {
			h = &f.handlers[i]
			break
		}
	}
	f.mu.Unlock()
	code := 127
	if h != nil {
		code = h.fn(c.Line, stdin, stdout, stderrW)
	} else {
		fmt.Fprintf(stderrW, "fake: no handler for %q\n", c.Line)
	}
	res := transport.Result{ExitCode: code, Duration: time.Since(start)}
	if code != 0 {
		return res, &transport.ExitError{Node: f.NodeName, Line: c.Line, Code: code, StderrTail: strings.TrimSpace(errBuf.String())}
	}
	return res, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// ReadFile returns a file set with SetFile or written with WriteFile.
func (f *Executor) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if err := f.record("read " + path); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ff, ok := f.files[path]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: f.NodeName + ":" + path, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), ff.data...), nil
}

// WriteFile stores a file, keeping the mode of an existing one.
func (f *Executor) WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) error {
	if err := f.record("write " + path); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.files[path]; ok {
		mode = old.mode
	}
	f.files[path] = fakeFile{data: append([]byte(nil), data...), mode: mode, mod: time.Now()}
	return nil
}

// Stat describes a file of the fake node; directories exist implicitly
// when a file lies below them.
func (f *Executor) Stat(ctx context.Context, path string) (transport.FileInfo, error) {
	if err := f.record("stat " + path); err != nil {
		return transport.FileInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ff, ok := f.files[path]; ok {
		return transport.FileInfo{Path: path, Size: int64(len(ff.data)), Mode: ff.mode, ModTime: ff.mod}, nil
	}
	prefix := strings.TrimSuffix(path, "/") + "/"
	for p := range f.files {
		if strings.HasPrefix(p, prefix) {
			return transport.FileInfo{Path: path, Mode: fs.ModeDir | 0o755, IsDir: true}, nil
		}
	}
	return transport.FileInfo{}, &fs.PathError{Op: "stat", Path: f.NodeName + ":" + path, Err: fs.ErrNotExist}
}

// Dial calls DialFunc, or refuses.
func (f *Executor) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := f.record("dial " + addr); err != nil {
		return nil, err
	}
	if f.DialFunc == nil {
		return nil, fmt.Errorf("%s: dial %s: connection refused (fake)", f.NodeName, addr)
	}
	return f.DialFunc(ctx, network, addr)
}

// Close marks the executor closed.
func (f *Executor) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}
