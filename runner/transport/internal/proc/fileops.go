package proc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner/transport"
)

// This file holds what the executors share: the shell snippets behind
// ReadFile, WriteFile and Stat on a remote node, sudo wrapping, and the small
// writers that collect a stderr tail and stop output after a call returned.

// ExitNotExist is the exit code the file snippets use for "no such file".
// Neither sh, cat, stat nor sudo -n exit with it.
const ExitNotExist = 66

// SudoLine wraps line to run as root through non-interactive sudo.
func SudoLine(line string) string {
	return "sudo -n sh -c " + transport.ShellQuote(line)
}

// ReadFileScript prints path on stdout, or exits exitNotExist when it does
// not exist.
func ReadFileScript(path string) string {
	q := transport.ShellQuote(path)
	return "[ -e " + q + " ] || { echo " + transport.ShellQuote("no such file: "+path) + " >&2; exit " +
		strconv.Itoa(ExitNotExist) + "; }; exec cat -- " + q
}

// statFormat is the stat(1) format of statScript: size, raw mode in hex,
// mtime in seconds, uid, gid. Both GNU coreutils and busybox understand it.
const statFormat = "%s %f %Y %u %g"

// StatScript describes path (following symlinks) in statFormat, or exits
// ExitNotExist when it does not exist.
func StatScript(path string) string {
	q := transport.ShellQuote(path)
	return "[ -e " + q + " ] || { echo " + transport.ShellQuote("no such file: "+path) + " >&2; exit " +
		strconv.Itoa(ExitNotExist) + "; }; exec stat -L -c '" + statFormat + "' -- " + q
}

// ParseStat reads one line of statFormat output.
func ParseStat(path, out string) (transport.FileInfo, error) {
	f := strings.Fields(out)
	if len(f) != 5 {
		return transport.FileInfo{}, fmt.Errorf("stat %s: unexpected output %q (want 5 fields: %s)", path, transport.ShortLine(out, 120), statFormat)
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	raw, err2 := strconv.ParseUint(f[1], 16, 32)
	mtime, err3 := strconv.ParseInt(f[2], 10, 64)
	uid, err4 := strconv.Atoi(f[3])
	gid, err5 := strconv.Atoi(f[4])
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return transport.FileInfo{}, fmt.Errorf("stat %s: unexpected output %q: %w", path, transport.ShortLine(out, 120), err)
	}
	mode := unixMode(uint32(raw))
	return transport.FileInfo{
		Path:    path,
		Size:    size,
		Mode:    mode,
		ModTime: time.Unix(mtime, 0),
		IsDir:   mode.IsDir(),
		UID:     uid,
		GID:     gid,
	}, nil
}

// unixMode converts a raw st_mode to an fs.FileMode.
func unixMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		mode |= fs.ModeDir
	case 0o120000:
		mode |= fs.ModeSymlink
	case 0o010000:
		mode |= fs.ModeNamedPipe
	case 0o140000:
		mode |= fs.ModeSocket
	case 0o020000:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case 0o060000:
		mode |= fs.ModeDevice
	}
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// unixPerm is the chmod(1) octal for mode, special bits included.
func unixPerm(mode fs.FileMode) string {
	m := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return strconv.FormatUint(uint64(m), 8)
}

// TempSuffix returns the random part of a temporary file name.
func TempSuffix() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TempName is the temporary file WriteFile uses beside path.
func TempName(path, suffix string) string {
	dir, base := splitPath(path)
	if dir == "/" {
		return "/." + base + ".caretaker-" + suffix
	}
	return dir + "/." + base + ".caretaker-" + suffix
}

// splitPath splits a slash path into directory and base name.
func splitPath(path string) (dir, base string) {
	i := strings.LastIndexByte(path, '/')
	switch {
	case i < 0:
		return ".", path
	case i == 0:
		return "/", path[1:]
	default:
		return path[:i], path[i+1:]
	}
}

// WriteFileScript replaces path atomically with the size bytes arriving on
// stdin. A symlink is written through (its target is replaced). The data
// goes to a temporary file beside the target, created with umask 077 so it
// is never readable by others while incomplete; its size is checked (a
// dropped connection delivers EOF early), it gets the mode and owner of
// the existing file (or mode), is synced and renamed over the target. On any
// failure the temporary file is removed and the target left as it was.
// Exit exitNotExist means the directory does not exist.
func WriteFileScript(path string, size int, mode fs.FileMode, suffix string) string {
	var b strings.Builder
	b.WriteString("p=" + transport.ShellQuote(path) + "; n=" + strconv.Itoa(size) + "\n")
	b.WriteString(`if [ -L "$p" ]; then p=$(readlink -f -- "$p") || exit 1; fi
case $p in */*) d=${p%/*}; b=${p##*/} ;; *) d=.; b=$p ;; esac
[ -n "$d" ] || d=/
if [ ! -d "$d" ]; then echo "directory $d does not exist" >&2; exit ` + strconv.Itoa(ExitNotExist) + `; fi
if [ -d "$p" ]; then echo "$p is a directory" >&2; exit 1; fi
t=$d/.$b.caretaker-` + suffix + `
trap 'rm -f -- "$t"' EXIT
trap 'exit 1' HUP INT TERM PIPE
umask 077
set -C
cat > "$t" || exit 1
set +C
if [ -e "$p" ]; then
  s=$(stat -c '%s %u %g %a' -- "$t" "$p") || exit 1
  set -- $s
  [ "$1" = "$n" ] || { echo "short write: $1 of $n bytes arrived" >&2; exit 1; }
  if [ "$2:$3" != "$6:$7" ]; then chown -- "$6:$7" "$t" || exit 1; fi
  chmod -- "$8" "$t" || exit 1
else
  s=$(stat -c '%s' -- "$t") || exit 1
  [ "$s" = "$n" ] || { echo "short write: $s of $n bytes arrived" >&2; exit 1; }
  chmod -- ` + unixPerm(mode) + ` "$t" || exit 1
fi
sync -- "$t" 2>/dev/null
mv -f -- "$t" "$p" || exit 1
trap - EXIT
`)
	return b.String()
}

