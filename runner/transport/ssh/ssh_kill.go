package ssh

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/transport/internal/proc"
)

// Killing a cancelled remote command.
//
// The executor first sends the "signal" channel request and closes the
// session. That is enough for the in-process server and for OpenSSH when
// the login user is not root, but OpenSSH ignores signal requests of root
// logins (they are not privilege separated: "session signalling requires
// privilege separation"), and closing the channel does not stop the
// command either. So every command line starts by printing its shell's
// PID on stderr behind a marker, which the executor strips from the
// output; if the session has not ended shortly after the signal, the
// executor kills that PID's process group (sshd makes every session's
// shell a session and group leader) from a second session.

// pidMarker starts the line with the remote shell's PID on stderr.
const pidMarker = "\x1ecaretaker-pid "

// pidPrefix is put before every remote command line.
const pidPrefix = "printf '\\036caretaker-pid %s\\n' \"$$\" >&2\n"

// killCheck is how long a cancelled command may take to end after the
// signal before its process group is killed from a second session.
const killCheck = 250 * time.Millisecond

// pidFilter takes the PID line off the front of stderr and passes the rest
// on. Write is called from one goroutine; pid may be read from any.
type pidFilter struct {
	w       io.Writer
	passing bool
	buf     []byte
	pid     atomic.Int64
}

func (f *pidFilter) Write(p []byte) (int, error) {
	if f.passing {
		return f.w.Write(p)
	}
	f.buf = append(f.buf, p...)
	marker := []byte(pidMarker)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 && bytes.HasPrefix(f.buf, marker) {
		if pid, err := strconv.ParseInt(string(f.buf[len(marker):i]), 10, 64); err == nil && pid > 1 {
			f.pid.Store(pid)
		}
		rest := f.buf[i+1:]
		f.passing, f.buf = true, nil
		if len(rest) > 0 {
			f.w.Write(rest)
		}
		return len(p), nil
	}
	if len(f.buf) < len(marker) && bytes.HasPrefix(marker, f.buf) {
		return len(p), nil // maybe the marker, not complete yet
	}
	if bytes.HasPrefix(f.buf, marker) && len(f.buf) < len(marker)+24 {
		return len(p), nil // the marker, waiting for the end of the line
	}
	f.flush()
	return len(p), nil
}

// ReadFrom avoids io.Copy's per-call buffer; see pooledCopy.
func (f *pidFilter) ReadFrom(r io.Reader) (int64, error) { return proc.PooledCopy(f, r) }

// flush passes on what was held back; called when the command is done.
func (f *pidFilter) flush() {
	f.passing = true
	if len(f.buf) > 0 {
		f.w.Write(f.buf)
		f.buf = nil
	}
}

// killRemote kills the process group of pid on the node from a new
// session, through sudo when the command ran through sudo. Best effort,
// bounded in time.
func (e *sshExecutor) killRemote(c *sshConn, pid int64, sudo bool) {
	p := strconv.FormatInt(pid, 10)
	line := "kill -s KILL -- -" + p + " 2>/dev/null || kill -s KILL " + p
	if sudo {
		line = proc.SudoLine(line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.openSession(ctx, c)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Run(line) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// killOnCancel ends a command whose context ended: SIGKILL through the
// session, then, if the command is still running after killCheck, a kill
// of its remote PID (as reported on stderr); it waits for the session up
// to proc.KillGrace.
func (e *sshExecutor) killOnCancel(sess *ssh.Session, conn *sshConn, pids *pidFilter, done <-chan error, sudo bool) {
	sess.Signal(ssh.SIGKILL)
	check := time.NewTimer(killCheck)
	select {
	case <-done:
		check.Stop()
	case <-check.C:
		finished := false
		pid := pids.pid.Load()
		for wait := time.Now().Add(proc.KillGrace); pid == 0 && !finished && time.Now().Before(wait); pid = pids.pid.Load() {
			select {
			case <-done:
				finished = true
			case <-time.After(20 * time.Millisecond):
			}
		}
		if pid > 0 && !finished {
			e.killRemote(conn, pid, sudo)
		}
		sess.Close()
		if !finished {
			select {
			case <-done:
			case <-time.After(proc.KillGrace):
			}
		}
	}
}
