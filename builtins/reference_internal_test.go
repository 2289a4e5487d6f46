package builtins

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestReferenceStructsMatchTheConversion: every result struct typed by a
// Go type documents exactly the fields toStarlark makes of that type, each
// with a type and a doc; the Go structs they hold are documented too.
func TestReferenceStructsMatchTheConversion(t *testing.T) {
	ref := APIReference()
	names := map[reflect.Type]string{}
	for _, s := range ref.Structs {
		if s.goType != nil {
			names[s.goType] = s.Name
		}
	}
	for _, s := range ref.Structs {
		if s.goType == nil {
			continue
		}
		var got, want []string
		for _, f := range reflectFields(s.goType, names) {
			got = append(got, f.name)
			if strings.Contains(f.typ, "struct") {
				t.Errorf("struct %s: field %s is of a Go struct type the reference does not document (%s)", s.Name, f.name, f.typ)
			}
		}
		for _, f := range s.Fields {
			want = append(want, f.Name)
		}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("struct %s: the runtime converts %s into fields\n  %s\nthe reference documents\n  %s", s.Name, s.goType, strings.Join(got, " "), strings.Join(want, " "))
		}
	}
}

// TestReferenceIsComplete: every entry has a summary, a check-mode text
// and a known place; every function an example; every parameter and
// field a type and a doc; every type word is a known type or a
// documented struct; names are unique.
func TestReferenceIsComplete(t *testing.T) {
	ref := APIReference()
	known := func(where, typ string) {
		if typ == "" {
			t.Errorf("%s: no type", where)
		}
		for _, w := range typeWordRe.FindAllString(typ, -1) {
			if _, ok := pyWords[w]; !ok && ref.Struct(w) == nil {
				t.Errorf("%s: type %q: %q is neither a known type nor a documented struct", where, typ, w)
			}
		}
	}
	seen := map[string]bool{}
	for _, s := range ref.Sections {
		if s.Title == "" || s.Doc == "" || len(s.Entries) == 0 {
			t.Errorf("section %q: needs a title, a doc and entries", s.Name)
		}
		for _, e := range s.Entries {
			if seen[e.Name] {
				t.Errorf("%s is documented twice", e.Name)
			}
			seen[e.Name] = true
			if e.Summary == "" || e.Check == "" || whenText[e.When] == "" {
				t.Errorf("%s: needs a summary, a check-mode text and a When", e.Name)
			}
			if !e.Attr && e.Example == "" {
				t.Errorf("%s: needs an example", e.Name)
			}
			known(e.Name+" returns", e.Returns)
			for _, p := range e.Params {
				if p.Doc == "" {
					t.Errorf("%s(%s): no doc", e.Name, p.Name)
				}
				if p.Type != "kwargs" {
					known(e.Name+"("+p.Name+")", p.Type)
				}
			}
		}
	}
	for _, s := range ref.Structs {
		if s.Summary == "" {
			t.Errorf("struct %s: no summary", s.Name)
		}
		for _, f := range s.Fields {
			if f.Doc == "" {
				t.Errorf("struct %s.%s: no doc", s.Name, f.Name)
			}
			known("struct "+s.Name+"."+f.Name, f.Type)
		}
	}
}

// stubNamesScript parses a stub file and prints its top-level and class
// member names as JSON: {"": [...], "Class": [...]}.
const stubNamesScript = `
import ast, json, sys
tree = ast.parse(open(sys.argv[1]).read())
out = {"": []}
def names(body):
    r = []
    for n in body:
        if isinstance(n, ast.FunctionDef):
            r.append(n.name)
        elif isinstance(n, ast.AnnAssign):
            r.append(n.target.id)
    return r
for n in tree.body:
    if isinstance(n, ast.ClassDef):
        out[n.name] = names(n.body)
out[""] = names(tree.body)
print(json.dumps(out))
`

// TestStubsParseAndNameEveryBuiltin needs python3 (on the CI machines):
// the stub file must parse as Python and define every entry where an
// editor looks for it (a global def, a method of Node, _K3s, ...) and every
// field of every struct.
func TestStubsParseAndNameEveryBuiltin(t *testing.T) {
	ref := APIReference()
	var b strings.Builder
	if err := ref.WriteStubs(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "__builtins__.pyi")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("python3", "-c", stubNamesScript, path).Output()
	if err != nil {
		t.Fatalf("python3 could not parse the stubs (python3 is required for this test): %v\n%s", err, stderrOf(err))
	}
	var got map[string][]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	has := func(class, name string) bool {
		for _, n := range got[class] {
			if n == name {
				return true
			}
		}
		return false
	}
	for _, s := range ref.Sections {
		for _, e := range s.Entries {
			class, name := stubPlace(&s, &e)
			if !has(class, name) {
				t.Errorf("the stubs do not define %s (want %s in class %q)", e.Name, name, class)
			}
		}
		if s.Module != "" && s.Module != "assert" && !has("", s.Module) {
			t.Errorf("the stubs do not declare the module %s", s.Module)
		}
	}
	for _, s := range ref.Structs {
		for _, f := range s.Fields {
			if !has(pyClass(s.Name), f.Name) {
				t.Errorf("the stubs' class %s has no field %s", pyClass(s.Name), f.Name)
			}
		}
	}
}

// stubPlace is where the stubs define an entry: the class ("" for a
// global) and the name.
func stubPlace(s *RefSection, e *RefEntry) (string, string) {
	name := e.Name[strings.LastIndex(e.Name, ".")+1:]
	switch {
	case s.Module != "" && strings.HasPrefix(e.Name, s.Module+"."):
		return "_" + pyClass(s.Module), name
	case s.Class != "":
		return s.Class, name
	}
	return "", name
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestWrapAndSignature pins the text helpers the pages are made of.
func TestWrapAndSignature(t *testing.T) {
	got := wrap("one two three four", "  ", 12)
	if got != "  one two\n  three four" {
		t.Errorf("wrap = %q", got)
	}
	sig := wrapSignature("k3s.verify(nodes=None, expect=\"\", focus=None) -> verify", 36)
	for _, line := range strings.Split(sig, "\n") {
		if len(line) > 36 {
			t.Errorf("signature line %q is longer than 36", line)
		}
	}
	if !strings.HasPrefix(strings.Split(sig, "\n")[1], strings.Repeat(" ", len("k3s.verify("))) {
		t.Errorf("continuation lines are not under the parenthesis:\n%s", sig)
	}
	if pyType("list[row] | None") != "list[Row] | None" || pyType("selector") != "str | Node | list[str | Node]" {
		t.Errorf("pyType: %q, %q", pyType("list[row] | None"), pyType("selector"))
	}
}
