package transporttest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport"
)

// ExecutorSuite runs the behaviour every Executor must have. newExec
// returns a fresh executor for the subtest; the machine it runs on shares
// this process's file system (in-process server, OpenSSH on loopback,
// local), so the tests check files directly.
func ExecutorSuite(t *testing.T, newExec func(t *testing.T) transport.Executor) {
	ctx := context.Background()
	commandSuite(ctx, t, newExec)
	streamingSuite(ctx, t, newExec)
	fileSuite(ctx, t, newExec)
	fileErrorSuite(ctx, t, newExec)
	lifecycleSuite(ctx, t, newExec)
}

// commandSuite checks output, exit codes and stdin.
func commandSuite(ctx context.Context, t *testing.T, newExec func(t *testing.T) transport.Executor) {

	t.Run("output and exit 0", func(t *testing.T) {
		e := newExec(t)
		var out, errb bytes.Buffer
		res, err := e.Run(ctx, transport.Command{Line: "echo hello; echo to-stderr >&2", Stdout: &out, Stderr: &errb})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if res.ExitCode != 0 || out.String() != "hello\n" || errb.String() != "to-stderr\n" {
			t.Fatalf("got code %d stdout %q stderr %q; want 0, %q, %q", res.ExitCode, out.String(), errb.String(), "hello\n", "to-stderr\n")
		}
		if res.Duration <= 0 {
			t.Errorf("Duration = %v, want > 0", res.Duration)
		}
	})

	t.Run("non-zero exit gives Result and ExitError", func(t *testing.T) {
		e := newExec(t)
		res, err := e.Run(ctx, transport.Command{Line: "echo line1 >&2; echo something broke >&2; exit 3"})
		if res.ExitCode != 3 {
			t.Errorf("ExitCode = %d, want 3", res.ExitCode)
		}
		var xe *transport.ExitError
		if !errors.As(err, &xe) || !errors.Is(err, errspkg.ErrNonZeroExit) {
			t.Fatalf("err = %v (%T), want *ExitError", err, err)
		}
		if xe.Code != 3 || xe.Node != e.Name() || !strings.Contains(xe.StderrTail, "something broke") {
			t.Errorf("ExitError = %+v, want code 3, node %s, tail with the stderr", xe, e.Name())
		}
		if !strings.Contains(err.Error(), e.Name()) || !strings.Contains(err.Error(), "exit 3") {
			t.Errorf("message %q should name the node and the command", err)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		e := newExec(t)
		var out bytes.Buffer
		if _, err := e.Run(ctx, transport.Command{Line: "tr a-z A-Z", Stdin: strings.NewReader("abc\n"), Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() != "ABC\n" {
			t.Fatalf("stdout %q, want %q", out.String(), "ABC\n")
		}
	})

	t.Run("a stdin that never ends does not hold a finished command", func(t *testing.T) {
		e := newExec(t)
		r := BlockingReader{release: make(chan struct{})}
		defer close(r.release)
		done := make(chan error, 1)
		go func() {
			_, err := e.Run(ctx, transport.Command{Line: "echo ignoring stdin", Stdin: r, Timeout: 20 * time.Second})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run waited for stdin after the command exited")
		}
	})
}

// streamingSuite checks output streaming and concurrent commands.
func streamingSuite(ctx context.Context, t *testing.T, newExec func(t *testing.T) transport.Executor) {
	t.Run("output streams before the command ends", func(t *testing.T) {
		// The command prints a line, then waits for stdin, which is only
		// written once the line has arrived: without streaming this
		// deadlocks and the command times out.
		e := newExec(t)
		pr, pw := io.Pipe()
		lines := make(chan string, 4)
		w := LineFunc(func(s string) { lines <- s })
		var res transport.Result
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, err = e.Run(ctx, transport.Command{Line: "echo first; read x; echo second $x", Stdin: pr, Stdout: w, Timeout: 20 * time.Second})
		}()
		select {
		case l := <-lines:
			if l != "first" {
				t.Fatalf("first line %q", l)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no output while the command was still running")
		}
		_, _ = io.WriteString(pw, "go\n")
		pw.Close()
		<-done
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("Run: %v %+v", err, res)
		}
		if l := <-lines; l != "second go" {
			t.Fatalf("second line %q", l)
		}
	})

	t.Run("concurrent commands", func(t *testing.T) {
		e := newExec(t)
		var wg sync.WaitGroup
		errs := make(chan error, 24)
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out bytes.Buffer
				if _, err := e.Run(ctx, transport.Command{Line: "echo " + strconv.Itoa(i), Stdout: &out}); err != nil {
					errs <- err
					return
				}
				if got := strings.TrimSpace(out.String()); got != strconv.Itoa(i) {
					errs <- fmt.Errorf("command %d printed %q", i, got)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// fileSuite checks writes, reads and stats.
func fileSuite(ctx context.Context, t *testing.T, newExec func(t *testing.T) transport.Executor) {
	t.Run("write, read, stat", func(t *testing.T) { fileWriteReadStat(ctx, t, newExec(t)) })
	t.Run("overwrite keeps mode and owner", func(t *testing.T) { fileOverwriteKeepsModeOwner(ctx, t, newExec(t)) })
	t.Run("write through a symlink replaces its target", func(t *testing.T) { fileWriteThroughSymlink(ctx, t, newExec(t)) })
}

// fileWriteReadStat writes a file, reads it back and stats it (and an empty one).
func fileWriteReadStat(ctx context.Context, t *testing.T, e transport.Executor) {
	dir := t.TempDir()
	p := filepath.Join(dir, "new file.txt") // a space needs quoting
	data := []byte("hello\nworld 'quoted' $HOME\n\x00binary\xff")
	if err := e.WriteFile(ctx, p, data, 0o640); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	got, err := e.ReadFile(ctx, p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile = %q, %v; want %q", got, err, data)
	}
	fi, err := e.Stat(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode != 0o640 || fi.Size != int64(len(data)) || fi.IsDir || fi.Path != p || fi.UID != os.Geteuid() {
		t.Errorf("Stat = %+v, want mode 0640, size %d, uid %d", fi, len(data), os.Geteuid())
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode on disk %v", st.Mode())
	}
	di, err := e.Stat(ctx, dir)
	if err != nil || !di.IsDir || !di.Mode.IsDir() {
		t.Errorf("Stat(dir) = %+v, %v; want a directory", di, err)
	}
	empty := filepath.Join(dir, "empty")
	if err := e.WriteFile(ctx, empty, nil, 0o600); err != nil {
		t.Fatalf("WriteFile(empty): %v", err)
	}
	if b, err := e.ReadFile(ctx, empty); err != nil || len(b) != 0 {
		t.Errorf("ReadFile(empty) = %q, %v", b, err)
	}
	AssertNoTempFiles(t, dir)
}

// fileOverwriteKeepsModeOwner overwrites a file whose mode and owner differ from what WriteFile asks: both are kept.
func fileOverwriteKeepsModeOwner(ctx context.Context, t *testing.T, e transport.Executor) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o604); err != nil { // not what WriteFile is asked for
		t.Fatal(err)
	}
	wantUID, wantGID := os.Geteuid(), os.Getegid()
	if os.Geteuid() == 0 {
		wantUID, wantGID = 4242, 4343
		if err := os.Chown(p, wantUID, wantGID); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.WriteFile(ctx, p, []byte("new\n"), 0o644); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	sys := StatT(st)
	if st.Mode().Perm() != 0o604 || int(sys.Uid) != wantUID || int(sys.Gid) != wantGID {
		t.Errorf("after overwrite: mode %v uid %d gid %d; want 0604 %d %d", st.Mode(), sys.Uid, sys.Gid, wantUID, wantGID)
	}
	if b, _ := os.ReadFile(p); string(b) != "new\n" {
		t.Errorf("content %q", b)
	}
	AssertNoTempFiles(t, dir)
}

// fileWriteThroughSymlink writes through a symlink: its target is replaced, the link stays.
func fileWriteThroughSymlink(ctx context.Context, t *testing.T, e transport.Executor) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if err := os.WriteFile(target, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteFile(ctx, link, []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("link replaced by a file: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "b" {
		t.Errorf("target content %q, want b", b)
	}
}

// fileErrorSuite checks file operations that must fail cleanly.
func fileErrorSuite(ctx context.Context, t *testing.T, newExec func(t *testing.T) transport.Executor) {
	t.Run("missing files", func(t *testing.T) {
		e := newExec(t)
		dir := t.TempDir()
		missing := filepath.Join(dir, "nope")
		_, err := e.ReadFile(ctx, missing)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), e.Name()) || !strings.Contains(err.Error(), missing) {
			t.Errorf("ReadFile(missing) = %v; want fs.ErrNotExist naming node and path", err)
		}
		_, err = e.Stat(ctx, missing)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
			t.Errorf("Stat(missing) = %v; want fs.ErrNotExist", err)
		}
		err = e.WriteFile(ctx, filepath.Join(dir, "no-dir", "f"), []byte("x"), 0o600)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("WriteFile(missing dir) = %v; want fs.ErrNotExist", err)
		}
		_, err = e.ReadFile(ctx, dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile(dir) = %v; want an error other than not-exist", err)
		}
	})

	t.Run("write onto a directory fails and changes nothing", func(t *testing.T) {
		e := newExec(t)
		dir := t.TempDir()
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "keep"), []byte("k"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.WriteFile(ctx, sub, []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), "directory") {
			t.Fatalf("WriteFile(dir) = %v; want an error saying it is a directory", err)
		}
		if b, err := os.ReadFile(filepath.Join(sub, "keep")); err != nil || string(b) != "k" {
			t.Errorf("directory content changed: %q %v", b, err)
		}
		AssertNoTempFiles(t, dir)
		AssertNoTempFiles(t, sub)
	})
}

// lifecycleSuite checks dialing, cancellation, timeouts and Close.
func lifecycleSuite(ctx context.Context, t *testing.T, newExec func(t *testing.T) transport.Executor) {
	t.Run("dial from the node", func(t *testing.T) {
		e := newExec(t)
		addr := StartEcho(t)
		c, err := e.Dial(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
	})

	t.Run("cancel kills the command", func(t *testing.T) {
		e := newExec(t)
		pidFile := filepath.Join(t.TempDir(), "pid")
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := e.Run(cctx, transport.Command{Line: "echo $$ > " + transport.ShellQuote(pidFile) + "; exec sleep 60"})
			errc <- err
		}()
		pid := WaitForPID(t, pidFile)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), e.Name()) {
				t.Errorf("Run after cancel = %v; want context.Canceled naming the node", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		WaitProcessGone(t, pid)
	})

	t.Run("command timeout", func(t *testing.T) {
		e := newExec(t)
		res, err := e.Run(ctx, transport.Command{Line: "sleep 30", Timeout: 300 * time.Millisecond})
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not finish within 300ms") {
			t.Errorf("err = %v; want a timeout error", err)
		}
		if res.ExitCode != -1 {
			t.Errorf("ExitCode = %d, want -1", res.ExitCode)
		}
	})

	t.Run("calls after Close fail", func(t *testing.T) {
		e := newExec(t)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Run(ctx, transport.Command{Line: "true"}); err == nil {
			t.Error("Run after Close succeeded")
		}
	})
}

// LineFunc is an io.Writer calling f for every complete line.
type LineFunc func(string)

func (f LineFunc) Write(p []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if l != "" {
			f(strings.TrimSuffix(l, "\n"))
		}
	}
	return len(p), nil
}

// AssertNoTempFiles fails t when dir holds a temporary file an atomic
// write left behind.
func AssertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".caretaker-") {
			t.Errorf("temporary file left behind: %s", filepath.Join(dir, e.Name()))
		}
	}
}

// StartEcho starts a TCP echo server on 127.0.0.1:0.
func StartEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// WaitForPID waits for a command to write its PID to file and returns it.
func WaitForPID(t *testing.T, file string) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("command did not start (no pid in %s)", file)
	return 0
}

// WaitProcessGone waits until pid has exited (gone or a zombie).
func WaitProcessGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		// state is the field after the ")" closing the command name
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("process %d still runs after the call was cancelled", pid)
}

// StatT is the syscall.Stat_t of fi (nil when it has none).
func StatT(fi os.FileInfo) *syscall.Stat_t {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st
	}
	return &syscall.Stat_t{}
}

// BlockingReader never returns from Read until released.
type BlockingReader struct{ release chan struct{} }

func (b BlockingReader) Read(p []byte) (int, error) {
	<-b.release
	return 0, io.EOF
}
