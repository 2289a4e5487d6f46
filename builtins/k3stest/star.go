package k3stest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// Module returns the Starlark `fake` module, the .star side of Cluster for
// tests of the k3s module and of the shipped playbooks. Its clusters use
// env's etcd; playbooks is where cluster.run() finds playbooks by name
// (nil: run is unavailable). Clusters made on a thread RunStarTestFile
// runs are closed after the test; elsewhere they live as long as env.
//
//	def test_strip():
//	    c = fake.cluster(servers=3, agents=1)
//	    r = c.call(lambda node: k3s.strip_server(node), node="server-1")
//	    assert.eq(r.status, "changed")
//	    r = c.run("rotate-ca", params={"workaround": "auto"})
//	    assert.eq(r.status, "ok")
//
// fake.cluster(servers=3, agents=2, version="v1.30.10+k3s1",
//
//	scenario="init-replaced", secure_token=False,
//	server_source={}, node_versions={}, bootstrap_bug=False,
//	labels={"agent-1": {"zone": "a"}}, groups={"server-1": ["etcd"]},
//	leaf_age_days={"server-2": 300}) -> cluster
//
// takes the fields of Options (agents=0: none). bootstrap_bug=True makes
// every server serve bootstrap data from its disk whatever its version
// says (a patched build with bug #11233). A cluster has:
//
//	cluster.call(fn, node="server-1", check=False) -> struct(status, value, error, output, notes)
//	    runs fn(node) as the body of a one-step run on node
//	cluster.run(playbook, params={}, check=False, limit="") ->
//	    struct(status, error, statuses, errors, kinds, output, notes): a
//	    shipped playbook run against the cluster with --yes; statuses,
//	    errors and kinds (errs.Kind of a failure: drift, unreachable, ...)
//	    are keyed "step/node", output lines are "node | text"
//	cluster.read(node, path) -> str or None    cluster.write(node, path, data)
//	cluster.sources(node) -> {path: content}   the node's config sources
//	cluster.files(node) -> {path: "sha256 mode"}  every file of the node
//	cluster.datastore_ca() / disk_ca(node) / served_ca(node) -> sha256
//	cluster.fault(node, "fail-start"|"hang-start"|"clear")  cluster.state(node) -> str
//	cluster.restarts(node) / reloads(node) -> int   cluster.calls(node) -> [str]
//	cluster.paths(node) -> struct(data_dir, server_dir, config_file, unit_file, env_file)
//	cluster.on(pattern, stdout="", stderr="", code=0, node="")
//	    stubs commands the fake does not know (regular expression; every
//	    node when node is empty); an unknown command fails with 127
//	cluster.nodes -> [names]
//	cluster.password() -> str   the password of the token the datastore is
//	    encrypted with now (the cluster token's passphrase)
//	cluster.controller_file(data, mode=0o600) -> path   a file on the controller
//	cluster.local(path) -> struct(data, mode) or None   a controller file
//	cluster.k8s_apply(obj) -> dict   create or replace an object of the
//	    cluster's Kubernetes API (the lab's simulated API, internal/kubesim)
//	cluster.k8s_get(kind, name, namespace="") -> dict or None
//
// and fake.b64encode(s) / fake.b64decode(s) for caBundle and Secret data.
func Module(env *Env, playbooks fs.FS) *starlarkstruct.Module {
	members := b64Builtins()
	members["cluster"] = builtins.NewBuiltin("fake.cluster", builtins.WhenTest, func(bc *builtins.Call) (any, error) {
		return newClusterValue(env, bc, playbooks)
	})
	return &starlarkstruct.Module{Name: "fake", Members: members}
}

// clustersKey is the thread-local key of the *clusterRegistry that
// collects the clusters a test makes, for RunStarTestFile to close them.
const clustersKey = "caretaker.k3stest.clusters"

type clusterRegistry struct {
	mu  sync.Mutex
	all []*Cluster
}

func (r *clusterRegistry) add(c *Cluster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, c)
}

func (r *clusterRegistry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.all {
		c.Close()
	}
	r.all = nil
}

