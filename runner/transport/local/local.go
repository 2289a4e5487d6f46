package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/internal/proc"
)

// localExecutor runs commands on this machine. Commands go through
// `/bin/sh -c` in their own process group (a cancelled command is killed
// with everything it started); file operations are done in Go with the
// same semantics as on a remote node, without spawning helpers.
type localExecutor struct {
	name   string
	closed atomic.Bool
}

// New returns an Executor for this machine, named name in
// messages. Command.Sudo runs the line through `sudo -n sh -c` unless the
// process already runs as root.
func New(name string) transport.Executor {
	return &localExecutor{name: name}
}

// Name returns the name given to NewLocalExecutor.
func (l *localExecutor) Name() string { return l.name }

// String returns "name (local)".
func (l *localExecutor) String() string { return l.name + " (local)" }

func (l *localExecutor) check() error {
	if l.closed.Load() {
		return fmt.Errorf("node %s: the executor is closed", l.name)
	}
	return nil
}

// Run runs c.Line with /bin/sh; see Executor. Commands without a timeout
// get the SSH default of 10 minutes.
func (l *localExecutor) Run(ctx context.Context, c transport.Command) (transport.Result, error) {
	if err := l.check(); err != nil {
		return transport.Result{}, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = proc.DefaultCommandTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	sudo := c.Sudo && os.Geteuid() != 0
	line := c.Line
	if sudo {
		line = proc.SudoLine(line)
	}
	tail := &proc.TailBuffer{}
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var outGate *proc.GateWriter
	if c.Stdout != nil {
		outGate = proc.NewGate(c.Stdout, nil)
		cmd.Stdout = outGate
	}
	errGate := proc.NewGate(c.Stderr, tail)
	cmd.Stderr = errGate
	var stdin io.WriteCloser
	if c.Stdin != nil {
		// Our own copy: exec's Wait would wait for a reader that never
		// ends even after the command exited.
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return transport.Result{}, fmt.Errorf("node %s: command %q: stdin: %w", l.name, transport.ShortLine(c.Line, 80), err)
		}
	}
	closeGates := func() error {
		errGate.Close()
		if outGate != nil {
			return outGate.Close()
		}
		return nil
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		if stdin != nil {
			stdin.Close()
		}
		return transport.Result{}, fmt.Errorf("node %s: start command %q: %w", l.name, transport.ShortLine(c.Line, 80), err)
	}
	if stdin != nil {
		go func() {
			_, _ = proc.PooledCopy(stdin, c.Stdin) // a command that exits early closes its stdin
			stdin.Close()
		}()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(proc.KillGrace):
		}
		closeGates()
		res := transport.Result{ExitCode: -1, Duration: time.Since(start)}
		if perr := parent.Err(); perr != nil {
			return res, fmt.Errorf("node %s: command %q: %w", l.name, transport.ShortLine(c.Line, 80), perr)
		}
		return res, proc.NewTimeoutError(l.name, c.Line, timeout, ctx.Err())
	}
	res := transport.Result{Duration: time.Since(start)}
	outErr := closeGates()
	var ee *exec.ExitError
	switch {
	case werr == nil:
		if outErr != nil {
			return res, fmt.Errorf("node %s: command %q: write its output: %w", l.name, transport.ShortLine(c.Line, 80), outErr)
		}
		return res, nil
	case errors.As(werr, &ee):
		res.ExitCode = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.ExitCode = 128 + int(ws.Signal())
		}
		return res, proc.NewExitError(l.name, proc.LocalUser(), c.Line, res.ExitCode, tail.String(), sudo)
	default:
		res.ExitCode = -1
		return res, fmt.Errorf("node %s: command %q: %w", l.name, transport.ShortLine(c.Line, 80), werr)
	}
}

// ReadFile reads path.
func (l *localExecutor) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node %s: read %s: %w", l.name, path, unwrapPathError(err))
	}
	return b, nil
}

// unwrapPathError drops the *fs.PathError layer whose text repeats the
// path; errors.Is keeps working on the cause (fs.ErrNotExist etc.).
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// WriteFile replaces path atomically with the same rules as on a remote
// node: a symlink is written through, the temporary file beside the target
// is created 0600, gets the existing file's owner and mode (or mode), is
// synced and renamed over the target; on failure it is removed.
func (l *localExecutor) WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) (err error) {
	if err := l.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fail := func(err error) error {
		return fmt.Errorf("node %s: write %s: %w", l.name, path, err)
	}
	target := path
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if target, err = filepath.EvalSymlinks(path); err != nil {
			return fail(unwrapPathError(err))
		}
	}
	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fail(fmt.Errorf("directory %s does not exist: %w", dir, fs.ErrNotExist))
	}
	old, statErr := os.Stat(target)
	if statErr == nil && old.IsDir() {
		return fail(fmt.Errorf("%s is a directory", target))
	}
	f, err := os.CreateTemp(dir, "."+base+".caretaker-*")
	if err != nil {
		return fail(err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if statErr == nil {
		if st, ok := old.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid()) {
			if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
				return fail(err)
			}
		}
		mode = old.Mode()
	}
	if err := f.Chmod(mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return fail(err)
	}
	return nil
}

// Stat describes path, following symlinks.
func (l *localExecutor) Stat(ctx context.Context, path string) (transport.FileInfo, error) {
	if err := l.check(); err != nil {
		return transport.FileInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return transport.FileInfo{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return transport.FileInfo{}, fmt.Errorf("node %s: stat %s: %w", l.name, path, unwrapPathError(err))
	}
	out := transport.FileInfo{Path: path, Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime(), IsDir: fi.IsDir()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		out.UID, out.GID = int(st.Uid), int(st.Gid)
	}
	return out, nil
}

// Dial connects from this machine.
func (l *localExecutor) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("node %s: dial %s: %w", l.name, addr, err)
	}
	return c, nil
}

// Close marks the executor closed; later calls fail.
func (l *localExecutor) Close() error {
	l.closed.Store(true)
	return nil
}
