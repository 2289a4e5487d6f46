package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

func TestLocalExecutor(t *testing.T) {
	transporttest.ExecutorSuite(t, func(t *testing.T) transport.Executor {
		e := New("local-1")
		t.Cleanup(func() { e.Close() })
		return e
	})
}

func TestLocalExecutorSudo(t *testing.T) {
	if os.Geteuid() == 0 {
		// As root the line runs directly: a failing sudo on PATH must not
		// be called.
		bin := t.TempDir()
		os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/sh\necho sudo was called >&2\nexit 99\n"), 0o755)
		t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
		e := New("local-1")
		var out strings.Builder
		if _, err := e.Run(context.Background(), transport.Command{Line: "id -u", Sudo: true, Stdout: &out}); err != nil {
			t.Fatalf("sudo as root: %v", err)
		}
		if strings.TrimSpace(out.String()) != "0" {
			t.Fatalf("id -u = %q", out.String())
		}
		return
	}
	// Not root: the line goes through sudo -n; a sudo that wants a password
	// gives advice.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	e := New("local-1")
	_, err := e.Run(context.Background(), transport.Command{Line: "true", Sudo: true})
	if !errors.Is(err, errs.ErrNonZeroExit) || !strings.Contains(err.Error(), "passwordless sudo") {
		t.Fatalf("err = %v; want advice about passwordless sudo", err)
	}
}

func TestLocalExecutorString(t *testing.T) {
	e := New("here")
	if e.Name() != "here" || e.(interface{ String() string }).String() != "here (local)" {
		t.Fatalf("Name %q String %q", e.Name(), e.(interface{ String() string }).String())
	}
}
