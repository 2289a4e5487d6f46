// Package ssh is the transport.Executor over SSH (golang.org/x/crypto/ssh):
// one connection per node, reused for every command, file transfer and
// tunnel; host keys always verified against known_hosts; agent, key files,
// ~/.ssh/config and a jump host; a cancelled command is killed on the node.
package ssh
