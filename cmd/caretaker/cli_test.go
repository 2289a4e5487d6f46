package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := execute(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeTemp(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const cliInventory = `clusters:
  - name: t
    nodes:
      - {name: s1, address: 127.0.0.1, port: 1, role: server}
      - {name: a1, address: 127.0.0.1, port: 1, role: agent}
`

func TestCLIVersionAndPlaybooks(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "caretaker ") {
		t.Errorf("version: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "playbooks")
	if code != 0 || !strings.Contains(out, "ping") {
		t.Errorf("playbooks: %d %q", code, out)
	}
}

func TestCLIPlan(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	code, out, errOut := runCLI(t, "plan", "ping", "-i", inv)
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errOut)
	}
	for _, w := range []string{"playbook ping (playbooks/ping.star) on cluster t, 2 nodes", "1. ping [read-only, timeout 30s]", "nodes: s1, a1"} {
		if !strings.Contains(out, w) {
			t.Errorf("plan output lacks %q:\n%s", w, out)
		}
	}
	code, out, _ = runCLI(t, "plan", "ping", "-i", inv, "--limit", "agents", "-o", "json")
	if code != 0 || !strings.HasPrefix(out, `{"type":"plan"`) || !strings.Contains(out, `"nodes":["a1"]`) ||
		strings.Contains(out, "run_id") || strings.Contains(out, `"at":"0001-`) {
		t.Errorf("plan json with --limit: want a plan event with a time and no run ID: %d %s", code, out)
	}
}

// TestCLIExitCodes: bad input is exit 2 with a message that says what is
// wrong and where; an unreachable node is a failed step, exit 1, named.
func TestCLIExitCodes(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	badInv := writeTemp(t, "bad.yaml", "clusters:\n  - name: t\n    nodes:\n      - {name: s1, address: x, role: boss}\n")
	pb := writeTemp(t, "broken.star", "def b(node):\n    pass\nstep(\"s\", b, nodes=\"nosuch\")\n")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", "ping"}, 2, "no inventory"},
		{[]string{"run", "nosuch", "-i", inv}, 2, `no playbook "nosuch"`},
		{[]string{"run", "ping", "-i", badInv}, 2, "bad.yaml:4: clusters[0].nodes[0].role: must be server or agent"},
		{[]string{"run", "ping", "-i", inv, "-p", "x=1"}, 2, `unknown parameter "x"`},
		{[]string{"run", "ping", "-i", inv, "-p", "novalue"}, 2, "key=value"},
		{[]string{"run", pb, "-i", inv}, 2, "broken.star:3:5"},
		{[]string{"run", "ping", "-i", inv, "--bogus"}, 2, "unknown flag"},
		{[]string{"run", "ping", "-i", inv, "-o", "xml"}, 2, "--output"},
		{[]string{"run", "ping", "-i", inv, "--cluster", "zz"}, 2, `no cluster "zz"`},
	}
	for _, tc := range cases {
		code, _, errOut := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
	// Unreachable nodes: the run fails (exit 1) and names each node.
	code, out, _ := runCLI(t, "run", "ping", "-i", inv, "-o", "plain", "--yes")
	if code != 1 || !strings.Contains(out, "[ping] s1: FAILED") || !strings.Contains(out, "[ping] a1: FAILED") {
		t.Errorf("unreachable: exit %d\n%s", code, out)
	}
}

// TestNodesAtLoadTime: nodes() works while the playbook loads (the nodes
// the run will have, --limit applied), so a playbook can shape its steps
// by them; node methods still refuse to act outside a step.
func TestNodesAtLoadTime(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	pb := writeTemp(t, "shape.star", `
names = [n.name for n in nodes()]
step("first", lambda node: None, nodes = names[0], mutates = False, doc = "of " + ",".join(names))
`)
	code, out, errOut := runCLI(t, "plan", pb, "-i", inv)
	if code != 0 || !strings.Contains(out, "of s1,a1") {
		t.Errorf("plan: %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "plan", pb, "-i", inv, "--limit", "agents")
	if code != 0 || !strings.Contains(out, "of a1") || strings.Contains(out, "of s1") {
		t.Errorf("plan --limit agents: %d\n%s", code, out)
	}
	bad := writeTemp(t, "bad.star", `nodes()[0].run("true")`+"\n")
	code, _, errOut = runCLI(t, "plan", bad, "-i", inv)
	if code != 2 || !strings.Contains(errOut, "inside a step") {
		t.Errorf("node.run at load time: want exit 2 saying it needs a step, got %d %q", code, errOut)
	}
}
