// Package builtins holds the Starlark modules playbooks call. Every builtin
// reaches its node and run through runner.EnvFrom; none emits events of its
// own except output lines and notes, and every mutating one goes through
// env.Wet so check mode holds.
package builtins

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
)

// Core are the predeclared functions of every playbook:
//
//	log(*args)                       a line in the node's output (stream "log")
//	fail(msg)                        fail the step with msg
//	skip(reason)                     end the step as skipped
//	sleep(duration)                  "5s" or seconds; returns early when the run stops
//	confirm(question, default=False, destructive=True) -> bool
//	                                 ask the operator (TUI modal, or --yes);
//	                                 in check mode nobody is asked: yes
//	note(text)                       a line for the run summary
//	share(key, value) / shared(key, default=None)
//	                                 pass frozen values between steps and nodes
//	result(step, node) -> value      what a step body returned on a node
//	nodes(selector="all") -> [node]  nodes of the run: all, servers, agents,
//	                                 group:NAME, label:K=V, a name, or a list
//	check_mode() -> bool             True under --check
//	run_id() -> str
//	redact(secret)                   never show secret in output, errors or notes
//	json.encode/decode, struct(...)
var Core = starlark.StringDict{
	"log":        starlark.NewBuiltin("log", logFn),
	"fail":       starlark.NewBuiltin("fail", failFn),
	"skip":       starlark.NewBuiltin("skip", skipFn),
	"sleep":      starlark.NewBuiltin("sleep", sleepFn),
	"confirm":    starlark.NewBuiltin("confirm", confirmFn),
	"note":       starlark.NewBuiltin("note", noteFn),
	"share":      starlark.NewBuiltin("share", shareFn),
	"shared":     starlark.NewBuiltin("shared", sharedFn),
	"result":     starlark.NewBuiltin("result", resultFn),
	"nodes":      starlark.NewBuiltin("nodes", nodesFn),
	"check_mode": starlark.NewBuiltin("check_mode", checkModeFn),
	"run_id":     starlark.NewBuiltin("run_id", runIDFn),
	"redact":     starlark.NewBuiltin("redact", redactFn),
	"json":       json.Module,
	"struct":     starlark.NewBuiltin("struct", starlarkstruct.Make),
}

// All returns every predeclared name playbooks see: Core plus the modules
// given (k3s, assert, ...), refusing duplicate names.
func All(modules ...*starlarkstruct.Module) (starlark.StringDict, error) {
	out := starlark.StringDict{}
	for k, v := range Core {
		out[k] = v
	}
	for _, m := range modules {
		if _, dup := out[m.Name]; dup {
			return nil, fmt.Errorf("builtins: module name %q is defined twice", m.Name)
		}
		out[m.Name] = m
	}
	return out, nil
}

func logFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if len(kwargs) > 0 {
		return nil, fmt.Errorf("%s: takes no keyword arguments", b.Name())
	}
	var parts []string
	for _, a := range args {
		if s, ok := starlark.AsString(a); ok {
			parts = append(parts, s)
		} else {
			parts = append(parts, a.String())
		}
	}
	text := strings.Join(parts, " ")
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		// At load time log() prints like print().
		th.Print(th, text)
		return starlark.None, nil
	}
	for _, line := range strings.Split(text, "\n") {
		env.Output(runner.StreamLog, line)
	}
	return starlark.None, nil
}

// failFn is fail(msg, kind=""): the step fails with msg. kind="drift"
// says the cluster works but needs maintenance (CA drift, expiring
// certificates): a run whose failures are all drift exits 4, like
// `caretaker check`.
func failFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var msg, kind string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "msg", &msg, "kind?", &kind); err != nil {
		return nil, err
	}
	switch kind {
	case "":
		return nil, errors.New(msg)
	case errs.KindDrift:
		return nil, errs.Drift(errors.New(msg))
	}
	return nil, fmt.Errorf("fail: kind %q: use \"drift\" or leave it out: %w", kind, errs.ErrBadInput)
}

func skipFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	reason := "skipped by the playbook"
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "reason?", &reason); err != nil {
		return nil, err
	}
	return nil, runner.Skip(reason)
}

// Duration accepts a duration as "30s" or as a number of seconds.
type Duration time.Duration

// Unpack implements starlark.Unpacker.
func (d *Duration) Unpack(v starlark.Value) error {
	switch x := v.(type) {
	case starlark.String:
		dd, err := time.ParseDuration(string(x))
		if err != nil {
			return fmt.Errorf("%q is not a duration (examples: 500ms, 30s, 5m)", string(x))
		}
		*d = Duration(dd)
		return nil
	case starlark.Int:
		n, _ := x.Int64()
		*d = Duration(time.Duration(n) * time.Second)
		return nil
	case starlark.Float:
		*d = Duration(time.Duration(float64(x) * float64(time.Second)))
		return nil
	}
	return fmt.Errorf("want a duration such as \"30s\" or a number of seconds, got %s", v.Type())
}

var _ starlark.Unpacker = (*Duration)(nil)

func sleepFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	var d Duration
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "duration", &d); err != nil {
		return nil, env.ParamHint(err, args, kwargs)
	}
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	select {
	case <-t.C:
		return starlark.None, nil
	case <-env.Ctx.Done():
		return nil, fmt.Errorf("%s: %w", b.Name(), stopCause(env))
	}
}

func stopCause(env *runner.Env) error {
	if err := env.Ctx.Err(); err != nil {
		return err
	}
	return errs.ErrAborted
}

func confirmFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		question    string
		def         bool
		destructive = true
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "question", &question, "default?", &def, "destructive?", &destructive); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	ans, err := env.Confirm(question, def, destructive)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return starlark.Bool(ans), nil
}

func noteFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var text string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	env.Note(text)
	return starlark.None, nil
}

func shareFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		key string
		v   starlark.Value
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "value", &v); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	env.Share(key, v)
	return starlark.None, nil
}

func sharedFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		key string
		def starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "default?", &def); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	if v, ok := env.Shared(key); ok {
		return v, nil
	}
	return def, nil
}

func resultFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var step string
	var node starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "step", &step, "node", &node); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	name, err := nodeName(node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return env.Result(step, name), nil
}

func nodeName(v starlark.Value) (string, error) {
	switch x := v.(type) {
	case *Node:
		return x.N.Name, nil
	case starlark.String:
		return string(x), nil
	}
	return "", fmt.Errorf("want a node or a node name, got %s", v.Type())
}

func nodesFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var sel starlark.Value = starlark.String("all")
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "selector?", &sel); err != nil {
		return nil, err
	}
	nodes, err := runner.RunNodes(th, b.Name())
	if err != nil {
		return nil, err
	}
	terms, err := selectorTerms(sel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	var out []starlark.Value
	for _, n := range nodes {
		for _, t := range terms {
			if n.Matches(t) {
				out = append(out, NewNode(n))
				break
			}
		}
	}
	l := starlark.NewList(out)
	return l, nil
}

func selectorTerms(v starlark.Value) ([]string, error) {
	if s, ok := starlark.AsString(v); ok {
		return strings.Split(s, ","), nil
	}
	it, ok := v.(starlark.Iterable)
	if !ok {
		return nil, fmt.Errorf("want a selector string or list, got %s", v.Type())
	}
	var out []string
	iter := it.Iterate()
	defer iter.Done()
	var x starlark.Value
	for iter.Next(&x) {
		s, ok := starlark.AsString(x)
		if !ok {
			if n, ok := x.(*Node); ok {
				s = n.N.Name
			} else {
				return nil, fmt.Errorf("selector items must be strings or nodes, got %s", x.Type())
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func checkModeFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	return starlark.Bool(env.Check), nil
}

func runIDFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	return starlark.String(env.RunID()), nil
}

func redactFn(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "secret", &s); err != nil {
		return nil, err
	}
	env, err := runner.EnvFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	env.Redact(s)
	return starlark.None, nil
}