func newClusterValue(env *Env, bc *builtins.Call, playbooks fs.FS) (starlark.Value, error) {
	var (
		o                    Options
		sources, nodeVersion *starlark.Dict
		labels, groups       *starlark.Dict
		leafAge              *starlark.Dict
	)
	o.Servers, o.Agents = 3, 2
	if err := bc.Unpack("servers?", &o.Servers, "agents?", &o.Agents, "version?", &o.Version,
		"scenario?", &o.Scenario, "secure_token?", &o.SecureToken, "server_source?", &sources, "node_versions?", &nodeVersion,
		"bootstrap_bug?", &o.BootstrapBug, "labels?", &labels, "groups?", &groups, "leaf_age_days?", &leafAge); err != nil {
		return nil, err
	}
	if leafAge != nil {
		o.LeafAgeDays = map[string]int{}
		for _, it := range leafAge.Items() {
			k, _ := starlark.AsString(it[0])
			var d int
			if err := starlark.AsInt(it[1], &d); err != nil {
				return nil, fmt.Errorf("%s: leaf_age_days[%q]: %w", bc.Name(), k, err)
			}
			o.LeafAgeDays[k] = d
		}
	}
	var err error
	if o.Labels, err = nodeLabels(labels); err != nil {
		return nil, fmt.Errorf("%s: labels: %w", bc.Name(), err)
	}
	if o.Groups, err = nodeGroups(groups); err != nil {
		return nil, fmt.Errorf("%s: groups: %w", bc.Name(), err)
	}
	if o.Agents == 0 {
		o.Agents = -1
	}
	o.ServerSource, o.NodeVersions = stringMap(sources), stringMap(nodeVersion)
	c, err := NewCluster(env, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bc.Name(), err)
	}
	if reg, ok := bc.Thread().Local(clustersKey).(*clusterRegistry); ok {
		reg.add(c)
	}
	return &clusterValue{c: c, playbooks: playbooks}, nil
}

// clusterValue is a Cluster as a Starlark value.
type clusterValue struct {
	c         *Cluster
	playbooks fs.FS
	runs      int
	files     int
}

var _ starlark.HasAttrs = (*clusterValue)(nil)

func (v *clusterValue) String() string       { return "fake.cluster()" }
func (v *clusterValue) Type() string         { return "fake.cluster" }
func (v *clusterValue) Freeze()              {}
func (v *clusterValue) Truth() starlark.Bool { return true }
func (v *clusterValue) Hash() (uint32, error) {
	return 0, errors.New("fake.cluster is not hashable")
}

// clusterMethods are the methods of a fake.cluster value.
func clusterMethods() []string {
	return []string{"call", "run", "read", "write", "sources", "files", "datastore_ca", "disk_ca", "served_ca", "fault", "state", "restarts", "reloads", "calls", "paths", "on",
		"password", "controller_file", "local", "k8s_apply", "k8s_get"}
}

func (v *clusterValue) AttrNames() []string {
	return append(clusterMethods(), "nodes")
}

func (v *clusterValue) Attr(name string) (starlark.Value, error) {
	if name == "nodes" {
		var names []string
		for _, n := range v.c.Inventory.Nodes {
			names = append(names, n.Name)
		}
		return strList(names), nil
	}
	for _, m := range clusterMethods() {
		if m == name {
			return builtins.NewBuiltin("cluster."+name, builtins.WhenTest, func(bc *builtins.Call) (any, error) {
				if name == "k8s_apply" || name == "k8s_get" {
					return v.k8sMethod(bc, name)
				}
				return v.method(bc, name)
			}), nil
		}
	}
	return nil, nil
}

