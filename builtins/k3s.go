package builtins

import (
	"fmt"
	"sort"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// K3s is the `k3s` module: the K3s maintenance steps playbooks call. Every
// node argument is a node value or a node name. Every mutating call
// records its undo before it acts, goes through check mode, is idempotent
// (a second call changes nothing and reports ok) and marks the step
// changed when it changed something. Tokens and keys never appear in
// output, errors or notes.
//
//	k3s.facts(node) -> struct          version, role, effective server/token/
//	                                   cluster-init/data-dir with their source,
//	                                   bug gate, service state, CAs on disk
//	k3s.backup_certs(node, name="")    archive certs, creds, token and config
//	                                   sources on the node and the controller
//	k3s.restore(node, backup="", restart=False)
//	                                   put a backup back (latest if no name)
//	k3s.strip_server(node)             remove `server` from every source
//	k3s.restore_server(node)           put it back byte for byte
//	k3s.generate_ca(node, root_cert="", root_key="", intermediate_cert="",
//	                intermediate_key="", force=False)
//	                                   a new CA set, staged on the node
//	k3s.rotate_ca(node, path, force=False)
//	                                   k3s certificate rotate-ca, then check
//	                                   the datastore holds the staged set
//	k3s.restart(node, timeout="3m", check=True)
//	                                   restart and wait until up
//	k3s.datastore(node) -> struct      the decrypted bootstrap data's CAs
//	k3s.verify(nodes=None, expect="", focus=None, live=True, fail=True, quiet=False)
//	                                   every node holds the datastore CA
//	k3s.check(nodes=None, warn_days=120, fail=False)
//	                                   certificate expiry on every node
//	k3s.snapshot(node, name="")        k3s etcd-snapshot save, copied with the
//	                                   token to the controller (0600)
//	k3s.restore_datastore(node, snapshot, token_file="")
//	                                   k3s server --cluster-reset from a snapshot
//	k3s.find_snapshot(node, snapshot, token_file="")
//	                                   where restore_datastore finds it (read-only)
//	k3s.move_database_aside(node)      SD/db -> SD/db-pre-restore-<run> (rejoin)
//	k3s.token(node, save=False)        the server token (redacted everywhere)
//	k3s.update_token(node, token)      new CA hash in the configured token
//	k3s.restore_token(node)            undo update_token byte for byte
//	k3s.check_token_file(path)         a usable new-token file (top level too)
//	k3s.new_token(node, file="")       the new token of a rotation, saved 0600
//	k3s.token_status(nodes=None, token_file="", quiet=False)
//	                                   every node's token against the datastore
//	k3s.rotate_token(node, token_file) k3s token rotate (tokens on stdin)
//	k3s.set_token(node, token_file)    the new token in the node's sources
//	k3s.verify_token(node, token_file, fail=True)
//	                                   the node runs with the new token
var K3s = &starlarkstruct.Module{
	Name: "k3s",
	Members: starlark.StringDict{
		"facts":               NewBuiltin("k3s.facts", WhenStep, k3sFacts),
		"backup_certs":        NewBuiltin("k3s.backup_certs", WhenStep, k3sBackupCerts),
		"restore":             NewBuiltin("k3s.restore", WhenStep, k3sRestore),
		"strip_server":        NewBuiltin("k3s.strip_server", WhenStep, k3sStripServer),
		"restore_server":      NewBuiltin("k3s.restore_server", WhenStep, k3sRestoreServer),
		"generate_ca":         NewBuiltin("k3s.generate_ca", WhenStep, k3sGenerateCA),
		"rotate_ca":           NewBuiltin("k3s.rotate_ca", WhenStep, k3sRotateCA),
		"restart":             NewBuiltin("k3s.restart", WhenStep, k3sRestart),
		"datastore":           NewBuiltin("k3s.datastore", WhenStep, k3sDatastore),
		"verify":              NewBuiltin("k3s.verify", WhenStep, k3sVerify),
		"check":               NewBuiltin("k3s.check", WhenStep, k3sCheck),
		"snapshot":            NewBuiltin("k3s.snapshot", WhenStep, k3sSnapshot),
		"restore_datastore":   NewBuiltin("k3s.restore_datastore", WhenStep, k3sRestoreDatastore),
		"find_snapshot":       NewBuiltin("k3s.find_snapshot", WhenStep, k3sFindSnapshot),
		"move_database_aside": NewBuiltin("k3s.move_database_aside", WhenStep, k3sMoveDatabaseAside),
		"token":               NewBuiltin("k3s.token", WhenStep, k3sToken),
		"update_token":        NewBuiltin("k3s.update_token", WhenStep, k3sUpdateToken),
		"restore_token":       NewBuiltin("k3s.restore_token", WhenStep, k3sRestoreToken),
		"check_token_file":    NewBuiltin("k3s.check_token_file", WhenAny, k3sCheckTokenFile),
		"new_token":           NewBuiltin("k3s.new_token", WhenStep, k3sNewToken),
		"token_status":        NewBuiltin("k3s.token_status", WhenStep, k3sTokenStatus),
		"rotate_token":        NewBuiltin("k3s.rotate_token", WhenStep, k3sRotateToken),
		"set_token":           NewBuiltin("k3s.set_token", WhenStep, k3sSetToken),
		"verify_token":        NewBuiltin("k3s.verify_token", WhenStep, k3sVerifyToken),
	},
}

// target resolves a node argument (a node value or name; None: the
// step's node) and connects to it.
func (c *Call) target(nodeArg starlark.Value) (*k3sops.Target, error) {
	n, err := resolveNode(c.env, nodeArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	var ex transport.Executor
	if c.env.Node == n {
		ex = c.env.Exec
	}
	return k3sops.NewTarget(c.env.Ctx, c.env, n, ex, c.name)
}

// nodeTarget unpacks an optional first "node" followed by further
// parameters and resolves the node.
func (c *Call) nodeTarget(pairs ...any) (*k3sops.Target, error) {
	var nodeArg starlark.Value = starlark.None
	if err := c.Unpack(append([]any{"node?", &nodeArg}, pairs...)...); err != nil {
		return nil, err
	}
	return c.target(nodeArg)
}

// nodes resolves a nodes argument (None: every node of the run).
func (c *Call) nodes(what string, v starlark.Value) ([]*inventory.Node, error) {
	nodes, err := nodeList(c.env, v)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c.name, what, err)
	}
	return nodes, nil
}