// TailBuffer keeps the last bytes written to it, for error messages.
type TailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailKeep = 4096

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) >= tailKeep {
		t.buf = append(t.buf[:0], p[len(p)-tailKeep:]...)
		return len(p), nil
	}
	if len(t.buf)+len(p) > tailKeep {
		drop := len(t.buf) + len(p) - tailKeep
		t.buf = append(t.buf[:0], t.buf[drop:]...)
	}
	t.buf = append(t.buf, p...)
	return len(p), nil
}

// tailLines is how many lines of stderr an ExitError carries.
const tailLines = 5

// String returns the last non-empty lines, trimmed.
func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	out := make([]string, 0, tailLines)
	for i := len(lines) - 1; i >= 0 && len(out) < tailLines; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			out = append(out, l)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return strings.Join(out, "\n")
}

// GateWriter forwards to w until closed; afterwards, and after w failed
// once, writes are dropped (and reported as written so the command's output
// keeps draining). It keeps a caller's writer from being used after the
// call that received it returned.
type GateWriter struct {
	mu     sync.Mutex
	w      io.Writer
	tail   *TailBuffer
	closed bool
	err    error
}

// NewGate returns a GateWriter forwarding to w and keeping the tail in tail.
func NewGate(w io.Writer, tail *TailBuffer) *GateWriter {
	return &GateWriter{w: w, tail: tail}
}

func (g *GateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return len(p), nil
	}
	if g.tail != nil {
		_, _ = g.tail.Write(p)
	}
	if g.w != nil && g.err == nil {
		if _, err := g.w.Write(p); err != nil {
			g.err = err
		}
	}
	return len(p), nil
}

// ReadFrom copies r through Write with a pooled buffer, so that the copy
// goroutines of a session do not allocate 32 KiB per command.
func (g *GateWriter) ReadFrom(r io.Reader) (int64, error) { return PooledCopy(g, r) }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// PooledCopy is io.Copy with a buffer from copyBufs; w must not implement
// io.ReaderFrom by calling pooledCopy's caller again.
func PooledCopy(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			wk, werr := w.Write(buf[:k])
			n += int64(wk)
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Close stops forwarding and returns the first error of the writer.
func (g *GateWriter) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return g.err
}

// NewExitError builds the error of a command that exited non-zero, adding
// advice when sudo was the reason.
func NewExitError(node, user, line string, code int, tail string, sudo bool) error {
	xe := &transport.ExitError{Node: node, Line: line, Code: code, StderrTail: tail}
	if !sudo {
		return xe
	}
	switch {
	case strings.Contains(tail, "a password is required") || strings.Contains(tail, "a terminal is required") ||
		strings.Contains(tail, "askpass"):
		return fmt.Errorf("%w; sudo wants a password but caretaker runs sudo -n (non-interactive): allow passwordless sudo for user %s on %s (NOPASSWD in sudoers) or connect as root", xe, user, node)
	case code == 127 && strings.Contains(tail, "sudo"):
		return fmt.Errorf("%w; sudo is not installed on %s: install it, or connect as root and set sudo: false", xe, node)
	case strings.Contains(tail, "is not in the sudoers file") || strings.Contains(tail, "is not allowed to execute"):
		return fmt.Errorf("%w; user %s may not use sudo on %s: grant it in sudoers or connect as root", xe, user, node)
	}
	return xe
}

// NewTimeoutError reports a command that ran past its timeout.
func NewTimeoutError(node, line string, d time.Duration, cause error) error {
	return fmt.Errorf("%s: command %q did not finish within %s and was killed (raise command_timeout or the call's timeout): %w",
		node, transport.ShortLine(line, 80), d, cause)
}

// Defaults shared by the transports.
const (
	// DefaultCommandTimeout bounds a command when the inventory sets no
	// command_timeout.
	DefaultCommandTimeout = 10 * time.Minute
	// KillGrace is how long a cancelled call waits for the command to wind
	// down before it returns anyway.
	KillGrace = 2 * time.Second
)

// LocalUser is the name of the user caretaker runs as.
func LocalUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}
