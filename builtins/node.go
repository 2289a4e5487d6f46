package builtins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// Node is the Starlark value a step body receives: one node of the
// inventory, with attributes describing it and methods that act on it.
//
//	node.name, node.address, node.role, node.cluster, node.groups, node.labels,
//	node.sudo, node.data_dir, node.server_dir, node.config_file,
//	node.unit_file, node.env_files, node.service, node.kubeconfig,
//	node.etcd_endpoint, node.supervisor_endpoint
//
//	node.run(cmd, changes=True, sudo=None, check=True, stdin=None, timeout="", quiet=False, undo="")
//	    runs cmd with sh -c and returns struct(code, stdout, stderr, ok).
//	    A command is assumed to change the node: say changes=False for a
//	    read-only one. In check mode only read-only commands run; the others
//	    report "would run ..." and return code 0 with empty output.
//	    check=True fails the step on a non-zero exit. undo="CMD" records
//	    CMD in the journal before cmd runs; `caretaker undo RUN` runs it
//	    on the node (same sudo). It must be safe to run whether cmd ran,
//	    ran partly or not at all, and must hold no secret (the journal
//	    keeps it as written).
//	node.read(path) -> string; fails if the file is missing
//	node.write(path, data, mode=0o644) -> bool: atomic; True if the
//	    content changed (mode and owner of an existing file are kept)
//	node.exists(path) -> bool
//	node.stat(path) -> struct(path, size, mode, mtime, is_dir, uid, gid) or None
type Node struct {
	N *inventory.Node
}

var (
	_ starlark.HasAttrs = (*Node)(nil)
	_ starlark.Value    = (*Node)(nil)
)

// NewNode returns the Starlark value for n.
func NewNode(n *inventory.Node) *Node { return &Node{N: n} }

// NodeValue is runner.RunOptions.NodeValue for the builtins: the step's
// node as a *Node.
func NodeValue(env *runner.Env) starlark.Value { return NewNode(env.Node) }

// String returns the node's name.
func (n *Node) String() string { return fmt.Sprintf("node(%q)", n.N.Name) }

// Type is "node".
func (n *Node) Type() string { return "node" }

// Freeze does nothing: a node value is immutable.
func (n *Node) Freeze() {}

// Truth is always true.
func (n *Node) Truth() starlark.Bool { return starlark.True }

// Hash hashes the node's cluster and name.
func (n *Node) Hash() (uint32, error) {
	return starlark.String(n.N.Cluster + "/" + n.N.Name).Hash()
}

var nodeMethods = map[string]func(n *Node, c *Call) (any, error){
	"run":    nodeRun,
	"read":   nodeRead,
	"write":  nodeWrite,
	"exists": nodeExists,
	"stat":   nodeStat,
}

// Attr returns an attribute or a bound method.
func (n *Node) Attr(name string) (starlark.Value, error) {
	k := n.N.K3s
	switch name {
	case "name":
		return starlark.String(n.N.Name), nil
	case "address":
		return starlark.String(n.N.Address), nil
	case "role":
		return starlark.String(n.N.Role), nil
	case "cluster":
		return starlark.String(n.N.Cluster), nil
	case "sudo":
		return starlark.Bool(n.N.Sudo), nil
	case "groups":
		return stringList(n.N.Groups), nil
	case "labels":
		d := starlark.NewDict(len(n.N.Labels))
		for key, v := range n.N.Labels {
			_ = d.SetKey(starlark.String(key), starlark.String(v)) // a new dict is not frozen
		}
		d.Freeze()
		return d, nil
	case "data_dir":
		return starlark.String(k.DataDir), nil
	case "server_dir":
		return starlark.String(strings.TrimSuffix(k.DataDir, "/") + "/server"), nil
	case "config_file":
		return starlark.String(k.ConfigFile), nil
	case "unit_file":
		return starlark.String(k.UnitFile), nil
	case "env_files":
		return stringList(k.EnvFiles), nil
	case "service":
		return starlark.String(k.Service), nil
	case "kubeconfig":
		return starlark.String(k.KubeConfig), nil
	case "etcd_endpoint":
		return starlark.String(k.EtcdEndpoint), nil
	case "supervisor_endpoint":
		return starlark.String(k.SupervisorEndpoint), nil
	}
	if m, ok := nodeMethods[name]; ok {
		return NewBuiltin("node."+name, WhenStep, func(c *Call) (any, error) { return m(n, c) }), nil
	}
	return nil, nil
}

