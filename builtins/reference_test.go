package builtins_test

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/builtins/k3stest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// probeKw is a keyword no builtin takes. A call with a documented keyword
// followed by it must fail on it: that proves the documented keyword (and
// its documented default) was accepted, and stops the call before it acts.
const probeKw = "caretaker_reference_probe"

// sentinel is a value no typed parameter accepts.
type sentinel struct{}

func (sentinel) String() string        { return "sentinel" }
func (sentinel) Type() string          { return "sentinel" }
func (sentinel) Freeze()               {}
func (sentinel) Truth() starlark.Bool  { return true }
func (sentinel) Hash() (uint32, error) { return 0, nil }

var atMostRe = regexp.MustCompile(`got 64 arguments, want (?:at most )?(\d+)`)

// argsUnchecked are builtins that do not unpack their arguments.
var argsUnchecked = map[string]bool{"run_id": true}

// probes collects what the probes found, from any thread.
type probes struct {
	mu       sync.Mutex
	problems []string
	probed   map[string]bool
}

func (p *probes) add(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

func (p *probes) done(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probed[name] = true
}

// call probes one builtin against its entry: the number of parameters
// (starlark's "want at most N" for 64 arguments) and every documented
// keyword with its documented default.
func (p *probes) call(th *starlark.Thread, fn starlark.Value, e *builtins.RefEntry) {
	p.done(e.Name)
	c, ok := fn.(starlark.Callable)
	if !ok {
		p.add("%s: documented as a function, but it is a %s", e.Name, fn.Type())
		return
	}
	variadic, want := false, 0
	for _, prm := range e.Params {
		variadic = variadic || prm.Variadic
		if !prm.KwOnly {
			want++
		}
	}
	if !variadic && !argsUnchecked[e.Name] {
		args := make(starlark.Tuple, 64)
		for i := range args {
			args[i] = sentinel{}
		}
		_, err := starlark.Call(th, c, args, nil)
		if m := atMostRe.FindStringSubmatch(errText(err)); m == nil {
			p.add("%s with 64 arguments: %v (want starlark's \"want at most N\")", e.Name, err)
		} else if m[1] != strconv.Itoa(want) {
			p.add("%s takes %s positional parameters, the reference documents %d", e.Name, m[1], want)
		}
	}
	for _, prm := range e.Params {
		if prm.Variadic || prm.Positional {
			continue
		}
		p.keyword(th, c, e, prm)
	}
}

func (p *probes) keyword(th *starlark.Thread, c starlark.Callable, e *builtins.RefEntry, prm builtins.RefParam) {
	var v starlark.Value = sentinel{}
	if prm.Default != "" && prm.Default != "..." {
		var err error
		if v, err = starlark.EvalOptions(syntax.LegacyFileOptions(), th, "default", prm.Default, nil); err != nil {
			p.add("%s(%s=%s): the documented default is not Starlark: %v", e.Name, prm.Name, prm.Default, err)
			return
		}
	}
	_, err := starlark.Call(th, c, nil, []starlark.Tuple{{starlark.String(prm.Name), v}, {starlark.String(probeKw), starlark.None}})
	msg := strings.ReplaceAll(errText(err), `"`, "")
	switch {
	case strings.Contains(msg, "unexpected keyword argument "+probeKw):
	case strings.Contains(msg, "unexpected keyword argument "+prm.Name):
		p.add("%s does not take the documented keyword %s: %s", e.Name, prm.Name, msg)
	case prm.Default == "" && strings.Contains(msg, "for parameter "+prm.Name+":"):
		// Required: the name was accepted, the sentinel value refused.
	default:
		p.add("%s(%s=%s, %s=None): %s (want it to fail on %s only)", e.Name, prm.Name, v, probeKw, msg, probeKw)
	}
}

// fields compares a runtime struct with a documented one: every field
// documented, and every documented field there unless it may be omitted.
func (p *probes) fields(ref *builtins.Reference, name string, v starlark.Value) {
	p.done("struct " + name)
	s := ref.Struct(name)
	st, ok := v.(*starlarkstruct.Struct)
	if s == nil || !ok {
		p.add("struct %s: documented %v, runtime value %s", name, s != nil, v.Type())
		return
	}
	got := map[string]bool{}
	for _, n := range st.AttrNames() {
		got[n] = true
	}
	for _, f := range s.Fields {
		if !got[f.Name] && !f.Omitted {
			p.add("struct %s: documented field %s is not in the runtime value %s", name, f.Name, st)
		}
		delete(got, f.Name)
	}
	for n := range got {
		p.add("struct %s: the runtime value has field %s, which the reference does not document", name, n)
	}
}

func errText(err error) string {
	if err == nil {
		return "<no error>"
	}
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		return ee.Msg
	}
	return err.Error()
}