func (v *clusterValue) method(bc *builtins.Call, name string) (starlark.Value, error) {
	c := v.c
	switch name {
	case "call":
		var fn starlark.Callable
		node := "server-1"
		check := false
		if err := bc.Unpack("fn", &fn, "node?", &node, "check?", &check); err != nil {
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
		if err := bc.Unpack("playbook", &pb, "params?", &params, "check?", &check, "limit?", &limit); err != nil {
			return nil, err
		}
		return v.run(pb, params, check, limit)
	case "on":
		return v.on(bc)
	case "password", "controller_file", "local":
		return v.controller(bc, name)
	case "datastore_ca":
		if err := bc.Unpack(); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := c.Datastore(ctx)
		if err != nil {
			return nil, err
		}
		return shaValue(d[k3s.KeyServerCA].Content), nil
	case "write":
		var node, p, data string
		if err := bc.Unpack("node", &node, "path", &p, "data", &data); err != nil {
			return nil, err
		}
		sn, err := c.lookup(node)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		mode := fs.FileMode(0o644)
		if fi, err := sn.ex.Stat(context.Background(), p); err == nil {
			mode = fi.Mode
		}
		sn.ex.SetFile(p, []byte(data), mode)
		return starlark.None, nil
	}
	var node, arg string
	var err error
	switch name {
	case "read":
		err = bc.Unpack("node", &node, "path", &arg)
	case "fault":
		err = bc.Unpack("node", &node, "kind", &arg)
	default:
		err = bc.Unpack("node", &node)
	}
	if err != nil {
		return nil, err
	}
	sn, err := c.lookup(node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bc.Name(), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return sn.attr(bc, name, arg)
}

// on stubs the commands a playbook runs that the fake cluster does not
// know: cluster.on(pattern, stdout="", stderr="", code=0, node="") answers
// every command matching the regular expression on node (all nodes when
// empty) with that output and exit code. Later stubs win.
func (v *clusterValue) on(bc *builtins.Call) (starlark.Value, error) {
	var pattern, stdout, stderr, node string
	code := 0
	if err := bc.Unpack("pattern", &pattern, "stdout?", &stdout, "stderr?", &stderr, "code?", &code, "node?", &node); err != nil {
		return nil, err
	}
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, fmt.Errorf("%s: pattern %q: %w", bc.Name(), pattern, err)
	}
	var targets []*simNode
	if node == "" {
		for _, n := range v.c.Inventory.Nodes {
			targets = append(targets, v.c.nodes[n.Name])
		}
	} else {
		sn, err := v.c.lookup(node)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bc.Name(), err)
		}
		targets = append(targets, sn)
	}
	for _, sn := range targets {
		sn.ex.On(pattern, fake.Reply{Stdout: stdout, Stderr: stderr, Code: code})
	}
	return starlark.None, nil
}