// AttrNames lists the attributes and methods, sorted.
func (n *Node) AttrNames() []string {
	names := []string{"name", "address", "role", "cluster", "sudo", "groups", "labels", "data_dir", "server_dir", "config_file", "unit_file", "env_files", "service", "kubeconfig", "etcd_endpoint", "supervisor_endpoint"}
	for m := range nodeMethods {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

func stringList(ss []string) *starlark.List {
	l := starlark.NewList(nil)
	for _, s := range ss {
		_ = l.Append(starlark.String(s)) // a new list is not frozen
	}
	l.Freeze()
	return l
}

// exec returns this node's executor for the calling step.
func (n *Node) exec(c *Call) (transport.Executor, error) {
	env := c.env
	if env.Node == n.N && env.Exec != nil {
		return env.Exec, nil
	}
	ex, err := env.Executor(env.Ctx, n.N)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return ex, nil
}

// pathCall unpacks the single "path" argument of read, exists and stat and
// returns this node's executor.
func (n *Node) pathCall(c *Call) (string, transport.Executor, error) {
	var path string
	if err := c.Unpack("path", &path); err != nil {
		return "", nil, err
	}
	ex, err := n.exec(c)
	return path, ex, err
}

func nodeRun(n *Node, c *Call) (any, error) {
	var (
		cmd, timeout string
		changes      = true
		check        = true
		quiet        bool
		sudo         starlark.Value = starlark.None
		stdin        starlark.Value = starlark.None
		undo         string
	)
	if err := c.Unpack("cmd", &cmd, "changes?", &changes, "sudo?", &sudo, "check?", &check, "stdin?", &stdin, "timeout?", &timeout, "quiet?", &quiet, "undo?", &undo); err != nil {
		return nil, err
	}
	if undo != "" && !changes {
		return nil, fmt.Errorf("%s: undo= with changes=False: a read-only command has nothing to undo", c.name)
	}
	env := c.env
	ex, err := n.exec(c)
	if err != nil {
		return nil, err
	}
	cm := transport.Command{Line: cmd, Sudo: n.N.Sudo}
	if sb, ok := sudo.(starlark.Bool); ok {
		cm.Sudo = bool(sb)
	}
	if s, ok := starlark.AsString(stdin); ok {
		cm.Stdin = strings.NewReader(s)
	}
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil {
			return nil, fmt.Errorf("%s: timeout %q is not a duration (examples: 30s, 5m)", c.name, timeout)
		}
		cm.Timeout = d
	}
	if undo != "" {
		if err := recordRunUndo(env, n.N, undo, cm.Sudo); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
	}
	res, stdout, stderr, err := env.RunCommand(env.Ctx, ex, n.N, cm, changes, quiet)
	var exitErr *transport.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	if err != nil && check {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return starlarkstruct.FromStringDict(starlark.String("result"), starlark.StringDict{
		"code":   starlark.MakeInt(res.ExitCode),
		"stdout": starlark.String(stdout),
		"stderr": starlark.String(stderr),
		"ok":     starlark.Bool(res.ExitCode == 0),
	}), nil
}

// runUndo is the journal record of node.run(..., undo=CMD).
type runUndo struct {
	Cmd  string `json:"cmd"`
	Sudo bool   `json:"sudo"`
	How  string `json:"how"`
}

// recordRunUndo records undo before the command it reverses runs; in
// check mode it only says it would.
func recordRunUndo(env *runner.Env, n *inventory.Node, undo string, sudo bool) error {
	if env.Check {
		env.Output(runner.StreamCheck, "would record undo on "+n.Name+": "+undo)
		return nil
	}
	data, err := json.Marshal(runUndo{Cmd: undo, Sudo: sudo, How: "run `" + undo + "` on " + n.Name})
	if err != nil {
		return err
	}
	if err := env.Undo("node.run", data); err != nil {
		return fmt.Errorf("record the undo before running: %w", err)
	}
	return nil
}

// replayRunUndo is the undo of node.run(..., undo=CMD): CMD on the node,
// through check mode like any mutating command.
func replayRunUndo(ctx context.Context, env *runner.Env, data []byte) error {
	var u runUndo
	if err := json.Unmarshal(data, &u); err != nil || u.Cmd == "" {
		return fmt.Errorf("node.run undo: the record holds no command: %s", data)
	}
	if env.Node == nil || env.Exec == nil {
		return fmt.Errorf("node.run undo: needs the node the change was made on")
	}
	_, _, _, err := env.RunCommand(ctx, env.Exec, env.Node, transport.Command{Line: u.Cmd, Sudo: u.Sudo}, true, false)
	if err != nil {
		return fmt.Errorf("node.run undo `%s` on %s: %w", u.Cmd, env.Node.Name, err)
	}
	return nil
}

func init() {
	runner.RegisterUndo("node.run", replayRunUndo)
	runner.RegisterUndoDescription("node.run", func(data []byte) string {
		var u runUndo
		if json.Unmarshal(data, &u) != nil || u.Cmd == "" {
			return ""
		}
		return "a node.run command whose undo is `" + u.Cmd + "`"
	})
}

func nodeRead(n *Node, c *Call) (any, error) {
	path, ex, err := n.pathCall(c)
	if err != nil {
		return nil, err
	}
	data, err := ex.ReadFile(c.env.Ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %s: no such file on %s: %w", c.name, path, n.N.Name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return string(data), nil
}

func nodeWrite(n *Node, c *Call) (any, error) {
	var (
		path, data string
		mode       = 0o644
	)
	if err := c.Unpack("path", &path, "data", &data, "mode?", &mode); err != nil {
		return nil, err
	}
	ex, err := n.exec(c)
	if err != nil {
		return nil, err
	}
	changed, err := WriteIfChanged(c.env, ex, n.N, path, []byte(data), fs.FileMode(mode))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return changed, nil
}

// WriteIfChanged writes data to path on the node unless it already holds
// exactly that; in check mode it only reports. It returns whether the file
// changed (or would change).
func WriteIfChanged(env *runner.Env, ex transport.Executor, node *inventory.Node, path string, data []byte, mode fs.FileMode) (bool, error) {
	old, err := ex.ReadFile(env.Ctx, path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	what := fmt.Sprintf("write %s on %s (%d bytes)", path, node.Name, len(data))
	err = env.Wet(what, func() error { return ex.WriteFile(env.Ctx, path, data, mode) })
	if err != nil {
		return false, err
	}
	env.MarkChanged()
	return true, nil
}

func nodeExists(n *Node, c *Call) (any, error) {
	path, ex, err := n.pathCall(c)
	if err != nil {
		return nil, err
	}
	_, err = ex.Stat(c.env.Ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return true, nil
}

func nodeStat(n *Node, c *Call) (any, error) {
	path, ex, err := n.pathCall(c)
	if err != nil {
		return nil, err
	}
	fi, err := ex.Stat(c.env.Ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return starlarkstruct.FromStringDict(starlark.String("stat"), starlark.StringDict{
		"path":   starlark.String(fi.Path),
		"size":   starlark.MakeInt64(fi.Size),
		"mode":   starlark.MakeInt(int(fi.Mode.Perm())),
		"mtime":  starlark.Float(float64(fi.ModTime.UnixNano()) / 1e9),
		"is_dir": starlark.Bool(fi.IsDir),
		"uid":    starlark.MakeInt(fi.UID),
		"gid":    starlark.MakeInt(fi.GID),
	}), nil
}
