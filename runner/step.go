package runner

import (
	"fmt"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/runner/inventory"
)

// step(name, body, nodes="all", serial=0, once=False, mutates=True,
// timeout="", doc="", allow_empty=False): declare a step. body(node) runs
// for every target node (once=True: for the first only). A group: or
// label: part of nodes that matches no node of the cluster is bad input
// unless allow_empty=True says that no target is fine (the step then does
// nothing on such a cluster); roles (all, servers, agents) may always be
// empty, and a node name must exist.
func stepBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	l, err := loaderFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	var (
		name, timeout, doc string
		body               starlark.Callable
		nodes              starlark.Value = starlark.String("all")
		serial             int
		once               bool
		mutates            = true
		allowEmpty         bool
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "body", &body, "nodes?", &nodes, "serial?", &serial, "once?", &once,
		"mutates?", &mutates, "timeout?", &timeout, "doc?", &doc, "allow_empty?", &allowEmpty); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%s: name must not be empty", b.Name())
	}
	for _, s := range l.plan.Steps {
		if s.Name == name {
			return nil, fmt.Errorf("%s: a step named %q is already declared at %s", b.Name(), name, s.Pos)
		}
	}
	if serial < 0 {
		return nil, fmt.Errorf("%s: serial must be 0 (all nodes at once) or more, got %d", b.Name(), serial)
	}
	sel, err := selectorString(nodes)
	if err != nil {
		return nil, fmt.Errorf("%s: nodes: %w", b.Name(), err)
	}
	targets, err := l.opts.Cluster.Select(sel)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", b.Name(), name, err)
	}
	if !allowEmpty {
		if err := l.checkSelectorMatches(sel); err != nil {
			return nil, fmt.Errorf("%s %q (%s): %w", b.Name(), name, th.CallFrame(1).Pos, err)
		}
	}
	var d time.Duration
	if timeout != "" {
		if d, err = time.ParseDuration(timeout); err != nil || d <= 0 {
			return nil, fmt.Errorf("%s: timeout must be a duration such as \"30s\" or \"10m\", got %q", b.Name(), timeout)
		}
	}
	// --limit keeps a step's targets within the limited nodes.
	inRun := map[*inventory.Node]bool{}
	for _, n := range l.plan.Nodes {
		inRun[n] = true
	}
	var kept []*inventory.Node
	for _, n := range targets {
		if inRun[n] {
			kept = append(kept, n)
		}
	}
	pos := th.CallFrame(1).Pos
	l.plan.Steps = append(l.plan.Steps, &Step{
		Index: len(l.plan.Steps), Name: name, Selector: sel, Nodes: kept, Serial: serial, Once: once,
		Mutates: mutates, Timeout: d, Doc: doc, Pos: pos, Body: body,
	})
	return starlark.None, nil
}

// checkSelectorMatches refuses a group: or label: part of a step's
// selector that matches no node of the cluster: a typo would make the
// step silently do nothing. Roles (all, servers, agents) may be empty (a
// cluster without agents), and names are checked by Select itself.
func (l *loader) checkSelectorMatches(sel string) error {
	for _, part := range strings.Split(sel, ",") {
		part = strings.TrimSpace(part)
		if !strings.HasPrefix(part, "group:") && !strings.HasPrefix(part, "label:") {
			continue
		}
		if nodes, err := l.opts.Cluster.Select(part); err == nil && len(nodes) == 0 {
			return fmt.Errorf("nodes=%q: %w (or give the step allow_empty = True when no target is fine)", sel, l.opts.Cluster.NoMatch("selector", part))
		}
	}
	return nil
}

func selectorString(v starlark.Value) (string, error) {
	switch x := v.(type) {
	case starlark.String:
		return string(x), nil
	case *starlark.List, starlark.Tuple:
		var parts []string
		it := starlark.Iterate(x)
		defer it.Done()
		var e starlark.Value
		for it.Next(&e) {
			s, ok := starlark.AsString(e)
			if !ok {
				return "", fmt.Errorf("list items must be strings, got %s", e.Type())
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a selector string (all, servers, agents, group:NAME, label:K=V, a node name) or a list of them, got %s", v.Type())
}
