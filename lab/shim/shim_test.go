package shim

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	req := Request{Op: OpExec, Node: "server-1", Argv: []string{"k3s", "--version"}, Cwd: "/root", Env: map[string]string{"K3S_URL": "https://x:6443"}}
	if err := WriteRequest(&buf, req); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, FrameExit, ExitPayload(-3)); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(&buf)
	if err != nil || got.Node != "server-1" || strings.Join(got.Argv, " ") != "k3s --version" || got.Env["K3S_URL"] != "https://x:6443" {
		t.Fatalf("request = %+v, %v", got, err)
	}
	kind, payload, err := ReadFrame(&buf)
	if err != nil || kind != FrameExit || !bytes.Equal(payload, ExitPayload(-3)) {
		t.Fatalf("exit frame = %c %v %v", kind, payload, err)
	}
	if _, err := ReadRequest(bytes.NewReader([]byte{FrameStdout, 0, 0, 0, 0})); err == nil {
		t.Fatal("a connection not starting with a request was accepted")
	}
}

func TestRunIgnoresOtherCommands(t *testing.T) {
	for _, args := range [][]string{{"caretaker", "run", "x"}, {"/usr/bin/caretaker"}, {}} {
		if _, handled := Run(args); handled {
			t.Errorf("Run(%q) handled", args)
		}
	}
}

// Call relays stdout, stderr and the exit code of a daemon; the node and
// socket are found from the command's location when the environment does
// not name them.
func TestCallAndIdentityFromPath(t *testing.T) {
	dir, err := os.MkdirTemp("", "shim")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, _ := ReadRequest(c)
			_ = WriteFrame(c, FrameStdout, []byte(req.Node+" "+strings.Join(req.Argv, " ")))
			_ = WriteFrame(c, FrameStderr, []byte("warn"))
			_ = WriteFrame(c, FrameExit, ExitPayload(7))
			c.Close()
		}
	}()
	bin := filepath.Join(dir, "agent-2", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvNode, "")
	t.Setenv(EnvSock, "")
	node, s, err := identity(filepath.Join(bin, "k3s"))
	if err != nil || node != "agent-2" || s != sock {
		t.Fatalf("identity = %q %q %v", node, s, err)
	}
	var out, errb bytes.Buffer
	code, err := Call(sock, Request{Op: OpExec, Node: node, Argv: []string{"systemctl", "status"}}, nil, &out, &errb)
	if err != nil || code != 7 || out.String() != "agent-2 systemctl status" || errb.String() != "warn" {
		t.Fatalf("Call = %d %v %q %q", code, err, out.String(), errb.String())
	}
	if _, _, err := identity("/usr/bin/k3s"); err == nil {
		t.Fatal("identity outside a lab succeeded")
	}
}
