package builtins

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
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// This file is the Starlark side of FakeK3sCluster, for .star tests of the
// k3s module and of the shipped playbooks. A test file defines test_*
// functions; RunStarTestFile calls each with fresh state:
//
//	def test_strip():
//	    c = fake.cluster(servers=3, agents=1)
//	    r = c.call(lambda node: k3s.strip_server(node), node="server-1")
//	    assert.eq(r.status, "changed")
//	    r = c.run("rotate-ca", params={"workaround": "auto"})
//	    assert.eq(r.status, "ok")
//
// fake.cluster(servers=3, agents=2, version="v1.30.10+k3s1",
//              scenario="init-replaced", secure_token=False,
//              server_source={}, node_versions={}, bootstrap_bug=False) -> cluster
//
// bootstrap_bug=True makes every server serve bootstrap data from its
// disk whatever its version says (a patched build with bug #11233).
//
//	cluster.call(fn, node="server-1", check=False) -> struct(status, value, error, output, notes)
//	    runs fn(node) as the body of a one-step run on node
//	cluster.run(playbook, params={}, check=False, limit="") ->
//	    struct(status, error, statuses, errors, output, notes): a shipped
//	    playbook run against the cluster with --yes; statuses and errors
//	    are keyed "step/node", output lines are "node | text"
//	cluster.read(node, path) -> str or None    cluster.write(node, path, data)
//	cluster.sources(node) -> {path: content}   the node's config sources
//	cluster.files(node) -> {path: sha256}      every file of the node
//	cluster.datastore_ca() / disk_ca(node) / served_ca(node) -> sha256
//	cluster.fault(node, "fail-start"|"clear")  cluster.state(node) -> str
//	cluster.restarts(node) / reloads(node) -> int   cluster.calls(node) -> [str]
//	cluster.paths(node) -> struct(data_dir, server_dir, config_file, unit_file, env_file)
//	cluster.nodes -> [names]

// FakeK3sModule returns the `fake` module; playbooks is where
// cluster.run() finds playbooks by name (nil: run is unavailable).
func FakeK3sModule(playbooks fs.FS) *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "fake", Members: starlark.StringDict{
		"cluster": starlark.NewBuiltin("fake.cluster", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			return newFakeClusterValue(th, b, args, kwargs, playbooks)
		}),
	}}
}

const fakeClustersKey = "caretaker.fake.clusters"

type fakeClusters struct {
	mu  sync.Mutex
	all []*FakeK3sCluster
}

func newFakeClusterValue(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple, playbooks fs.FS) (starlark.Value, error) {
	var (
		o                    FakeK3sOptions
		secure, bug          bool
		sources, nodeVersion *starlark.Dict
	)
	o.Servers, o.Agents = 3, 2
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "servers?", &o.Servers, "agents?", &o.Agents, "version?", &o.Version,
		"scenario?", &o.Scenario, "secure_token?", &secure, "server_source?", &sources, "node_versions?", &nodeVersion, "bootstrap_bug?", &bug); err != nil {
		return nil, err
	}
	if o.Agents == 0 {
		o.Agents = -1
	}
	o.SecureToken = secure
	o.BootstrapBug = bug
	toMap := func(d *starlark.Dict) map[string]string {
		if d == nil {
			return nil
		}
		m := map[string]string{}
		for _, it := range d.Items() {
			k, _ := starlark.AsString(it[0])
			v, _ := starlark.AsString(it[1])
			m[k] = v
		}
		return m
	}
	o.ServerSource, o.NodeVersions = toMap(sources), toMap(nodeVersion)
	fc, err := NewFakeK3sCluster(o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if reg, ok := th.Local(fakeClustersKey).(*fakeClusters); ok {
		reg.mu.Lock()
		reg.all = append(reg.all, fc)
		reg.mu.Unlock()
	}
	return &fakeClusterValue{fc: fc, playbooks: playbooks}, nil
}

