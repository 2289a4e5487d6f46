// Package transport defines how caretaker reaches a node: the Executor
// interface (run a command, read, write and stat files, dial a port) and
// what its implementations share. The implementations live below it: ssh
// (x/crypto/ssh), local (this machine) and fake (unit tests).
package transport
