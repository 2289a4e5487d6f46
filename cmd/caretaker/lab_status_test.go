package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/lab/shim"
)

// lab status without a lab says how to start one, not to run lab status.
func TestLabStatusWithoutLab(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := runCLI(t, "lab", "status", "--dir", dir)
	if code != exitFailed || !strings.Contains(errOut, "no lab in "+dir+": start one with `caretaker lab up --dir "+dir+"`") || strings.Contains(errOut, "see caretaker lab status") {
		t.Errorf("lab status without a lab: exit %d: %s", code, errOut)
	}
	// A socket nobody answers on: a lab that died.
	l, err := net.Listen("unix", filepath.Join(dir, shim.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	code, _, errOut = runCLI(t, "lab", "status", "--dir", dir)
	if code != exitFailed || !strings.Contains(errOut, "does not answer") || !strings.Contains(errOut, "`caretaker lab down --dir "+dir+"` cleans up after it, then `caretaker lab up --dir "+dir+"`") || strings.Contains(errOut, "see caretaker lab status") {
		t.Errorf("lab status of a dead lab: exit %d: %s", code, errOut)
	}
}
