package builtins

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/builtins/k8sops"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// K8s is the `k8s` module: the Kubernetes API of the run's cluster, as its
// admin (a server's own admin client certificate, held in memory),
// through a server's SSH connection to its :6443. node= picks the server
// (default: the step's node when it is a server, else the first server
// that answers). Changes go through check mode and record their undo
// first (rollout restarts cannot be undone and record none).
//
//	k8s.get(kind, name, namespace="", node=None) -> dict | None
//	k8s.list(kind, namespace="", selector="", node=None) -> [dict]
//	k8s.patch(kind, name, patch, namespace="", type="strategic", node=None) -> struct
//	k8s.rollout_restart(kind, name, namespace, node=None)
//	k8s.rollout_status(kind, name, namespace, timeout="5m", fail=True, node=None) -> struct
//	k8s.restart_workloads(namespaces, selector="", kinds=None, wave=5,
//	                      max_unready=0, timeout="5m", node=None) -> struct
//	k8s.trust(previous_roots=[], expect="", update_ca_bundles=False,
//	          refresh_token_secrets=False, quiet=False, node=None) -> struct
//	k8s.refresh_kubeconfigs(previous_roots=[], expect="", node=None) -> [struct]
//	k8s.selector(s) -> str          a checked label selector (also at load time)
var K8s = &starlarkstruct.Module{
	Name: "k8s",
	Members: starlark.StringDict{
		"get":                 NewBuiltin("k8s.get", WhenStep, k8sGet),
		"list":                NewBuiltin("k8s.list", WhenStep, k8sList),
		"patch":               NewBuiltin("k8s.patch", WhenStep, k8sPatch),
		"rollout_restart":     NewBuiltin("k8s.rollout_restart", WhenStep, k8sRolloutRestart),
		"rollout_status":      NewBuiltin("k8s.rollout_status", WhenStep, k8sRolloutStatus),
		"restart_workloads":   NewBuiltin("k8s.restart_workloads", WhenStep, k8sRestartWorkloads),
		"trust":               NewBuiltin("k8s.trust", WhenStep, k8sTrust),
		"refresh_kubeconfigs": NewBuiltin("k8s.refresh_kubeconfigs", WhenStep, k8sRefreshKubeconfigs),
		"selector":            NewBuiltin("k8s.selector", WhenAny, k8sSelector),
	},
}

// client connects to the API through the node argument (None: the step's
// node when it is a server, else the first server that answers).
func (c *Call) client(nodeArg starlark.Value) (*k8sops.Client, error) {
	if nodeArg != nil && nodeArg != starlark.None {
		t, err := c.target(nodeArg)
		if err != nil {
			return nil, err
		}
		if t.Node.Role != inventory.RoleServer {
			return nil, fmt.Errorf("%s: node %s is an agent: the API is reached through a server", c.name, t.Node.Name)
		}
		return k8sops.Connect(c.env.Ctx, t)
	}
	return k8sops.ConnectAny(c.env.Ctx, c.env, c.env.Node, c.name)
}

// k8s.get(kind, name, namespace="", node=None): one object as a dict, or
// None when it does not exist.
func k8sGet(c *Call) (any, error) {
	var (
		kind, name, ns string
		nodeArg        starlark.Value = starlark.None
	)
	if err := c.Unpack("kind", &kind, "name", &name, "namespace?", &ns, "node?", &nodeArg); err != nil {
		return nil, err
	}
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, err
	}
	obj, err := cl.Get(c.env.Ctx, kind, ns, name)
	if obj == nil || err != nil {
		return nil, err
	}
	return obj, nil
}

// k8s.list(kind, namespace="", selector="", node=None): the objects of a
// kind (every namespace when none is given), sorted by namespace and name.
func k8sList(c *Call) (any, error) {
	var (
		kind    string
		o       k8sops.ListOptions
		nodeArg starlark.Value = starlark.None
	)
	if err := c.Unpack("kind", &kind, "namespace?", &o.Namespace, "selector?", &o.Selector, "node?", &nodeArg); err != nil {
		return nil, err
	}
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, err
	}
	return cl.List(c.env.Ctx, kind, o)
}

