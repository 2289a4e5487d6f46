package k3stest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// collector records the events of a nested run.
type collector struct {
	mu       sync.Mutex
	statuses map[string]string
	errs     map[string]string
	kinds    map[string]string
	output   []string
	notes    []string
	done     runner.RunDone
}

// Emit implements runner.Sink.
func (c *collector) Emit(e runner.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e := e.(type) {
	case runner.StepDone:
		key := e.StepName + "/" + e.Node
		c.statuses[key] = string(e.Status)
		if e.Kind != "" {
			c.kinds[key] = e.Kind
		}
		if e.Error != "" {
			c.errs[key] = e.Error + "\n" + e.Detail
		} else if e.Reason != "" {
			c.errs[key] = e.Reason
		}
	case runner.OutputLine:
		c.output = append(c.output, e.Node+" | "+e.Text)
	case runner.Note:
		c.notes = append(c.notes, e.Text)
	case runner.RunDone:
		c.done = e
	}
}

// dictOf is m as a Starlark dict with sorted keys.
func dictOf(m map[string]string) *starlark.Dict {
	d := starlark.NewDict(len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_ = d.SetKey(starlark.String(k), starlark.String(m[k]))
	}
	return d
}

// execute runs plan against the cluster with --yes and collects its events.
func (v *clusterValue) execute(plan *runner.Plan, check bool) (*collector, error) {
	v.runs++
	col := &collector{statuses: map[string]string{}, errs: map[string]string{}, kinds: map[string]string{}}
	run := runner.NewRun(plan, runner.RunOptions{
		RunID:     fmt.Sprintf("%s-%s-%d", time.Now().UTC().Format("20060102-150405"), plan.Playbook, v.runs),
		StateDir:  v.c.StateDir,
		Check:     check,
		AutoYes:   true,
		Pool:      v.c.Pool(),
		NodeValue: builtins.NodeValue,
		Sink:      col,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := run.Execute(ctx)
	return col, err
}

// call runs fn(node) as the one step of a run on node.
func (v *clusterValue) call(fn starlark.Callable, node string, check bool) (starlark.Value, error) {
	var target *inventory.Node
	for _, n := range v.c.Inventory.Nodes {
		if n.Name == node {
			target = n
		}
	}
	if target == nil {
		return nil, fmt.Errorf("cluster.call: no node %q", node)
	}
	var got starlark.Value = starlark.None
	body := builtins.NewBuiltin("call", builtins.WhenAny, func(bc *builtins.Call) (any, error) {
		r, err := starlark.Call(bc.Thread(), fn, bc.Args(), bc.Kwargs())
		if err == nil {
			got = r
		}
		return r, err
	})
	nodes := append([]*inventory.Node(nil), v.c.Inventory.Nodes...)
	inventory.SortNodes(nodes)
	plan := &runner.Plan{Playbook: "call", Cluster: v.c.Inventory, Nodes: nodes,
		Steps: []*runner.Step{{Index: 0, Name: "call", Selector: node, Nodes: []*inventory.Node{target}, Mutates: true, Body: body}}}
	col, _ := v.execute(plan, check)
	return structOf("call", starlark.StringDict{
		"status": starlark.String(col.statuses["call/"+node]),
		"value":  got,
		"error":  starlark.String(col.errs["call/"+node]),
		"output": strList(col.output),
		"notes":  strList(col.notes),
	}), nil
}

// run runs a playbook of v.playbooks against the cluster.
func (v *clusterValue) run(name string, params *starlark.Dict, check bool, limit string) (starlark.Value, error) {
	if v.playbooks == nil {
		return nil, errors.New("cluster.run: no playbooks to run here")
	}
	pre, err := builtins.Predeclared()
	if err != nil {
		return nil, err
	}
	ps := map[string]string{}
	if params != nil {
		for _, it := range params.Items() {
			k, _ := starlark.AsString(it[0])
			if s, ok := starlark.AsString(it[1]); ok {
				ps[k] = s
			} else {
				ps[k] = it[1].String()
			}
		}
	}
	base := strings.TrimSuffix(name, ".star")
	plan, err := runner.Load(runner.LoadOptions{Name: base, Path: base + ".star", FS: v.playbooks, FSPrefix: "playbooks",
		Params: ps, Predeclared: pre, Cluster: v.c.Inventory, Limit: limit})
	if err != nil {
		return structOf("run", starlark.StringDict{"status": starlark.String("error"), "error": starlark.String(err.Error()),
			"statuses": starlark.NewDict(0), "errors": starlark.NewDict(0), "kinds": starlark.NewDict(0), "output": strList(nil), "notes": strList(nil)}), nil
	}
	col, err := v.execute(plan, check)
	msg := ""
	if err != nil {
		msg = err.Error()
		if len(col.done.Failed) > 0 {
			f := col.done.Failed[0]
			msg += fmt.Sprintf("; first failure: %s [%s]: %s", f.Node, f.StepName, f.Error)
		}
	}
	return structOf("run", starlark.StringDict{
		"status":   starlark.String(col.done.Status),
		"error":    starlark.String(msg),
		"statuses": dictOf(col.statuses),
		"errors":   dictOf(col.errs),
		"kinds":    dictOf(col.kinds),
		"output":   strList(col.output),
		"notes":    strList(col.notes),
	}), nil
}

// StarTestResult is the outcome of one test_* function of a .star test file.
type StarTestResult struct {
	Name     string
	Err      error
	Duration time.Duration
}

// RunStarTestFile executes a .star test file with the playbook builtins,
// the assert module and the fake module (clusters on env's etcd), then
// calls each of its test_* functions (in the order they are defined) with no arguments.
// Clusters a test makes are closed after it. load() and cluster.run()
// read from fsys (may be nil).
func RunStarTestFile(env *Env, filename string, src []byte, fsys fs.FS) ([]StarTestResult, error) {
	return runStarTestFile(env, filename, src, fsys, nil)
}

// runStarTestFile is RunStarTestFile calling only the test_* functions
// whose name match accepts (all when match is nil).
func runStarTestFile(env *Env, filename string, src []byte, fsys fs.FS, match func(string) bool) ([]StarTestResult, error) {
	pre, err := builtins.Predeclared()
	if err != nil {
		return nil, err
	}
	pre["fake"] = Module(env, fsys)
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, Recursion: true}
	load := moduleLoader(opts, pre, fsys)
	th := &starlark.Thread{Name: filename, Load: load}
	globals, err := starlark.ExecFileOptions(opts, th, filename, src, pre)
	if err != nil {
		return nil, err
	}
	var names []string
	for name, v := range globals {
		if _, ok := v.(starlark.Callable); ok && strings.HasPrefix(name, "test_") && (match == nil || match(name)) {
			names = append(names, name)
		}
	}
	sort.Slice(names, func(i, j int) bool { return definedBefore(globals[names[i]], globals[names[j]], names[i], names[j]) })
	out := make([]StarTestResult, 0, len(names))
	for _, name := range names {
		reg := &clusterRegistry{}
		t := &starlark.Thread{Name: name, Load: load}
		t.SetLocal(clustersKey, reg)
		start := time.Now()
		_, err := starlark.Call(t, globals[name].(starlark.Callable), nil, nil)
		var ee *starlark.EvalError
		if errors.As(err, &ee) {
			err = errors.New(ee.Backtrace())
		}
		reg.closeAll()
		out = append(out, StarTestResult{Name: name, Err: err, Duration: time.Since(start)})
	}
	return out, nil
}

// moduleLoader is a load() for test files: modules come from fsys, each
// executed once.
func moduleLoader(opts *syntax.FileOptions, pre starlark.StringDict, fsys fs.FS) func(*starlark.Thread, string) (starlark.StringDict, error) {
	var load func(th *starlark.Thread, module string) (starlark.StringDict, error)
	cache := map[string]starlark.StringDict{}
	load = func(_ *starlark.Thread, module string) (starlark.StringDict, error) {
		if g, ok := cache[module]; ok {
			return g, nil
		}
		if fsys == nil {
			return nil, fmt.Errorf("load(%q): no module directory", module)
		}
		b, err := fs.ReadFile(fsys, path.Clean(module))
		if err != nil {
			return nil, fmt.Errorf("load(%q): %w", module, err)
		}
		t := &starlark.Thread{Name: "load " + module, Load: load}
		g, err := starlark.ExecFileOptions(opts, t, module, b, pre)
		if err != nil {
			return nil, err
		}
		cache[module] = g
		return g, nil
	}
	return load
}

// definedBefore orders test functions by their position in the file (a
// function loaded from elsewhere, or a builtin, by name after them).
func definedBefore(a, b starlark.Value, an, bn string) bool {
	fa, aok := a.(*starlark.Function)
	fb, bok := b.(*starlark.Function)
	switch {
	case aok && bok && fa.Position().Filename() == fb.Position().Filename():
		return fa.Position().Line < fb.Position().Line
	case aok != bok:
		return aok
	}
	return an < bn
}
