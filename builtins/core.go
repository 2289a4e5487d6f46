// Package builtins holds the Starlark modules playbooks call. Every builtin
// is unpack → call → convert, made with NewBuiltin (register.go): the
// wrapper refuses a step builtin outside a step, converts the typed result
// and names the -p parameter an error came from. None emits events of its
// own except output lines and notes, and every mutating one goes through
// env.Wet (directly or in a k3sops/k8sops operation) so check mode holds.
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
	"log":        NewBuiltin("log", WhenAny, logFn),
	"fail":       NewBuiltin("fail", WhenAny, failFn),
	"skip":       NewBuiltin("skip", WhenAny, skipFn),
	"sleep":      NewBuiltin("sleep", WhenStep, sleepFn),
	"confirm":    NewBuiltin("confirm", WhenStep, confirmFn),
	"note":       NewBuiltin("note", WhenStep, noteFn),
	"share":      NewBuiltin("share", WhenStep, shareFn),
	"shared":     NewBuiltin("shared", WhenStep, sharedFn),
	"result":     NewBuiltin("result", WhenStep, resultFn),
	"nodes":      NewBuiltin("nodes", WhenAny, nodesFn),
	"check_mode": NewBuiltin("check_mode", WhenStep, checkModeFn),
	"run_id":     NewBuiltin("run_id", WhenStep, runIDFn),
	"redact":     NewBuiltin("redact", WhenStep, redactFn),
	"json":       json.Module,
	"struct":     NewBuiltin("struct", WhenAny, structFn),
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

func logFn(c *Call) (any, error) {
	if len(c.kwargs) > 0 {
		return nil, fmt.Errorf("%s: takes no keyword arguments", c.name)
	}
	var parts []string
	for _, a := range c.args {
		if s, ok := starlark.AsString(a); ok {
			parts = append(parts, s)
		} else {
			parts = append(parts, a.String())
		}
	}
	text := strings.Join(parts, " ")
	if c.env == nil {
		// At load time log() prints like print().
		c.thread.Print(c.thread, text)
		return nil, nil
	}
	for _, line := range strings.Split(text, "\n") {
		c.env.Output(runner.StreamLog, line)
	}
	return nil, nil
}

// failFn is fail(msg, kind=""): the step fails with msg. kind="drift"
// says the cluster works but needs maintenance (CA drift, expiring
// certificates): a run whose failures are all drift exits 4, like
// `caretaker check`.
func failFn(c *Call) (any, error) {
	var msg, kind string
	if err := c.Unpack("msg", &msg, "kind?", &kind); err != nil {
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

// skipFn is skip(reason): the step ends as skipped. It needs no step of
// its own (registered WhenAny): at load time the playbook fails to load
// with the reason.
func skipFn(c *Call) (any, error) {
	reason := "skipped by the playbook"
	if err := c.Unpack("reason?", &reason); err != nil {
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

func sleepFn(c *Call) (any, error) {
	var d Duration
	if err := c.Unpack("duration", &d); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	select {
	case <-t.C:
		return nil, nil
	case <-c.env.Ctx.Done():
		return nil, fmt.Errorf("%s: %w", c.name, stopCause(c.env))
	}
}

func stopCause(env *runner.Env) error {
	if err := env.Ctx.Err(); err != nil {
		return err
	}
	return errs.ErrAborted
}

func confirmFn(c *Call) (any, error) {
	var (
		question    string
		def         bool
		destructive = true
	)
	if err := c.Unpack("question", &question, "default?", &def, "destructive?", &destructive); err != nil {
		return nil, err
	}
	ans, err := c.env.Confirm(question, def, destructive)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return ans, nil
}

func noteFn(c *Call) (any, error) {
	var text string
	if err := c.Unpack("text", &text); err != nil {
		return nil, err
	}
	c.env.Note(text)
	return nil, nil
}

func shareFn(c *Call) (any, error) {
	var (
		key string
		v   starlark.Value
	)
	if err := c.Unpack("key", &key, "value", &v); err != nil {
		return nil, err
	}
	c.env.Share(key, v)
	return nil, nil
}

func sharedFn(c *Call) (any, error) {
	var (
		key string
		def starlark.Value = starlark.None
	)
	if err := c.Unpack("key", &key, "default?", &def); err != nil {
		return nil, err
	}
	if v, ok := c.env.Shared(key); ok {
		return v, nil
	}
	return def, nil
}

func resultFn(c *Call) (any, error) {
	var step string
	var node starlark.Value
	if err := c.Unpack("step", &step, "node", &node); err != nil {
		return nil, err
	}
	name, err := nodeName(node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return c.env.Result(step, name), nil
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

func nodesFn(c *Call) (any, error) {
	var sel starlark.Value = starlark.String("all")
	if err := c.Unpack("selector?", &sel); err != nil {
		return nil, err
	}
	nodes, err := runner.RunNodes(c.thread, c.name)
	if err != nil {
		return nil, err
	}
	terms, err := selectorTerms(sel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
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
	return starlark.NewList(out), nil
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

func checkModeFn(c *Call) (any, error) {
	if err := c.Unpack(); err != nil {
		return nil, err
	}
	return c.env.Check, nil
}

func runIDFn(c *Call) (any, error) {
	return c.env.RunID(), nil
}

// structFn is struct(**kwargs), starlark-go's starlarkstruct.Make.
func structFn(c *Call) (any, error) {
	return starlarkstruct.Make(c.thread, nil, c.args, c.kwargs)
}

func redactFn(c *Call) (any, error) {
	var s string
	if err := c.Unpack("secret", &s); err != nil {
		return nil, err
	}
	c.env.Redact(s)
	return nil, nil
}
