// Package local is the transport.Executor for the controller itself (an
// inventory node with connection: local), running commands with sh -c.
package local
