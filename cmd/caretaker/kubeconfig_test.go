package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIKubeconfigRefusesBadInput: bad flags exit 2 before any node is
// contacted (the inventory's nodes are unreachable on port 1), and write
// nothing.
func TestCLIKubeconfigRefusesBadInput(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.yaml")
	if err := os.WriteFile(existing, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"kubeconfig", "--out", filepath.Join(dir, "k.yaml")}, "-i"},
		{[]string{"kubeconfig", "-i", inv, "--server", "k3s.example.com"}, "https://"}, // no --out: standard output (not a terminal here), checked first
		{[]string{"kubeconfig", "-i", inv, "--out", existing}, "--force"},
		{[]string{"kubeconfig", "-i", inv, "--out", filepath.Join(dir, "no", "such", "k.yaml")}, "directory does not exist"},
		{[]string{"kubeconfig", "-i", inv, "--out", "-", "--server", "http://x:6443"}, "https://"},
		{[]string{"kubeconfig", "-i", inv, "--out", "-", "--node", "a1"}, "not a server"},
	} {
		code, _, errOut := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: want exit 2 saying %q, got %d %q", c.args, c.want, code, errOut)
		}
	}
	if b, _ := os.ReadFile(existing); string(b) != "mine\n" {
		t.Errorf("a refused kubeconfig changed %s", existing)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.yaml")); err == nil {
		t.Error("a refused kubeconfig wrote a file")
	}
}
