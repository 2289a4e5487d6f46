package transport

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"time"

	"github.com/caretaker/caretaker/runner/errs"
)

// Executor runs commands and moves files on one node. Implementations keep
// one connection per node and reuse it for every call; all methods are safe
// for concurrent use and honour ctx: cancelling ctx ends the remote command
// (the session is closed) and the call returns ctx's error.
type Executor interface {
	// Name is the inventory name of the node, for messages.
	Name() string

	// Run runs a shell command line on the node. Stdout and Stderr of the
	// Command receive the output as it arrives. A command that exits
	// non-zero returns a filled Result and an *ExitError (errors.Is
	// ErrNonZeroExit); a command that could not be started returns a zero
	// Result and an error.
	Run(ctx context.Context, c Command) (Result, error)

	// ReadFile returns the contents of a file on the node. A missing file
	// gives an error for which errors.Is(err, fs.ErrNotExist) holds.
	ReadFile(ctx context.Context, path string) ([]byte, error)

	// WriteFile replaces path atomically: the data goes to a temporary file
	// beside path which is then renamed over it. When path exists its mode
	// and owner are kept; otherwise mode is used. A failed write leaves the
	// old file untouched.
	WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) error

	// Stat describes a file on the node; a missing file gives an error for
	// which errors.Is(err, fs.ErrNotExist) holds.
	Stat(ctx context.Context, path string) (FileInfo, error)

	// Dial opens a TCP connection from the node to addr ("host:port"), for
	// example to etcd on 127.0.0.1:2379 or the supervisor on :6443.
	Dial(ctx context.Context, network, addr string) (net.Conn, error)

	// Close releases the connection. Calls after Close fail.
	Close() error
}

// Command is one command line to run on a node.
type Command struct {
	// Line is handed to the node's shell (sh -c) as it is.
	Line string
	// Sudo runs the line as root through "sudo -n sh -c".
	Sudo bool
	// Stdin, when set, is copied to the command's standard input.
	Stdin io.Reader
	// Stdout and Stderr, when set, receive the output as it arrives.
	Stdout, Stderr io.Writer
	// Timeout bounds the command; zero means the executor's default.
	Timeout time.Duration
}

// Result describes a finished command.
type Result struct {
	ExitCode int
	Duration time.Duration
}

// FileInfo is what Stat reports about a file on a node.
type FileInfo struct {
	Path    string
	Size    int64
	Mode    fs.FileMode
	ModTime time.Time
	IsDir   bool
	UID     int
	GID     int
}

// ExitError reports a command that exited non-zero.
type ExitError struct {
	Node       string
	Line       string
	Code       int
	StderrTail string // the last lines of stderr, for messages
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: command %q exited with code %d", e.Node, ShortLine(e.Line, 80), e.Code)
	if e.StderrTail != "" {
		msg += ": " + e.StderrTail
	}
	return msg
}

// Is makes errors.Is(err, ErrNonZeroExit) true for an *ExitError.
func (e *ExitError) Is(target error) bool { return target == errs.ErrNonZeroExit }

// ShortLine is s cut to n bytes with "..." when longer, for messages.
func ShortLine(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '/' || r == ':' || r == '=' || r == '+' || r == ',' || r == '@') {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'', '\\', '\'', '\'')
		} else {
			out = append(out, s[i])
		}
	}
	return string(append(out, '\''))
}