// fakeClusterValue is a FakeK3sCluster as a Starlark value.
type fakeClusterValue struct {
	fc        *FakeK3sCluster
	playbooks fs.FS
	runs      int
}

var _ starlark.HasAttrs = (*fakeClusterValue)(nil)

func (v *fakeClusterValue) String() string       { return "fake.cluster()" }
func (v *fakeClusterValue) Type() string         { return "fake.cluster" }
func (v *fakeClusterValue) Freeze()              {}
func (v *fakeClusterValue) Truth() starlark.Bool { return true }
func (v *fakeClusterValue) Hash() (uint32, error) {
	return 0, errors.New("fake.cluster is not hashable")
}

var fakeMethods = []string{"call", "run", "read", "write", "sources", "files", "datastore_ca", "disk_ca", "served_ca", "fault", "state", "restarts", "reloads", "calls", "paths"}

func (v *fakeClusterValue) AttrNames() []string {
	return append(append([]string{}, fakeMethods...), "nodes")
}

func (v *fakeClusterValue) Attr(name string) (starlark.Value, error) {
	if name == "nodes" {
		var names []string
		for _, n := range v.fc.Cluster.Nodes {
			names = append(names, n.Name)
		}
		return strList(names), nil
	}
	for _, m := range fakeMethods {
		if m == name {
			return starlark.NewBuiltin("cluster."+name, func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
				return v.method(th, b, name, args, kwargs)
			}), nil
		}
	}
	return nil, nil
}

func (v *fakeClusterValue) method(th *starlark.Thread, b *starlark.Builtin, name string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	fc := v.fc
	nodeOf := func(s string) (*fakeNode, error) { return fc.node(s) }
	sha := func(b []byte) starlark.Value {
		if b == nil {
			return starlark.None
		}
		return starlark.String(sha256Hex(b))
	}
	switch name {
	case "call":
		var fn starlark.Callable
		node := "server-1"
		check := false
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "node?", &node, "check?", &check); err != nil {
			return nil, err
		}
		return v.call(fn, node, check)
	case "run":
		var (
			pb     string
			params *starlark.Dict
			check  bool
			limit  string
		)
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "playbook", &pb, "params?", &params, "check?", &check, "limit?", &limit); err != nil {
			return nil, err
		}
		return v.run(pb, params, check, limit)
	}
	var node string
	rest := []any{}
	switch name {
	case "write":
		var p, data string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node", &node, "path", &p, "data", &data); err != nil {
			return nil, err
		}
		n, err := nodeOf(node)
		if err != nil {
			return nil, err
		}
		fc.mu.Lock()
		defer fc.mu.Unlock()
		mode := fs.FileMode(0o644)
		if fi, err := n.ex.Stat(context.Background(), p); err == nil {
			mode = fi.Mode
		}
		n.ex.SetFile(p, []byte(data), mode)
		return starlark.None, nil
	case "read", "fault":
		var s string
		second := "path"
		if name == "fault" {
			second = "kind"
		}
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node", &node, second, &s); err != nil {
			return nil, err
		}
		rest = append(rest, s)
	case "datastore_ca":
		if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := fc.Datastore(ctx)
		if err != nil {
			return nil, err
		}
		return sha(d[k3s.KeyServerCA].Content), nil
	default:
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node", &node); err != nil {
			return nil, err
		}
	}
	n, err := nodeOf(node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	switch name {
	case "read":
		data, ok := n.ex.File(rest[0].(string))
		if !ok {
			return starlark.None, nil
		}
		return starlark.String(data), nil
	case "fault":
		switch f := rest[0].(string); f {
		case "fail-start":
			n.fault = f
		case "clear", "":
			n.fault = ""
		default:
			return nil, fmt.Errorf("%s: unknown fault %q (fail-start or clear)", b.Name(), f)
		}
		return starlark.None, nil
	case "sources":
		src := n.sources()
		d := starlark.NewDict(4)
		add := func(p string, data []byte) {
			if data != nil {
				d.SetKey(starlark.String(p), starlark.String(data))
			}
		}
		add(src.UnitPath, src.Unit)
		add(src.ConfigPath, src.Config)
		for _, f := range append(append(append([]k3s.NamedFile{}, src.UnitDropIns...), src.DropIns...), src.EnvFiles...) {
			add(f.Path, f.Data)
		}
		return d, nil
	case "files":
		d := starlark.NewDict(64)
		for _, p := range n.ex.Files() {
			data, _ := n.ex.File(p)
			fi, _ := n.ex.Stat(context.Background(), p)
			d.SetKey(starlark.String(p), starlark.String(fmt.Sprintf("%s %o", sha256Hex(data), fi.Mode.Perm())))
		}
		return d, nil
	case "disk_ca":
		if n.n.Role == inventory.RoleAgent {
			return sha(n.file(n.dd() + "/agent/server-ca.crt")), nil
		}
		return sha(n.file(n.sd() + "/" + k3s.PathServerCA)), nil
	case "served_ca":
		return sha(n.cacerts), nil
	case "state":
		return starlark.String(n.state), nil
	case "restarts":
		return starlark.MakeInt(n.restarts), nil
	case "reloads":
		return starlark.MakeInt(n.reloads), nil
	case "calls":
		return strList(n.ex.Calls()), nil
	case "paths":
		k := n.n.K3s
		return structOf("paths", starlark.StringDict{
			"data_dir": starlark.String(k.DataDir), "server_dir": starlark.String(n.sd()), "config_file": starlark.String(k.ConfigFile),
			"unit_file": starlark.String(k.UnitFile), "env_file": starlark.String(k.UnitFile + ".env"),
		}), nil
	}
	return nil, fmt.Errorf("%s: unknown method", b.Name())
}

