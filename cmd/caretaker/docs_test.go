package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/playbooks"
)

// checkWidth fails for every line of out wider than 80 columns.
func checkWidth(t *testing.T, what, out string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if len([]rune(line)) > 80 {
			t.Errorf("%s: line wider than 80 columns:\n%s", what, line)
		}
	}
}

// TestDocsIndexListsEveryBuiltin: `caretaker docs` names every entry of the
// reference with its summary, within 80 columns.
func TestDocsIndexListsEveryBuiltin(t *testing.T) {
	code, out, errOut := runCLI(t, "docs")
	if code != 0 {
		t.Fatalf("docs: exit %d: %s", code, errOut)
	}
	checkWidth(t, "docs", out)
	ref := builtins.APIReference()
	for _, s := range ref.Sections {
		if !strings.Contains(out, s.Title+" (caretaker docs "+s.Name+")") {
			t.Errorf("docs lacks the section %s", s.Title)
		}
		for _, e := range s.Entries {
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(e.Name) + `\s`).MatchString(out) {
				t.Errorf("docs does not list %s", e.Name)
			}
		}
	}
}

// TestDocsEntryPages: every builtin's page fits 80 columns and has its
// parts; k3s.verify's in detail.
func TestDocsEntryPages(t *testing.T) {
	ref := builtins.APIReference()
	for _, s := range ref.Sections {
		for _, e := range s.Entries {
			code, out, errOut := runCLI(t, "docs", e.Name)
			if code != 0 {
				t.Errorf("docs %s: exit %d: %s", e.Name, code, errOut)
				continue
			}
			checkWidth(t, "docs "+e.Name, out)
			for _, want := range []string{"Check mode:", "Called:"} {
				if !strings.Contains(out, want) {
					t.Errorf("docs %s lacks %q:\n%s", e.Name, want, out)
				}
			}
		}
	}
	_, out, _ := runCLI(t, "docs", "k3s.verify")
	for _, want := range []string{
		"k3s.verify(nodes=None, expect=\"\", focus=None, live=True, fail=True, quiet=False,\n           wait=\"0s\") -> verify",
		"Parameters:", "  wait (duration, default \"0s\")", "  expect (str, default \"\")",
		"Returns: verify", "rows (list[row]): one row per node", "  row: one node in k3s.verify", "problems (list[str])",
		"Check mode:", "would verify", "Example:\n  v = k3s.verify(",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("docs k3s.verify lacks %q:\n%s", want, out)
		}
	}
}

// TestDocsModulesAndStructs: a module's page lists its members' signatures;
// a struct's page its fields.
func TestDocsModulesAndStructs(t *testing.T) {
	ref := builtins.APIReference()
	for _, name := range []string{"k3s", "node", "globals", "json", "assert", "fake"} {
		code, out, errOut := runCLI(t, "docs", name)
		if code != 0 {
			t.Fatalf("docs %s: exit %d: %s", name, code, errOut)
		}
		checkWidth(t, "docs "+name, out)
		for _, e := range ref.Section(name).Entries {
			if !strings.Contains(out, e.Name+"(") && !strings.Contains(out, e.Name+":") {
				t.Errorf("docs %s does not show %s", name, e.Name)
			}
		}
	}
	code, out, _ := runCLI(t, "docs", "facts")
	if code != 0 || !strings.Contains(out, "needs_workaround (bool)") || !strings.Contains(out, "setting: ") {
		t.Errorf("docs facts: %d\n%s", code, out)
	}
}

var paramRe = regexp.MustCompile(`(?m)^\w+ = param\("(\w+)"`)

// TestDocsPlaybooks: `caretaker docs playbooks` shows every shipped
// playbook with every parameter its source declares (the regular
// expression is the test's own, independent of the loader the command
// uses), and `docs NAME` one playbook.
func TestDocsPlaybooks(t *testing.T) {
	code, out, errOut := runCLI(t, "docs", "playbooks")
	if code != 0 {
		t.Fatalf("docs playbooks: exit %d: %s", code, errOut)
	}
	checkWidth(t, "docs playbooks", out)
	for _, name := range playbooks.Names() {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `$`).MatchString(out) {
			t.Errorf("docs playbooks lacks %s", name)
		}
		src, err := fs.ReadFile(playbooks.FS, name+".star")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range paramRe.FindAllStringSubmatch(string(src), -1) {
			if !strings.Contains(out, "    "+m[1]+" (") {
				t.Errorf("docs playbooks lacks parameter %s of %s", m[1], name)
			}
		}
	}
	code, out, _ = runCLI(t, "docs", "rotate-ca")
	out = strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"rotate-ca Rotate the cluster CA", "workaround (string, default \"auto\")", "accepts one of auto, always, never", "restart_timeout (duration, default \"3m\")", "resumable"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("docs rotate-ca: %d, lacks %q:\n%s", code, want, out)
		}
	}
	if strings.Contains(out, "check-certs") {
		t.Errorf("docs rotate-ca shows other playbooks:\n%s", out)
	}
}

// TestDocsUnknownName: exit 2 with suggestions.
func TestDocsUnknownName(t *testing.T) {
	for name, want := range map[string]string{"k3s.verfy": "did you mean k3s.verify", "fact": "k3s.facts", "rotate-cb": "rotate-ca"} {
		code, _, errOut := runCLI(t, "docs", name)
		if code != exitBadInput || !strings.Contains(errOut, want) {
			t.Errorf("docs %s: exit %d, want 2 and %q: %s", name, code, want, errOut)
		}
	}
	code, _, errOut := runCLI(t, "docs", "zzzzzzzz")
	if code != exitBadInput || strings.Contains(errOut, "did you mean") {
		t.Errorf("docs zzzzzzzz: exit %d, want 2 without suggestions: %s", code, errOut)
	}
	if code, _, _ := runCLI(t, "docs", "--markdown", "--stubs"); code != exitBadInput {
		t.Errorf("docs --markdown --stubs: exit %d, want 2", code)
	}
}

// TestDocsMarkdownIsCurrent: docs/builtins.md is what `caretaker docs
// --markdown` prints now.
func TestDocsMarkdownIsCurrent(t *testing.T) {
	code, out, errOut := runCLI(t, "docs", "--markdown")
	if code != 0 {
		t.Fatalf("docs --markdown: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"# Playbook builtins", "## Editor setup", `"files.associations": { "*.star": "python" }`, "### `k3s.verify`", "### `verify`", "### rotate-ca", "| `workaround` | string | `\"auto\"` |"} {
		if !strings.Contains(out, want) {
			t.Errorf("docs --markdown lacks %q", want)
		}
	}
	path := filepath.Join("..", "..", "docs", "builtins.md")
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; generate it: %s", err, builtins.MarkdownCommand)
	}
	if !bytes.Equal(have, []byte(out)) {
		t.Errorf("docs/builtins.md is not what the reference generates (builtins/reference_*.go changed); regenerate it: %s", builtins.MarkdownCommand)
	}
}

// TestDocsStubs: --stubs prints the stub file (that it parses as Python
// and names every builtin is builtins' TestStubsParseAndNameEveryBuiltin).
func TestDocsStubs(t *testing.T) {
	code, out, errOut := runCLI(t, "docs", "--stubs")
	if code != 0 {
		t.Fatalf("docs --stubs: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"from typing import Any, Callable", "class Node:", "    def run(self, cmd: str, changes: bool = True,", "class _K3s:", "k3s: _K3s", "def step(name: str, body: Callable[..., Any]", "class Verify:"} {
		if !strings.Contains(out, want) {
			t.Errorf("docs --stubs lacks %q", want)
		}
	}
}
