package tui

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsOnlyRunner enforces the dependency rule: tui (and its
// sub-packages) import runner for its event types and nothing else of the
// project: no builtins, lab, cmd or internal/k3s.
func TestImportsOnlyRunner(t *testing.T) {
	const mod = "github.com/caretaker/caretaker/"
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			n++
			if strings.HasPrefix(p, mod) && p != mod+"runner" && p != mod+"tui" && !strings.HasPrefix(p, mod+"tui/") {
				t.Errorf("%s imports %s: tui may only import runner (event types)", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no imports found: the walk is broken")
	}
}