// attr answers the node methods of a fake.cluster (called with the
// cluster's lock held); arg is the path of read and the kind of fault.
func (sn *simNode) attr(bc *builtins.Call, name, arg string) (starlark.Value, error) {
	switch name {
	case "read":
		data, ok := sn.ex.File(arg)
		if !ok {
			return starlark.None, nil
		}
		return starlark.String(data), nil
	case "fault":
		switch arg {
		case "fail-start", "hang-start":
			sn.fault = arg
		case "clear", "":
			sn.fault = ""
		default:
			return nil, fmt.Errorf("%s: unknown fault %q (fail-start, hang-start or clear)", bc.Name(), arg)
		}
		return starlark.None, nil
	case "sources":
		src := sn.sources()
		d := starlark.NewDict(4)
		add := func(p string, data []byte) {
			if data != nil {
				_ = d.SetKey(starlark.String(p), starlark.String(data))
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
		for _, p := range sn.ex.Files() {
			data, _ := sn.ex.File(p)
			fi, _ := sn.ex.Stat(context.Background(), p)
			_ = d.SetKey(starlark.String(p), starlark.String(fmt.Sprintf("%s %o", sha256Hex(data), fi.Mode.Perm())))
		}
		return d, nil
	case "disk_ca":
		if sn.n.Role == inventory.RoleAgent {
			return shaValue(sn.file(sn.dd() + "/agent/server-ca.crt")), nil
		}
		return shaValue(sn.file(sn.sd() + "/" + k3s.PathServerCA)), nil
	case "served_ca":
		return shaValue(sn.cacerts), nil
	case "state":
		return starlark.String(sn.state), nil
	case "restarts":
		return starlark.MakeInt(sn.restarts), nil
	case "reloads":
		return starlark.MakeInt(sn.reloads), nil
	case "calls":
		return strList(sn.ex.Calls()), nil
	case "paths":
		k := sn.n.K3s
		return structOf("paths", starlark.StringDict{
			"data_dir": starlark.String(k.DataDir), "server_dir": starlark.String(sn.sd()), "config_file": starlark.String(k.ConfigFile),
			"unit_file": starlark.String(k.UnitFile), "env_file": starlark.String(k.UnitFile + ".env"),
		}), nil
	}
	return nil, fmt.Errorf("%s: unknown method", bc.Name())
}

// stringMap is a Starlark dict of strings as a Go map (nil for nil).
// nodeLabels converts {"node": {"key": "value"}}.
func nodeLabels(d *starlark.Dict) (map[string]map[string]string, error) {
	if d == nil {
		return nil, nil
	}
	out := map[string]map[string]string{}
	for _, it := range d.Items() {
		node, ok := starlark.AsString(it[0])
		inner, isDict := it[1].(*starlark.Dict)
		if !ok || !isDict {
			return nil, fmt.Errorf("want {node: {key: value}}, got %s: %s", it[0], it[1].Type())
		}
		out[node] = stringMap(inner)
	}
	return out, nil
}

// nodeGroups converts {"node": ["group", ...]}.
func nodeGroups(d *starlark.Dict) (map[string][]string, error) {
	if d == nil {
		return nil, nil
	}
	out := map[string][]string{}
	for _, it := range d.Items() {
		node, ok := starlark.AsString(it[0])
		list, isList := it[1].(*starlark.List)
		if !ok || !isList {
			return nil, fmt.Errorf("want {node: [group, ...]}, got %s: %s", it[0], it[1].Type())
		}
		for i := 0; i < list.Len(); i++ {
			g, ok := starlark.AsString(list.Index(i))
			if !ok {
				return nil, fmt.Errorf("%s: group %s is not a string", node, list.Index(i))
			}
			out[node] = append(out[node], g)
		}
	}
	return out, nil
}

func stringMap(d *starlark.Dict) map[string]string {
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

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// shaValue is the hex SHA-256 of b, or None for nil.
func shaValue(b []byte) starlark.Value {
	if b == nil {
		return starlark.None
	}
	return starlark.String(sha256Hex(b))
}

func structOf(name string, d starlark.StringDict) *starlarkstruct.Struct {
	return starlarkstruct.FromStringDict(starlark.String(name), d)
}

func strList(ss []string) *starlark.List {
	l := starlark.NewList(nil)
	for _, s := range ss {
		_ = l.Append(starlark.String(s)) // a new list is not frozen
	}
	return l
}

// controller answers the cluster methods about the controller's side:
// password (the datastore's token passphrase now), controller_file (a
// file for a -p parameter, 0600 unless mode says otherwise) and local (a
// controller file's content and mode, None when it does not exist).
func (v *clusterValue) controller(bc *builtins.Call, name string) (starlark.Value, error) {
	switch name {
	case "password":
		if err := bc.Unpack(); err != nil {
			return nil, err
		}
		v.c.mu.Lock()
		defer v.c.mu.Unlock()
		return starlark.String(v.c.password), nil
	case "controller_file":
		var data string
		mode := 0o600
		if err := bc.Unpack("data", &data, "mode?", &mode); err != nil {
			return nil, err
		}
		v.files++
		p := filepath.Join(v.c.dir, "controller", fmt.Sprintf("file-%d", v.files))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			return nil, err
		}
		return starlark.String(p), os.Chmod(p, fs.FileMode(mode))
	}
	var p string
	if err := bc.Unpack("path", &p); err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return starlark.None, nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return structOf("local", starlark.StringDict{"data": starlark.String(data), "mode": starlark.MakeInt(int(fi.Mode().Perm()))}), nil
}
