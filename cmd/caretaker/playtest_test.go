package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCLIPlaybooksShowAndExport(t *testing.T) {
	code, out, _ := runCLI(t, "playbooks", "show", "ping")
	if code != 0 || !strings.Contains(out, `step("ping", ping`) {
		t.Errorf("playbooks show ping: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "playbooks", "show", "ping", "--test")
	if code != 0 || !strings.Contains(out, "def test_ping_reports_every_node") {
		t.Errorf("playbooks show ping --test: %d %q", code, out)
	}
	code, _, errOut := runCLI(t, "playbooks", "show", "pnig")
	if code != 2 || !strings.Contains(errOut, "ping") {
		t.Errorf("unknown playbook: want exit 2 naming the shipped ones, got %d %q", code, errOut)
	}
	dir := t.TempDir()
	if code, _, errOut := runCLI(t, "playbooks", "--export", dir); code != 0 {
		t.Fatalf("export: %d %s", code, errOut)
	}
	src, err := os.ReadFile(filepath.Join(dir, "ping.star"))
	if err != nil || !strings.Contains(string(src), "describe(") {
		t.Fatalf("exported ping.star: %v %q", err, src)
	}
	if err := os.WriteFile(filepath.Join(dir, "ping.star"), []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, "playbooks", "--export", dir)
	if code != 2 || !strings.Contains(errOut, "--force") {
		t.Errorf("export over existing files: want exit 2 with a --force hint, got %d %q", code, errOut)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ping.star")); string(got) != "# mine\n" {
		t.Errorf("a refused export changed ping.star: %q", got)
	}
}

const passingPlaybook = `describe("Count the nodes.")
def count(node):
    log("seen %s" % node.name)
    return node.name
step("count", count, nodes = "all", mutates = False)
`

const passingTest = `def test_counts_every_node():
    c = fake.cluster(servers = 1, agents = 1)
    r = c.run("count")
    assert.eq(r.status, "ok", r.error)
    assert.eq(r.statuses["count/agent-1"], "ok")

def test_shipped_ping_is_reachable():
    c = fake.cluster(servers = 1)
    assert.eq(c.run("ping").status, "ok")
`

func TestCLITestRunsStarTests(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("count.star", passingPlaybook)
	write("count_test.star", passingTest)

	code, out, errOut := runCLI(t, "test", dir, "-v")
	if code != 0 {
		t.Fatalf("passing tests: exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{"=== RUN   test_counts_every_node", "--- PASS: test_shipped_ping_is_reachable", "ok  \t" + filepath.Join(dir, "count_test.star"), "PASS: 2 test(s) in 1 file(s)"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	code, out, _ = runCLI(t, "test", dir, "-run", "ping_is")
	if code != 0 || !strings.Contains(out, "PASS: 1 test(s)") {
		t.Errorf("-run ping_is: want 1 test run, got %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "test", dir, "-run", "nothing")
	if code != 0 || !strings.Contains(out, "[no tests to run]") {
		t.Errorf("-run nothing: %d:\n%s", code, out)
	}

	write("broken_test.star", "def test_wrong():\n    assert.eq(1 + 1, 3, \"arithmetic\")\n")
	code, out, _ = runCLI(t, "test", dir+"/...")
	if code != 1 || !strings.Contains(out, "--- FAIL: test_wrong") || !strings.Contains(out, "FAIL\t"+filepath.Join(dir, "broken_test.star")) {
		t.Errorf("failing test: want exit 1 with --- FAIL, got %d:\n%s", code, out)
	}

	empty := t.TempDir()
	code, _, errOut = runCLI(t, "test", empty)
	if code != 2 || !strings.Contains(errOut, "no *_test.star files") {
		t.Errorf("no test files: want exit 2, got %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "test", dir, "-run", "(")
	if code != 2 || !strings.Contains(errOut, "-run") {
		t.Errorf("bad -run: want exit 2, got %d %q", code, errOut)
	}
	code, _, _ = runCLI(t, "test", filepath.Join(dir, "missing_test.star"))
	if code != 2 {
		t.Errorf("missing test file: want exit 2, got %d", code)
	}
}

func TestCLITestShipped(t *testing.T) {
	code, out, errOut := runCLI(t, "test", "--shipped")
	if code != 0 || !strings.Contains(out, "ok  \trotate-ca_test.star") {
		t.Errorf("shipped tests: %d\n%s%s", code, out, errOut)
	}
}

// TestREADMEPlaybookExamplePasses keeps the README's example playbook and
// its test working: both are written out as a user would copy them and
// run with `caretaker test`.
func TestREADMEPlaybookExamplePasses(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```python\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 2 {
		t.Fatalf("README has %d python blocks, want the example playbook and its test", len(blocks))
	}
	dir := t.TempDir()
	for name, src := range map[string]string{"restart-zone.star": blocks[0][1], "restart-zone_test.star": blocks[1][1]} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, errOut := runCLI(t, "test", dir); code != 0 {
		t.Errorf("README example: exit %d\n%s%s", code, out, errOut)
	}
}

func TestCLINewPlaybookPassesItsTests(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "team")
	code, out, errOut := runCLI(t, "new", "playbook", "fix-agents", "--dir", dir)
	if code != 0 {
		t.Fatalf("new playbook: %d %s", code, errOut)
	}
	for _, f := range []string{"fix-agents.star", "fix-agents_test.star", "lib_fix-agents.star"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("output does not name %s:\n%s", f, out)
		}
	}
	code, out, errOut = runCLI(t, "test", dir, "-v")
	if code != 0 || !strings.Contains(out, "PASS: 3 test(s)") {
		t.Fatalf("generated tests: %d\n%s%s", code, out, errOut)
	}
	inv := writeTemp(t, "inv.yaml", cliInventory)
	code, out, errOut = runCLI(t, "plan", filepath.Join(dir, "fix-agents.star"), "-i", inv)
	if code != 0 || !strings.Contains(out, "2. repair [changes nodes, serial 1]") {
		t.Errorf("plan of the generated playbook: %d\n%s%s", code, out, errOut)
	}

	before, _ := os.ReadFile(filepath.Join(dir, "fix-agents.star"))
	code, _, errOut = runCLI(t, "new", "playbook", "fix-agents", "--dir", dir)
	if code != 2 || !strings.Contains(errOut, "nothing written") {
		t.Errorf("second new: want exit 2, got %d %q", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "fix-agents.star")); !bytes.Equal(before, after) {
		t.Error("a refused new playbook changed the file")
	}
	for _, bad := range []string{"Fix_Agents", "rotate-ca", "../x"} {
		if code, _, _ := runCLI(t, "new", "playbook", bad, "--dir", dir); code != 2 {
			t.Errorf("new playbook %q: want exit 2, got %d", bad, code)
		}
	}
}