// resolve finds the value a reference name denotes: a global, a module
// member, or an attribute of the node or cluster value given.
func resolve(pre starlark.StringDict, values map[string]starlark.Value, name string) (starlark.Value, error) {
	head, tail, dotted := strings.Cut(name, ".")
	v, ok := values[head]
	if !ok {
		v = pre[head]
	}
	if v == nil {
		return nil, fmt.Errorf("%s: no such global", name)
	}
	if !dotted {
		return v, nil
	}
	ha, ok := v.(starlark.HasAttrs)
	if !ok {
		return nil, fmt.Errorf("%s: %s has no attributes", name, head)
	}
	a, err := ha.Attr(tail)
	if err != nil || a == nil {
		return nil, fmt.Errorf("%s: no such attribute (%v)", name, err)
	}
	return a, nil
}

// starlarkType is the Starlark type name of a documented attribute type.
func starlarkType(t string) string {
	base, _, _ := strings.Cut(t, "[")
	if base == "str" {
		return "string"
	}
	return base
}

// probeScript runs a fake cluster, probes its methods, then probes every
// step builtin from inside a step and the fake results.
const probeScript = `
c = fake.cluster(servers = 1, agents = 1)
probe_cluster(c)
r = c.call(probe_step, node = "server-1")
probe_struct("fake_call", r)
if r.status not in ("ok", "changed"):
    fail("the probe step did not run: %s: %s" % (r.status, r.error))
probe_struct("fake_run", c.run("probe"))
probe_struct("fake_paths", c.paths("server-1"))
`

// TestReferenceMatchesTheBuiltins: every global, module member, node
// attribute and fake cluster method has an entry and every entry a real
// builtin; every builtin takes exactly the documented parameters by the
// documented keywords and defaults; node attributes have their documented
// types; the structs node.run, node.stat, k3s.* and the fake cluster
// return have exactly the documented fields.
func TestReferenceMatchesTheBuiltins(t *testing.T) {
	ref := builtins.APIReference()
	pre, err := builtins.Predeclared()
	if err != nil {
		t.Fatal(err)
	}
	fake := k3stest.Module(env, fstest.MapFS{"probe.star": {Data: []byte(`step("s", lambda node: None, mutates = False)`)}})
	pre["fake"] = fake
	real := map[string]bool{}
	for name, v := range pre {
		if m, ok := v.(*starlarkstruct.Module); ok {
			if s := ref.Section(name); s == nil || s.Module != name {
				t.Errorf("module %s has no section in the reference", name)
			}
			for k := range m.Members {
				real[name+"."+k] = true
			}
			continue
		}
		real[name] = true
	}
	for _, n := range builtins.NewNode(&inventory.Node{}).AttrNames() {
		real["node."+n] = true
	}
	p := &probes{probed: map[string]bool{}}
	pre["probe_cluster"] = starlark.NewBuiltin("probe_cluster", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		cluster := args[0].(starlark.HasAttrs)
		for _, n := range cluster.AttrNames() {
			p.mu.Lock()
			real["cluster."+n] = true
			p.mu.Unlock()
		}
		probeSection(th, p, ref, pre, map[string]starlark.Value{"cluster": cluster}, "fake")
		return starlark.None, nil
	})
	pre["probe_step"] = starlark.NewBuiltin("probe_step", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		values := map[string]starlark.Value{"node": args[0]}
		for _, s := range []string{"globals", "node", "k3s", "k8s", "json", "assert"} {
			probeSection(th, p, ref, pre, values, s)
		}
		return starlark.None, probeResults(th, p, ref, pre, args[0])
	})
	pre["probe_struct"] = starlark.NewBuiltin("probe_struct", func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		p.fields(ref, string(args[0].(starlark.String)), args[1])
		return starlark.None, nil
	})
	th := &starlark.Thread{Name: "reference probe"}
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, Recursion: true}
	if _, err := starlark.ExecFileOptions(opts, th, "probe.star", probeScript, pre); err != nil {
		t.Fatalf("probe script: %v", err)
	}
	for _, problem := range p.problems {
		t.Error(problem)
	}
	var missing []string
	for n := range real {
		if _, e := ref.Entry(n); e == nil && !strings.HasPrefix(n, "probe_") && n != "fake" {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("%s exists but has no entry in the reference (builtins/reference_*.go)", n)
	}
	for _, s := range ref.Sections {
		for _, e := range s.Entries {
			if e.When != builtins.WhenLoad && !p.probed[e.Name] {
				t.Errorf("%s: the probe never reached it", e.Name)
			}
		}
	}
	for _, s := range []string{"result", "stat", "facts", "check", "cert", "verify", "row", "datastore", "datastore_file", "token", "fake_call", "fake_run", "fake_paths"} {
		if !p.probed["struct "+s] {
			t.Errorf("struct %s: the probe never compared it", s)
		}
	}
}

