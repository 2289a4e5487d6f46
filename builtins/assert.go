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
		"eq":       NewBuiltin("assert.eq", WhenAny, assertEq),
		"ne":       NewBuiltin("assert.ne", WhenAny, assertNe),
		"true":     NewBuiltin("assert.true", WhenAny, assertTrue),
		"contains": NewBuiltin("assert.contains", WhenAny, assertContains),
		"fails":    NewBuiltin("assert.fails", WhenAny, assertFails),
	},
}

func assertFailure(c *Call, msg, format string, args ...any) error {
	text := fmt.Sprintf(format, args...)
	if msg != "" {
		text = msg + ": " + text
	}
	return fmt.Errorf("%s: %s", c.name, text)
}

func assertEq(c *Call) (any, error) {
	var got, want starlark.Value
	var msg string
	if err := c.Unpack("got", &got, "want", &want, "msg?", &msg); err != nil {
		return nil, err
	}
	eq, err := starlark.Equal(got, want)
	if err != nil {
		return nil, err
	}
	if !eq {
		return nil, assertFailure(c, msg, "got %s, want %s", got.String(), want.String())
	}
	return nil, nil
}

func assertNe(c *Call) (any, error) {
	var x, y starlark.Value
	var msg string
	if err := c.Unpack("x", &x, "y", &y, "msg?", &msg); err != nil {
		return nil, err
	}
	eq, err := starlark.Equal(x, y)
	if err != nil {
		return nil, err
	}
	if eq {
		return nil, assertFailure(c, msg, "both are %s", x.String())
	}
	return nil, nil
}

func assertTrue(c *Call) (any, error) {
	var cond starlark.Value
	var msg string
	if err := c.Unpack("cond", &cond, "msg?", &msg); err != nil {
		return nil, err
	}
	if !cond.Truth() {
		return nil, assertFailure(c, msg, "%s is not true", cond.String())
	}
	return nil, nil
}

func assertContains(c *Call) (any, error) {
	var container, x starlark.Value
	var msg string
	if err := c.Unpack("container", &container, "x", &x, "msg?", &msg); err != nil {
		return nil, err
	}
	in, err := starlark.Binary(syntax.IN, x, container)
	if err != nil {
		return nil, err
	}
	if !in.Truth() {
		return nil, assertFailure(c, msg, "%s does not contain %s", shortRepr(container), x.String())
	}
	return nil, nil
}

func assertFails(c *Call) (any, error) {
	var fn starlark.Callable
	var pattern string
	if err := c.Unpack("fn", &fn, "pattern", &pattern); err != nil {
		return nil, err
	}
	_, err := starlark.Call(c.thread, fn, nil, nil)
	if err == nil {
		return nil, assertFailure(c, "", "call succeeded, want an error matching %q", pattern)
	}
	if !strings.Contains(err.Error(), pattern) {
		return nil, assertFailure(c, "", "error %q does not contain %q", err.Error(), pattern)
	}
	return err.Error(), nil
}

func shortRepr(v starlark.Value) string {
	s := v.String()
	if len(s) > 200 {
		return s[:197] + "..."
	}
	return s
}
