package main

import (
	"strings"
	"testing"
)

// TestCLIExecRefusesBadInput: every bad exec invocation exits 2 before a
// node is contacted (the inventory's nodes are unreachable on port 1).
func TestCLIExecRefusesBadInput(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	state := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"exec", "-i", inv, "uptime"}, "after --"},
		{[]string{"exec", "-i", inv, "--", " "}, "empty"},
		{[]string{"exec", "-i", inv, "--serial", "-1", "--", "true"}, "--serial -1"},
		{[]string{"exec", "-i", inv, "--timeout", "banana", "--", "true"}, "--timeout"},
		{[]string{"exec", "-i", inv, "-p", "cmd=x", "--", "true"}, "no parameters"},
		{[]string{"exec", "-i", inv, "--limit", "nosuch", "--", "true"}, "nosuch"},
		{[]string{"exec", "--", "true"}, "-i"},
	} {
		code, _, errOut := runCLI(t, append([]string{c.args[0], "--state-dir", state}, c.args[1:]...)...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: want exit 2 saying %q, got %d %q", c.args, c.want, code, errOut)
		}
	}
	code, out, errOut := runCLI(t, "plan", "exec", "-i", inv, "-p", "cmd=uptime", "-p", "serial=1")
	if code != 0 || !strings.Contains(out, "1. exec [read-only, serial 1, timeout 10m0s]") {
		t.Errorf("plan exec: %d\n%s%s", code, out, errOut)
	}
}