// k8s.patch(kind, name, patch, namespace="", type="strategic", node=None):
// a merge or strategic merge patch (a dict or a JSON string).
func k8sPatch(c *Call) (any, error) {
	var (
		kind, name, ns string
		patchType      = k8sops.PatchStrategic
		patch          starlark.Value
		nodeArg        starlark.Value = starlark.None
	)
	if err := c.Unpack("kind", &kind, "name", &name, "patch", &patch, "namespace?", &ns, "type?", &patchType, "node?", &nodeArg); err != nil {
		return nil, err
	}
	doc, err := jsonOf(c, patch)
	if err != nil {
		return nil, err
	}
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, err
	}
	return cl.Patch(c.env.Ctx, kind, ns, name, doc, patchType)
}

// jsonOf is a patch argument as JSON: a string as it is, a dict encoded.
func jsonOf(c *Call, v starlark.Value) ([]byte, error) {
	if s, ok := starlark.AsString(v); ok {
		return []byte(s), nil
	}
	if _, ok := v.(*starlark.Dict); !ok {
		return nil, fmt.Errorf("%s: patch: want a dict or a JSON string, got %s", c.name, v.Type())
	}
	out, err := starlark.Call(&starlark.Thread{Name: c.name}, json.Module.Members["encode"], starlark.Tuple{v}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: patch: %w", c.name, err)
	}
	return []byte(string(out.(starlark.String))), nil
}

// k8s.rollout_restart(kind, name, namespace, node=None): as `kubectl
// rollout restart`.
func k8sRolloutRestart(c *Call) (any, error) {
	var (
		kind, name, ns string
		nodeArg        starlark.Value = starlark.None
	)
	if err := c.Unpack("kind", &kind, "name", &name, "namespace", &ns, "node?", &nodeArg); err != nil {
		return nil, err
	}
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, err
	}
	return nil, cl.RolloutRestart(c.env.Ctx, kind, ns, name, time.Now())
}

// k8s.rollout_status(kind, name, namespace, timeout="5m", fail=True,
// node=None): wait for the rollout as `kubectl rollout status`.
func k8sRolloutStatus(c *Call) (any, error) {
	var (
		kind, name, ns string
		timeout                       = Duration(5 * time.Minute)
		fail                          = true
		nodeArg        starlark.Value = starlark.None
	)
	if err := c.Unpack("kind", &kind, "name", &name, "namespace", &ns, "timeout?", &timeout, "fail?", &fail, "node?", &nodeArg); err != nil {
		return nil, err
	}
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, err
	}
	st, err := cl.RolloutStatus(c.env.Ctx, kind, ns, name, time.Duration(timeout))
	if err != nil {
		return nil, err
	}
	if !st.Done && fail {
		return nil, fmt.Errorf("%s: %s %s/%s not rolled out within %s: %s", c.name, st.Kind, ns, name, time.Duration(timeout), st.Message)
	}
	return st, nil
}

// k8s.restart_workloads(namespaces, selector="", kinds=None, wave=5,
// max_unready=0, timeout="5m", node=None): restart in waves, stopping at
// the first wave that does not become ready.
func k8sRestartWorkloads(c *Call) (any, error) {
	var (
		nsArg, kindsArg starlark.Value = starlark.None, starlark.None
		sel             k8sops.WorkloadSelection
		o                              = k8sops.WaveOptions{Wave: 5}
		timeout                        = Duration(5 * time.Minute)
		nodeArg         starlark.Value = starlark.None
	)
	if err := c.Unpack("namespaces", &nsArg, "selector?", &sel.Selector, "kinds?", &kindsArg, "wave?", &o.Wave,
		"max_unready?", &o.MaxUnready, "timeout?", &timeout, "node?", &nodeArg); err != nil {
		return nil, err
	}
	var err error
	if sel.Namespaces, err = stringsOf(c, "namespaces", nsArg); err != nil {
		return nil, err
	}
	if len(sel.Namespaces) == 0 {
		return nil, fmt.Errorf("%s: namespaces: give the namespaces to restart workloads in (\"*\" for every namespace)", c.name)
	}
	if sel.Kinds, err = stringsOf(c, "kinds", kindsArg); err != nil {
		return nil, err
	}
	if o.Wave < 1 || o.MaxUnready < 0 {
		return nil, fmt.Errorf("%s: wave must be at least 1 and max_unready at least 0 (got %d, %d)", c.name, o.Wave, o.MaxUnready)
	}
	o.Timeout = time.Duration(timeout)
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, err
	}
	return cl.RestartWorkloads(c.env.Ctx, sel, o)
}

