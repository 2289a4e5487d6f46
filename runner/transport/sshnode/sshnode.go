// Package sshnode reaches inventory nodes with the SSH transport: the
// mapping of an inventory node onto ssh.Config, and Dial, the Connect of
// runs and connection pools.
package sshnode

import (
	"context"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/ssh"
)

// SSHConfig is how the SSH transport reaches inventory node n.
func SSHConfig(n *inventory.Node) ssh.Config {
	s := n.SSH
	return ssh.Config{
		Name: n.Name, Address: n.Address, Port: n.Port, User: n.User, Sudo: n.Sudo,
		SSHHost: n.SSHHost, ConfigFile: s.ConfigFile,
		IdentityFiles: s.IdentityFiles, UseAgent: s.UseAgent,
		KnownHosts: s.KnownHosts, HostKeyPolicy: ssh.HostKeyPolicy(s.HostKeyPolicy),
		ConnectTimeout: s.ConnectTimeout.D(), CommandTimeout: s.CommandTimeout.D(), KeepAlive: s.KeepAlive.D(),
		JumpHost: s.JumpHost,
	}
}

// Dial connects to inventory node n over SSH (ssh.Open with SSHConfig):
// the Connect of runs and of the connection pool.
func Dial(ctx context.Context, n *inventory.Node) (transport.Executor, error) {
	return ssh.Open(ctx, SSHConfig(n))
}