// probeSection probes every entry of a section except the load-time ones.
func probeSection(th *starlark.Thread, p *probes, ref *builtins.Reference, pre starlark.StringDict, values map[string]starlark.Value, section string) {
	s := ref.Section(section)
	if s == nil {
		p.add("no section %s", section)
		return
	}
	for i := range s.Entries {
		e := &s.Entries[i]
		if e.When == builtins.WhenLoad {
			continue
		}
		v, err := resolve(pre, values, e.Name)
		if err != nil {
			p.add("the reference documents %s, which does not exist: %v", e.Name, err)
			continue
		}
		if !e.Attr {
			p.call(th, v, e)
			continue
		}
		p.done(e.Name)
		if want := starlarkType(e.Returns); v.Type() != want {
			p.add("%s is a %s, documented as %s", e.Name, v.Type(), e.Returns)
		}
	}
}

// probeResults calls read-only builtins (and node.write on a scratch
// file) on the fake cluster and compares their results' fields.
func probeResults(th *starlark.Thread, p *probes, ref *builtins.Reference, pre starlark.StringDict, node starlark.Value) error {
	const src = `
def results(node, struct):
    struct("result", node.run("true", changes = False, check = False))
    node.write("/var/tmp/caretaker-probe", "x")
    struct("stat", node.stat("/var/tmp/caretaker-probe"))
    struct("facts", k3s.facts(node))
    c = k3s.check(quiet = True)
    struct("check", c)
    struct("cert", c.rows[0])
    v = k3s.verify(quiet = True, fail = False)
    struct("verify", v)
    struct("row", v.rows[0])
    d = k3s.datastore(node)
    struct("datastore", d)
    struct("datastore_file", d.files.values()[0])
    struct("token", k3s.token(node))
`
	g, err := starlark.ExecFileOptions(&syntax.FileOptions{}, th, "results.star", src, pre)
	if err != nil {
		return err
	}
	record := starlark.NewBuiltin("struct", func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		p.fields(ref, string(args[0].(starlark.String)), args[1])
		return starlark.None, nil
	})
	_, err = starlark.Call(th, g["results"], starlark.Tuple{node, record}, nil)
	return err
}

// TestReferenceLoadBuiltins probes step, param and describe the same way,
// at a playbook's top level: a documented load-time builtin that does not
// exist makes the playbook fail to load ("undefined").
func TestReferenceLoadBuiltins(t *testing.T) {
	ref := builtins.APIReference()
	var entries []*builtins.RefEntry
	var names []string
	for _, s := range ref.Sections {
		for i := range s.Entries {
			if e := &s.Entries[i]; e.When == builtins.WhenLoad {
				entries, names = append(entries, e), append(names, e.Name)
			}
		}
	}
	if len(entries) != 3 {
		t.Errorf("load-time entries %v: want step, param and describe", names)
	}
	pre, err := builtins.Predeclared()
	if err != nil {
		t.Fatal(err)
	}
	p := &probes{probed: map[string]bool{}}
	pre["probe_load"] = starlark.NewBuiltin("probe_load", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		for i, e := range entries {
			p.call(th, args[i], e)
		}
		return starlark.None, nil
	})
	src := "probe_load(" + strings.Join(names, ", ") + ")\nstep(\"probe\", lambda node: None)\n"
	inv, err := inventory.Parse("inv.yaml", []byte(starInventory))
	if err != nil {
		t.Fatal(err)
	}
	_, err = runner.Load(runner.LoadOptions{Path: "probe.star", FS: fstest.MapFS{"probe.star": {Data: []byte(src)}}, Predeclared: pre, Cluster: inv.Clusters[0]})
	if err != nil {
		t.Fatalf("load the probe playbook: %v", err)
	}
	for _, problem := range p.problems {
		t.Error(problem)
	}
	for _, n := range names {
		if !p.probed[n] {
			t.Errorf("%s was not probed", n)
		}
	}
}