// collector records the events of a nested run.
type collector struct {
	mu       sync.Mutex
	statuses map[string]string
	errs     map[string]string
	output   []string
	notes    []string
	done     runner.RunDone
}

func (c *collector) Emit(e runner.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e := e.(type) {
	case runner.StepDone:
		c.statuses[e.StepName+"/"+e.Node] = string(e.Status)
		if e.Error != "" {
			c.errs[e.StepName+"/"+e.Node] = e.Error + "\n" + e.Detail
		} else if e.Reason != "" {
			c.errs[e.StepName+"/"+e.Node] = e.Reason
		}
	case runner.OutputLine:
		c.output = append(c.output, e.Node+" | "+e.Text)
	case runner.Note:
		c.notes = append(c.notes, e.Text)
	case runner.RunDone:
		c.done = e
	}
}

func dictOf(m map[string]string) *starlark.Dict {
	d := starlark.NewDict(len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.SetKey(starlark.String(k), starlark.String(m[k]))
	}
	return d
}

func (v *fakeClusterValue) execute(plan *runner.Plan, check bool) (*collector, error) {
	v.runs++
	col := &collector{statuses: map[string]string{}, errs: map[string]string{}}
	run := runner.NewRun(plan, runner.RunOptions{
		RunID:     fmt.Sprintf("%s-%s-%d", time.Now().UTC().Format("20060102-150405"), plan.Playbook, v.runs),
		StateDir:  v.fc.StateDir,
		Check:     check,
		AutoYes:   true,
		Pool:      v.fc.Pool(),
		NodeValue: NodeValue,
		Sink:      col,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := run.Execute(ctx)
	return col, err
}

// call runs fn(node) as the one step of a run on node.
func (v *fakeClusterValue) call(fn starlark.Callable, node string, check bool) (starlark.Value, error) {
	var target *inventory.Node
	for _, n := range v.fc.Cluster.Nodes {
		if n.Name == node {
			target = n
		}
	}
	if target == nil {
		return nil, fmt.Errorf("cluster.call: no node %q", node)
	}
	var got starlark.Value = starlark.None
	body := starlark.NewBuiltin("call", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		r, err := starlark.Call(th, fn, args, kwargs)
		if err == nil {
			got = r
		}
		return r, err
	})
	nodes := append([]*inventory.Node(nil), v.fc.Cluster.Nodes...)
	inventory.SortNodes(nodes)
	plan := &runner.Plan{Playbook: "call", Cluster: v.fc.Cluster, Nodes: nodes,
		Steps: []*runner.Step{{Index: 0, Name: "call", Selector: node, Nodes: []*inventory.Node{target}, Mutates: true, Body: body}}}
	col, _ := v.execute(plan, check)
	status := col.statuses["call/"+node]
	return structOf("call", starlark.StringDict{
		"status": starlark.String(status),
		"value":  got,
		"error":  starlark.String(col.errs["call/"+node]),
		"output": strList(col.output),
		"notes":  strList(col.notes),
	}), nil
}

// run runs a playbook of v.playbooks against the cluster.
func (v *fakeClusterValue) run(name string, params *starlark.Dict, check bool, limit string) (starlark.Value, error) {
	if v.playbooks == nil {
		return nil, errors.New("cluster.run: no playbooks to run here")
	}
	pre, err := Predeclared()
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
	file := strings.TrimSuffix(name, ".star") + ".star"
	plan, err := runner.Load(runner.LoadOptions{Name: strings.TrimSuffix(name, ".star"), Path: file, FS: v.playbooks, FSPrefix: "playbooks",
		Params: ps, Predeclared: pre, Cluster: v.fc.Cluster, Limit: limit})
	if err != nil {
		return structOf("run", starlark.StringDict{"status": starlark.String("error"), "error": starlark.String(err.Error()),
			"statuses": starlark.NewDict(0), "errors": starlark.NewDict(0), "output": strList(nil), "notes": strList(nil)}), nil
	}
	col, err := v.execute(plan, check)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return structOf("run", starlark.StringDict{
		"status":   starlark.String(col.done.Status),
		"error":    starlark.String(msg),
		"statuses": dictOf(col.statuses),
		"errors":   dictOf(col.errs),
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
// the assert module and the fake module, then calls each of its test_*
// functions (in name order) with no arguments. Clusters a test makes are
// closed after it. load() reads modules from fsys (may be nil).
func RunStarTestFile(filename string, src []byte, fsys fs.FS) ([]StarTestResult, error) {
	pre, err := Predeclared()
	if err != nil {
		return nil, err
	}
	pre["fake"] = FakeK3sModule(fsys)
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, Recursion: true}
	var load func(th *starlark.Thread, module string) (starlark.StringDict, error)
	cache := map[string]starlark.StringDict{}
	load = func(th *starlark.Thread, module string) (starlark.StringDict, error) {
		if g, ok := cache[module]; ok {
			return g, nil
		}
		if fsys == nil {
			return nil, fmt.Errorf("load(%q): no module directory", module)
		}
		b, err := fs.ReadFile(fsys, path.Clean(module))
		if err != nil {
			return nil, err
		}
		t := &starlark.Thread{Name: "load " + module, Load: load}
		g, err := starlark.ExecFileOptions(opts, t, module, b, pre)
		if err != nil {
			return nil, err
		}
		cache[module] = g
		return g, nil
	}
	th := &starlark.Thread{Name: filename, Load: load}
	globals, err := starlark.ExecFileOptions(opts, th, filename, src, pre)
	if err != nil {
		return nil, err
	}
	var names []string
	for name, v := range globals {
		if _, ok := v.(starlark.Callable); ok && strings.HasPrefix(name, "test_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []StarTestResult
	for _, name := range names {
		reg := &fakeClusters{}
		t := &starlark.Thread{Name: name, Load: load}
		t.SetLocal(fakeClustersKey, reg)
		start := time.Now()
		_, err := starlark.Call(t, globals[name].(starlark.Callable), nil, nil)
		var ee *starlark.EvalError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%s", ee.Backtrace())
		}
		for _, fc := range reg.all {
			fc.Close()
		}
		out = append(out, StarTestResult{Name: name, Err: err, Duration: time.Since(start)})
	}
	return out, nil
}