// stringsOf reads a str ("a,b") or a list of str; None is empty.
func stringsOf(c *Call, what string, v starlark.Value) ([]string, error) {
	if v == nil || v == starlark.None {
		return nil, nil
	}
	terms, err := selectorTerms(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c.name, what, err)
	}
	var out []string
	for _, t := range terms {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out, nil
}

// k8s.trust(previous_roots=[], update_ca_bundles=False,
// refresh_token_secrets=False, quiet=False, node=None): the trust bundles
// of the cluster's API objects judged against the current and previous
// roots; the opt-in refreshes.
func k8sTrust(c *Call) (any, error) {
	var (
		prevArg starlark.Value = starlark.None
		o       k8sops.RefreshOptions
		quiet   bool
		expect  string
		nodeArg starlark.Value = starlark.None
	)
	if err := c.Unpack("previous_roots?", &prevArg, "expect?", &expect, "update_ca_bundles?", &o.CABundles, "refresh_token_secrets?", &o.TokenSecrets,
		"quiet?", &quiet, "node?", &nodeArg); err != nil {
		return nil, err
	}
	cl, roots, err := c.clientAndRoots(nodeArg, prevArg, expect)
	if err != nil {
		return nil, err
	}
	rep, err := cl.Trust(c.env.Ctx, roots)
	if err != nil {
		return nil, err
	}
	if o.CABundles || o.TokenSecrets {
		err = cl.RefreshTrust(c.env.Ctx, roots, rep, o)
	}
	if !quiet {
		for _, l := range strings.Split(rep.Table, "\n") {
			c.env.Output(runner.StreamStdout, l)
		}
	}
	return rep, err
}

// clientAndRoots connects and reads the roots trust is judged by: the
// server's CA bundle now and the previous roots given; when expect (the
// sha256 of the CA bundle a rotation goes to) is given and the server does
// not hold it yet, as it will be after the rotation.
func (c *Call) clientAndRoots(nodeArg, prevArg starlark.Value, expect string) (*k8sops.Client, *k8sops.Roots, error) {
	prev, err := stringsOf(c, "previous_roots", prevArg)
	if err != nil {
		return nil, nil, err
	}
	cl, err := c.client(nodeArg)
	if err != nil {
		return nil, nil, err
	}
	var roots *k8sops.Roots
	if sum := sha256.Sum256(cl.ServerCA); expect != "" && hex.EncodeToString(sum[:]) != expect {
		roots, err = k8sops.PlannedRoots(cl.ServerCA)
	} else {
		roots, err = k8sops.RootsFrom(cl.ServerCA, prev)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", c.name, cl.Server.Node.Name, err)
	}
	return cl, roots, nil
}

// k8s.refresh_kubeconfigs(previous_roots=[], node=None): rewrite the
// inventory's kubeconfigs that trust only the previous root.
func k8sRefreshKubeconfigs(c *Call) (any, error) {
	var (
		prevArg, nodeArg starlark.Value = starlark.None, starlark.None
		expect           string
	)
	if err := c.Unpack("previous_roots?", &prevArg, "expect?", &expect, "node?", &nodeArg); err != nil {
		return nil, err
	}
	paths := c.env.Cluster().Kubeconfigs
	if len(paths) == 0 {
		return []k8sops.KubeconfigResult{}, nil
	}
	cl, roots, err := c.clientAndRoots(nodeArg, prevArg, expect)
	if err != nil {
		return nil, err
	}
	creds, err := k3sops.ReadAdminCredentials(c.env.Ctx, cl.Server)
	if err != nil {
		return nil, err
	}
	return cl.RefreshKubeconfigs(c.env.Ctx, paths, roots, creds)
}

// k8s.selector(s): s checked as a label selector and returned normalized;
// a pure function, callable when the playbook loads.
func k8sSelector(c *Call) (any, error) {
	var s string
	if err := c.Unpack("s", &s); err != nil {
		return nil, err
	}
	sel, err := k8sops.ParseSelector(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return sel.String(), nil
}
