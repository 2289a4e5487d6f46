package runner

import (
	"errors"

	"go.starlark.net/starlark"
)

// limitSteps caps th at max Starlark operations. The function it returns
// says where the evaluation was when it reached them (the innermost
// Starlark frame: the loop that did not end), else where err happened.
// The interpreter reports some instructions (a loop's jump back) at the
// function's own line, so the limit lets a few more run until one has a
// line in the body.
func limitSteps(th *starlark.Thread, max uint64) func(err error) string {
	var at string
	extra := 0
	th.SetMaxExecutionSteps(max)
	th.OnMaxSteps = func(t *starlark.Thread) {
		extra++
		for i := 0; i < t.CallStackDepth(); i++ {
			f := t.CallFrame(i)
			if f.Pos.Filename() == "<builtin>" {
				continue
			}
			if fn, ok := t.DebugFrame(i).Callable().(*starlark.Function); ok && f.Pos == fn.Position() && extra < 64 {
				return // not a line of the body yet: one more instruction
			}
			at = f.Pos.String()
			break
		}
		t.Cancel("too many steps")
	}
	return func(err error) string {
		if at != "" {
			return at
		}
		var ee *starlark.EvalError
		if errors.As(err, &ee) && len(ee.CallStack) > 0 {
			return ee.CallStack.At(0).Pos.String()
		}
		return err.Error()
	}
}