// resolveNode turns a node value or name into the run's node.
func resolveNode(env *runner.Env, v starlark.Value) (*inventory.Node, error) {
	switch x := v.(type) {
	case *Node:
		return x.N, nil
	case starlark.String:
		for _, n := range env.Nodes() {
			if n.Name == string(x) {
				return n, nil
			}
		}
		for _, n := range env.Cluster().Nodes {
			if n.Name == string(x) {
				return n, nil
			}
		}
		return nil, fmt.Errorf("no node named %q in cluster %s", string(x), env.Cluster().Name)
	case starlark.NoneType:
		if env.Node != nil {
			return env.Node, nil
		}
	}
	return nil, fmt.Errorf("want a node or a node name, got %s", v.Type())
}

// nodeList resolves a list of nodes (values, names or selectors); None
// means every node of the run.
func nodeList(env *runner.Env, v starlark.Value) ([]*inventory.Node, error) {
	if v == nil || v == starlark.None {
		return append([]*inventory.Node(nil), env.Nodes()...), nil
	}
	if n, ok := v.(*Node); ok {
		return []*inventory.Node{n.N}, nil
	}
	terms, err := selectorTerms(v)
	if err != nil {
		return nil, err
	}
	var out []*inventory.Node
	seen := map[*inventory.Node]bool{}
	for _, t := range terms {
		t = strings.TrimSpace(t)
		matched := false
		for _, n := range env.Nodes() {
			if n.Matches(t) {
				matched = true
				if !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
		if !matched && t != "" {
			return nil, fmt.Errorf("%q matches no node of the run", t)
		}
	}
	// Keep the run's order (servers first).
	order := map[*inventory.Node]int{}
	for i, n := range env.Nodes() {
		order[n] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return order[out[i]] < order[out[j]] })
	return out, nil
}
