package builtins

import (
	"fmt"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
)

// Assert is the `assert` module for playbook and builtin tests (.star
// files). A failed assertion fails the step with the message and the
// file:line of the call:
//
//	assert.eq(got, want, msg="")   assert.ne(a, b, msg="")
//	assert.true(cond, msg="")      assert.contains(container, x, msg="")
//	assert.fails(fn, pattern)      fn() must fail with an error matching pattern
var Assert = &starlarkstruct.Module{
	Name: "assert",
	Members: starlark.StringDict{
		"eq":       starlark.NewBuiltin("assert.eq", assertEq),
		"ne":       starlark.NewBuiltin("assert.ne", assertNe),
		"true":     starlark.NewBuiltin("assert.true", assertTrue),
		"contains": starlark.NewBuiltin("assert.contains", assertContains),
		"fails":    starlark.NewBuiltin("assert.fails", assertFails),
	},
}

func assertFailure(b *starlark.Builtin, msg, format string, args ...any) error {
	text := fmt.Sprintf(format, args...)
	if msg != "" {
		text = msg + ": " + text
	}
	return fmt.Errorf("%s: %s", b.Name(), text)
}

func assertEq(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var got, want starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "got", &got, "want", &want, "msg?", &msg); err != nil {
		return nil, err
	}
	eq, err := starlark.Equal(got, want)
	if err != nil {
		return nil, err
	}
	if !eq {
		return nil, assertFailure(b, msg, "got %s, want %s", got.String(), want.String())
	}
	return starlark.None, nil
}

func assertNe(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x, y starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "x", &x, "y", &y, "msg?", &msg); err != nil {
		return nil, err
	}
	eq, err := starlark.Equal(x, y)
	if err != nil {
		return nil, err
	}
	if eq {
		return nil, assertFailure(b, msg, "both are %s", x.String())
	}
	return starlark.None, nil
}

func assertTrue(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var cond starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "cond", &cond, "msg?", &msg); err != nil {
		return nil, err
	}
	if !cond.Truth() {
		return nil, assertFailure(b, msg, "%s is not true", cond.String())
	}
	return starlark.None, nil
}

func assertContains(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var container, x starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "container", &container, "x", &x, "msg?", &msg); err != nil {
		return nil, err
	}
	in, err := starlark.Binary(syntax.IN, x, container)
	if err != nil {
		return nil, err
	}
	if !in.Truth() {
		return nil, assertFailure(b, msg, "%s does not contain %s", shortRepr(container), x.String())
	}
	return starlark.None, nil
}

func assertFails(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var fn starlark.Callable
	var pattern string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "pattern", &pattern); err != nil {
		return nil, err
	}
	_, err := starlark.Call(th, fn, nil, nil)
	if err == nil {
		return nil, assertFailure(b, "", "call succeeded, want an error matching %q", pattern)
	}
	if !strings.Contains(err.Error(), pattern) {
		return nil, assertFailure(b, "", "error %q does not contain %q", err.Error(), pattern)
	}
	return starlark.String(err.Error()), nil
}

func shortRepr(v starlark.Value) string {
	s := v.String()
	if len(s) > 200 {
		return s[:197] + "..."
	}
	return s
}
