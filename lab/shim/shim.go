package shim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Commands are the node commands the shim stands in for.
var Commands = []string{"k3s", "systemctl", "journalctl"}

// Environment variables that name the node and the lab socket. The lab sets
// them in every SSH session of a node (inprocess mode: session environment;
// openssh mode: SetEnv in that node's sshd_config).
const (
	EnvNode = "LAB_NODE"
	EnvSock = "LAB_SOCK"
)

// SocketName is the name of the lab's unix socket inside the lab directory.
const SocketName = "lab.sock"

// Run acts as a lab node command when args asks for one: the basename of
// args[0] is k3s, systemctl or journalctl, or args[1] is "lab-shim" (then
// args[2] names the command). It returns the exit code and handled=true; for
// any other args it returns handled=false and does nothing.
//
// args[1] == "lab-nsinit" runs the openssh-mode node init (chroot into the
// node's tree, then exec of sshd); it does not return on success.
// args[1] == "lab-keeper" runs the lab's mount keeper (see keeper).
func Run(args []string) (exitCode int, handled bool) {
	if len(args) == 0 {
		return 0, false
	}
	argv := args
	base := filepath.Base(args[0])
	if !isCommand(base) {
		if len(args) < 2 {
			return 0, false
		}
		switch args[1] {
		case "lab-shim":
			if len(args) < 3 || !isCommand(args[2]) {
				fmt.Fprintf(os.Stderr, "lab-shim: want one of %s\n", strings.Join(Commands, ", "))
				return 2, true
			}
			argv = args[2:]
			base = args[2]
		case "lab-nsinit":
			return nsInit(args[2:]), true
		case "lab-keeper":
			return keeper(), true
		default:
			return 0, false
		}
	}
	argv = append([]string{base}, argv[1:]...)
	node, sock, err := identity(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", base, err)
		return 1, true
	}
	cwd, _ := os.Getwd()
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "K3S_") || k == "HOME" {
			env[k] = v
		}
	}
	req := Request{Op: OpExec, Node: node, Argv: argv, Cwd: cwd, Env: env}
	code, err := Call(sock, req, os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: lab daemon: %v\n", base, err)
		return 1, true
	}
	return code, true
}

func isCommand(s string) bool {
	for _, c := range Commands {
		if s == c {
			return true
		}
	}
	return false
}

// identity finds the node and the lab socket: from LAB_NODE/LAB_SOCK, else
// from the node's /run/caretaker-lab (inside a node: sudo clears the
// environment), else from where the command lives (DIR/<node>/bin/<cmd> →
// node, DIR/lab.sock).
func identity(arg0 string) (node, sock string, err error) {
	node, sock = os.Getenv(EnvNode), os.Getenv(EnvSock)
	if node != "" && sock != "" {
		return node, sock, nil
	}
	if b, err := os.ReadFile(NodeNameFile); err == nil {
		if _, err := os.Stat(NodeSocket); err == nil {
			if node == "" {
				node = strings.TrimSpace(string(b))
			}
			if sock == "" {
				sock = NodeSocket
			}
			return node, sock, nil
		}
	}
	p := arg0
	if !strings.Contains(p, "/") {
		if lp, err := exec.LookPath(p); err == nil {
			p = lp
		}
	}
	if abs, err := filepath.Abs(p); err == nil {
		binDir := filepath.Dir(abs)
		if filepath.Base(binDir) == "bin" {
			nodeDir := filepath.Dir(binDir)
			labDir := filepath.Dir(nodeDir)
			cand := filepath.Join(labDir, SocketName)
			if _, err := os.Stat(cand); err == nil {
				if node == "" {
					node = filepath.Base(nodeDir)
				}
				if sock == "" {
					sock = cand
				}
			}
		}
	}
	if node == "" || sock == "" {
		return "", "", fmt.Errorf("not on a lab node (%s and %s are not set); run it through the lab's SSH", EnvNode, EnvSock)
	}
	return node, sock, nil
}

// Call sends req to the daemon at sock, streams stdin to it (when not nil)
// and copies its output to stdout and stderr. It returns the exit code the
// daemon reports.
func Call(sock string, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	conn, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		return 1, fmt.Errorf("connect %s: %w (is the lab running? see caretaker lab status)", sock, err)
	}
	defer conn.Close()
	var wmu sync.Mutex
	if err := WriteRequest(conn, req); err != nil {
		return 1, fmt.Errorf("send request to %s: %w", sock, err)
	}
	if stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, rerr := stdin.Read(buf)
				if n > 0 {
					wmu.Lock()
					werr := WriteFrame(conn, FrameStdin, buf[:n])
					wmu.Unlock()
					if werr != nil {
						return
					}
				}
				if rerr != nil {
					wmu.Lock()
					_ = WriteFrame(conn, FrameStdinEOF, nil)
					wmu.Unlock()
					return
				}
			}
		}()
	}
	for {
		kind, payload, err := ReadFrame(conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 1, fmt.Errorf("the lab daemon at %s closed the connection without an exit code", sock)
			}
			return 1, fmt.Errorf("read from %s: %w", sock, err)
		}
		switch kind {
		case FrameStdout:
			if stdout != nil {
				_, _ = stdout.Write(payload)
			}
		case FrameStderr:
			if stderr != nil {
				_, _ = stderr.Write(payload)
			}
		case FrameExit:
			if len(payload) != 4 {
				return 1, errors.New("lab socket: bad exit frame")
			}
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		}
	}
}
