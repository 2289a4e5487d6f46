package builtins

import (
	"fmt"
	"strings"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// The server token rotation builtins (the rotate-token playbook). The new
// token is never a Starlark value: it lives in a 0600 file on the
// controller whose path the builtins pass around.

// k3s.check_token_file(path): fail unless path is a usable new-token file
// (k3sops.ReadTokenFile: 0600-like permissions, a token K3s reads the same
// everywhere). Callable at the top level, so that a bad file is bad input
// (exit 2) before any node is touched. Returns None.
func k3sCheckTokenFile(c *Call) (any, error) {
	var path string
	if err := c.Unpack("path", &path); err != nil {
		return nil, err
	}
	if _, err := k3sops.ReadTokenFile(nil, path); err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return nil, nil
}

// k3s.new_token(node, file=""): the new token of a rotation, prepared on a
// server: this run's copy (an earlier attempt), else the token in file,
// else a generated one; saved with the current one to the run's backup
// dir on the controller (0600). Returns struct(file, old_file, source,
// rotated, planned).
func k3sNewToken(c *Call) (any, error) {
	var file string
	t, err := c.nodeTarget("file?", &file)
	if err != nil {
		return nil, err
	}
	return k3sops.NewToken(c.env.Ctx, t, file)
}

// k3s.token_status(nodes=None, token_file="", quiet=False): every node's
// configured token and every server's SD/token against the datastore's
// key (read-only). Returns struct(key, via, rotated, consistent, stale,
// rows, earlier_token_file, table).
func k3sTokenStatus(c *Call) (any, error) {
	var (
		nodesArg  starlark.Value = starlark.None
		tokenFile string
		quiet     bool
	)
	if err := c.Unpack("nodes?", &nodesArg, "token_file?", &tokenFile, "quiet?", &quiet); err != nil {
		return nil, err
	}
	nodes, err := c.nodes("nodes", nodesArg)
	if err != nil {
		return nil, err
	}
	res, err := k3sops.TokenStatus(c.env.Ctx, c.env, c.name, nodes, tokenFile)
	if err != nil {
		return nil, err
	}
	if !quiet {
		c.env.Output(runner.StreamLog, "datastore key "+res.Key+" (read through "+res.Via+")")
		for _, l := range strings.Split(strings.TrimRight(res.Table, "\n"), "\n") {
			c.env.Output(runner.StreamLog, l)
		}
	}
	return res, nil
}

// k3s.rotate_token(node, token_file): `k3s token rotate` on a server to the
// token in token_file (new_token's file), unless the datastore already
// opens with it; then the datastore must hold the bootstrap data under the
// new token's key only.
func k3sRotateToken(c *Call) (any, error) {
	var (
		nodeArg   starlark.Value
		tokenFile string
	)
	if err := c.Unpack("node", &nodeArg, "token_file", &tokenFile); err != nil {
		return nil, err
	}
	t, err := c.target(nodeArg)
	if err != nil {
		return nil, err
	}
	return k3sops.RotateToken(c.env.Ctx, t, tokenFile)
}

// k3s.set_token(node, token_file): the new token in every source the node
// takes its token from, byte for byte except the token's password.
func k3sSetToken(c *Call) (any, error) {
	var (
		nodeArg   starlark.Value
		tokenFile string
	)
	if err := c.Unpack("node", &nodeArg, "token_file", &tokenFile); err != nil {
		return nil, err
	}
	t, via, err := c.tokenTargets(nodeArg)
	if err != nil {
		return nil, err
	}
	return k3sops.SetToken(c.env.Ctx, t, tokenFile, via)
}

// k3s.verify_token(node, token_file, fail=True): the node runs with the new
// token. Returns struct(node, ok, problems, planned).
func k3sVerifyToken(c *Call) (any, error) {
	var (
		nodeArg   starlark.Value
		tokenFile string
		fail      = true
	)
	if err := c.Unpack("node", &nodeArg, "token_file", &tokenFile, "fail?", &fail); err != nil {
		return nil, err
	}
	t, via, err := c.tokenTargets(nodeArg)
	if err != nil {
		return nil, err
	}
	return k3sops.VerifyToken(c.env.Ctx, t, tokenFile, via, fail)
}

// tokenTargets resolves the node and, for an agent, the first server of
// the run (whose config and passwd say which token agents join with).
func (c *Call) tokenTargets(nodeArg starlark.Value) (*k3sops.Target, *k3sops.Target, error) {
	t, err := c.target(nodeArg)
	if err != nil {
		return nil, nil, err
	}
	if t.Node.Role == inventory.RoleServer {
		return t, nil, nil
	}
	for _, n := range c.env.Nodes() {
		if n.Role == inventory.RoleServer {
			via, err := c.target(&Node{N: n})
			return t, via, err
		}
	}
	return nil, nil, fmt.Errorf("%s: %s is an agent: the run needs a server to tell which token agents join with (check --limit)", c.name, t.Node.Name)
}
