package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/sshserver"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/internal/proc"
	"github.com/caretaker/caretaker/runner/transport/local"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

func dialTest(t testing.TB, n *inventory.Node) transport.Executor {
	t.Helper()
	e, err := Dial(context.Background(), n)
	if err != nil {
		t.Fatalf("DialSSH: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestSSHExecutor(t *testing.T) {
	transporttest.ExecutorSuite(t, func(t *testing.T) transport.Executor {
		n, _ := transporttest.StartNode(t, "server-1")
		return dialTest(t, n)
	})
}

func TestSSHOneConnectionReused(t *testing.T) {
	n, srv := transporttest.StartNode(t, "server-1")
	e := dialTest(t, n)
	ctx := context.Background()
	for i := range 50 {
		var out bytes.Buffer
		if _, err := e.Run(ctx, transport.Command{Line: "echo " + strconv.Itoa(i), Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() != strconv.Itoa(i)+"\n" {
			t.Fatalf("command %d printed %q", i, out.String())
		}
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := e.WriteFile(ctx, p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReadFile(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := srv.Connections(); got != 1 {
		t.Errorf("server saw %d connections, want 1", got)
	}
	if got := srv.Sessions(); got != 52 {
		t.Errorf("server saw %d sessions, want 52", got)
	}
	if s := e.(fmt.Stringer).String(); s != "server-1 ("+srv.Addr()+")" {
		t.Errorf("String() = %q", s)
	}
}

// fakeSudo writes a sudo script into a new bin dir: it records its
// arguments (one per line) into log, then runs them without "-n".
func fakeSudo(t *testing.T, log string) string {
	t.Helper()
	bin := t.TempDir()
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >> " + transport.ShellQuote(log) + "\n[ \"$1\" = -n ] || { echo 'sudo: -n missing' >&2; exit 90; }\nshift\nexec \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "sudo"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestSSHSudo(t *testing.T) {
	log := filepath.Join(t.TempDir(), "sudo.log")
	bin := fakeSudo(t, log)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) {
		c.Env = []string{"PATH=" + bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	})
	ctx := context.Background()

	t.Run("Command.Sudo", func(t *testing.T) {
		os.Remove(log)
		e := dialTest(t, transporttest.NodeFor(t, "n1", srv))
		var out bytes.Buffer
		if _, err := e.Run(ctx, transport.Command{Line: "echo \"it's\" \"$0\"", Sudo: true, Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() != "it's sh\n" {
			t.Errorf("output %q", out.String())
		}
		b, _ := os.ReadFile(log)
		if want := "-n\nsh\n-c\necho \"it's\" \"$0\"\n"; string(b) != want {
			t.Errorf("sudo got args %q, want %q", b, want)
		}
		os.Remove(log)
		if _, err := e.Run(ctx, transport.Command{Line: "true"}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(log); err == nil {
			t.Error("sudo used for a command without Sudo")
		}
	})

	t.Run("node sudo applies to file operations", func(t *testing.T) {
		os.Remove(log)
		n := transporttest.NodeFor(t, "n2", srv)
		n.Sudo = true
		e := dialTest(t, n)
		p := filepath.Join(t.TempDir(), "f")
		if err := e.WriteFile(ctx, p, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := e.ReadFile(ctx, p); err != nil || string(b) != "data" {
			t.Fatalf("ReadFile = %q, %v", b, err)
		}
		if _, err := e.Stat(ctx, p); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(log)
		if c := strings.Count(string(b), "-n\nsh\n-c\n"); c != 3 {
			t.Errorf("sudo called %d times for write, read, stat; want 3; log:\n%s", c, b)
		}
	})

	t.Run("root login needs no sudo", func(t *testing.T) {
		os.Remove(log)
		n := transporttest.NodeFor(t, "n3", srv)
		n.User = "root"
		n.Sudo = true
		e := dialTest(t, n)
		if _, err := e.Run(ctx, transport.Command{Line: "true", Sudo: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(log); err == nil {
			t.Error("sudo used although the login user is root")
		}
	})
}

func TestSSHSudoPasswordPrompt(t *testing.T) {
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"), 0o755)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} })
	n := transporttest.NodeFor(t, "server-2", srv)
	n.Sudo = true
	e := dialTest(t, n)
	_, err := e.Run(context.Background(), transport.Command{Line: "systemctl restart k3s"})
	var xe *transport.ExitError
	if !errors.As(err, &xe) || xe.Code != 1 {
		t.Fatalf("err = %v; want an ExitError with code 1", err)
	}
	for _, want := range []string{"server-2", "a password is required", "passwordless sudo", "caretaker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = e.ReadFile(context.Background(), "/etc/hostname")
	if err == nil || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "passwordless sudo") {
		t.Errorf("ReadFile through a password-asking sudo = %v", err)
	}
}

func TestSSHWriteFailureLeavesOriginal(t *testing.T) {
	// mv fails on this node: the temporary file must go and the original
	// must stay as it was.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "mv"), []byte("#!/bin/sh\necho 'mv: simulated failure' >&2\nexit 1\n"), 0o755)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} })
	e := dialTest(t, transporttest.NodeFor(t, "server-1", srv))
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("original\n"), 0o640)
	err := e.WriteFile(context.Background(), p, []byte("replacement\n"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "simulated failure") || !strings.Contains(err.Error(), p) {
		t.Fatalf("WriteFile = %v; want the mv failure, naming the path", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "original\n" {
		t.Errorf("original changed to %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("original mode changed to %v", st.Mode())
	}
	transporttest.AssertNoTempFiles(t, dir)
}

func TestSSHWriteCancelledRemovesTemp(t *testing.T) {
	// cat stalls on this node, so the write is cancelled while the
	// temporary file exists; it must be gone afterwards.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "cat"), []byte("#!/bin/sh\n/bin/cat >/dev/null\nexec sleep 60\n"), 0o755)
	srv := transporttest.StartServer(t, func(c *sshserver.Config) { c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} })
	e := dialTest(t, transporttest.NodeFor(t, "server-1", srv))
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("original"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.WriteFile(ctx, p, []byte("new"), 0o600) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteFile = %v; want context.Canceled", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "original" {
		t.Errorf("original changed to %q", b)
	}
	transporttest.AssertNoTempFiles(t, dir)
}

func TestSSHOutputWriterErrorDoesNotBreakTheCommand(t *testing.T) {
	n, _ := transporttest.StartNode(t, "server-1")
	e := dialTest(t, n)
	p := filepath.Join(t.TempDir(), "after")
	_, err := e.Run(context.Background(), transport.Command{Line: "seq 1 20000; touch " + transport.ShellQuote(p), Stdout: failingWriter{}})
	if err == nil || !strings.Contains(err.Error(), "write its output") {
		t.Errorf("err = %v; want the writer's error", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("the command did not run to its end: %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteFileScriptQuoting(t *testing.T) {
	// The script for a hostile path still targets exactly that path.
	e := local.New("local")
	dir := t.TempDir()
	p := filepath.Join(dir, "a b'c$(touch x)\"d")
	var stderr bytes.Buffer
	_, err := e.Run(context.Background(), transport.Command{Line: proc.WriteFileScript(p, 3, 0o600, "abc"), Stdin: strings.NewReader("xyz"), Stderr: &stderr})
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "xyz" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir has %d entries, want 1", len(ents))
	}
	// A short write (the connection dropped) never replaces the file.
	_, err = e.Run(context.Background(), transport.Command{Line: proc.WriteFileScript(p, 10, 0o600, "abd"), Stdin: strings.NewReader("short")})
	if err == nil {
		t.Fatal("short write succeeded")
	}
	if b, _ := os.ReadFile(p); string(b) != "xyz" {
		t.Errorf("file replaced by a short write: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary file left after a short write")
	}
}
