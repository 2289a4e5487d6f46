package ssh

import (
	"context"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// Dial opens an executor for a test node from transporttest (the
// production mapping of inventory nodes is session.SSHConfig, which this
// package's tests cannot import).
func Dial(ctx context.Context, n *inventory.Node) (transport.Executor, error) {
	return Open(ctx, configOf(n))
}

func configOf(n *inventory.Node) Config {
	s := n.SSH
	return Config{Name: n.Name, Address: n.Address, Port: n.Port, User: n.User, Sudo: n.Sudo,
		SSHHost: n.SSHHost, ConfigFile: s.ConfigFile, IdentityFiles: s.IdentityFiles, UseAgent: s.UseAgent,
		KnownHosts: s.KnownHosts, HostKeyPolicy: HostKeyPolicy(s.HostKeyPolicy),
		ConnectTimeout: s.ConnectTimeout.D(), CommandTimeout: s.CommandTimeout.D(), KeepAlive: s.KeepAlive.D(), JumpHost: s.JumpHost}
}
