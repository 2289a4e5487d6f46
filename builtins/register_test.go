package builtins_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/runner/inventory"
)

// TestEveryBuiltinThroughTheWrapper: no production file of builtins/ or
// below makes a builtin but through builtins.NewBuiltin (register.go), so
// where a builtin may be called, result conversion, the parameter hint and
// error positions are the wrapper's everywhere.
func TestEveryBuiltinThroughTheWrapper(t *testing.T) {
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || p == "register.go" {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), "starlark.NewBuiltin(") {
			t.Errorf("%s makes a builtin with starlark.NewBuiltin: use builtins.NewBuiltin", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stepOnlyButAnywhere are entries the reference documents for step bodies
// that the wrapper does not refuse elsewhere, and why.
var stepOnlyButAnywhere = map[string]string{
	"skip": "needs no step: at load time the playbook fails to load with the reason",
}

// TestStepBuiltinsRefuseOutsideAStep: every builtin the reference
// documents WhenStep is refused outside a step body, with
// runner.EnvFrom's message and before its arguments are read.
func TestStepBuiltinsRefuseOutsideAStep(t *testing.T) {
	ref := builtins.APIReference()
	pre, err := builtins.Predeclared()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]starlark.Value{"node": builtins.NewNode(&inventory.Node{Name: "n"})}
	th := &starlark.Thread{Name: "no step"}
	n := 0
	for _, s := range ref.Sections {
		for _, e := range s.Entries {
			if e.When != builtins.WhenStep || e.Attr || stepOnlyButAnywhere[e.Name] != "" {
				continue
			}
			v, err := resolve(pre, values, e.Name)
			if err != nil {
				t.Errorf("%s: %v", e.Name, err)
				continue
			}
			n++
			_, err = starlark.Call(th, v, starlark.Tuple{sentinel{}}, []starlark.Tuple{{starlark.String(probeKw), starlark.None}})
			want := e.Name + ": can only be called inside a step body"
			var ee *starlark.EvalError
			if !errors.As(err, &ee) || !strings.HasPrefix(ee.Msg, want) {
				t.Errorf("%s outside a step: %v, want %q", e.Name, err, want)
			}
		}
	}
	if n < 30 {
		t.Errorf("only %d step builtins probed", n)
	}
}

// TestWrapperKeepsErrorPositions: a builtin whose Starlark callback fails
// returns that *starlark.EvalError as it is, so the backtrace still points
// at the failing line of the callback (not only at the builtin's call).
func TestWrapperKeepsErrorPositions(t *testing.T) {
	apply := builtins.NewBuiltin("apply", builtins.WhenAny, func(c *builtins.Call) (any, error) {
		var fn starlark.Callable
		if err := c.Unpack("fn", &fn); err != nil {
			return nil, err
		}
		return starlark.Call(c.Thread(), fn, nil, nil)
	})
	const src = "def cb():\n    return 1 // 0\n\napply(cb)\n"
	_, err := starlark.ExecFileOptions(&syntax.FileOptions{}, &starlark.Thread{Name: "positions"}, "pos.star", src, starlark.StringDict{"apply": apply})
	var ee *starlark.EvalError
	if !errors.As(err, &ee) {
		t.Fatalf("got %v, want an EvalError", err)
	}
	if bt := ee.Backtrace(); !strings.Contains(bt, "pos.star:2:") || !strings.Contains(bt, "pos.star:4:") {
		t.Errorf("backtrace lost the callback's position:\n%s", bt)
	}
}
