package builtins

import (
	"fmt"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/runner"
)

// Call is one call of a builtin, as the wrapper hands it to the builtin's
// Go function: its name, the calling thread, the run's env and the
// arguments, for the function to unpack.
type Call struct {
	name   string
	env    *runner.Env // nil outside a step (only for builtins not registered WhenStep)
	thread *starlark.Thread
	args   starlark.Tuple
	kwargs []starlark.Tuple
}

// Name is the builtin's name ("k3s.facts", "node.read", "fake.cluster").
func (c *Call) Name() string { return c.name }

// Thread is the calling Starlark thread.
func (c *Call) Thread() *starlark.Thread { return c.thread }

// Env is the run's env of the calling step: never nil for a builtin
// registered WhenStep, nil outside a step for the others.
func (c *Call) Env() *runner.Env { return c.env }

// Args are the positional arguments, for a builtin that takes any number.
func (c *Call) Args() starlark.Tuple { return c.args }

// Kwargs are the keyword arguments, for a builtin that takes any.
func (c *Call) Kwargs() []starlark.Tuple { return c.kwargs }

// Unpack unpacks the arguments like starlark.UnpackArgs, under the
// builtin's name.
func (c *Call) Unpack(pairs ...any) error {
	return starlark.UnpackArgs(c.name, c.args, c.kwargs, pairs...)
}

// NewBuiltin is the one wrapper every builtin of the playbook API is made
// with (the globals, node methods, and the k3s, k8s, assert and fake
// modules): a builtin is unpack → call → convert, and the wrapper does the
// rest, the same way for all of them:
//
//   - where it may be called (when is the reference's RefEntry.When): a
//     WhenStep builtin is refused outside a step body with runner.EnvFrom's
//     message, before its arguments are read; the others (WhenAny,
//     WhenLoad, WhenTest) get the step's env when there is one, else nil;
//   - fn's typed result is converted to Starlark (toStarlark: nil is None,
//     a starlark.Value is kept as it is);
//   - an error of a WhenStep builtin names the playbook parameter it came
//     from (runner.Env.ParamHint: which -p value to change);
//   - an error that is already a *starlark.EvalError (a Starlark function
//     the builtin called failed) is returned as it is, so its call stack
//     keeps the positions of the failing Starlark code.
//
// Check mode, undo records and the redaction of secrets are not the
// wrapper's: they are decided where the change is made (runner.Env.Wet,
// the operations of k3sops and k8sops) and where output leaves the run
// (the run's events).
func NewBuiltin(name, when string, fn func(c *Call) (any, error)) *starlark.Builtin {
	step := when == WhenStep
	return starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		c := &Call{name: name, thread: th, args: args, kwargs: kwargs}
		if step {
			env, err := runner.EnvFrom(th, name)
			if err != nil {
				return nil, err
			}
			c.env = env
		} else {
			c.env, _ = runner.EnvFrom(th, name)
		}
		res, err := fn(c)
		if err != nil {
			if _, ok := err.(*starlark.EvalError); ok || !step {
				return nil, err
			}
			return nil, c.env.ParamHint(err, args, kwargs)
		}
		v, err := toStarlark(res)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return v, nil
	})
}
