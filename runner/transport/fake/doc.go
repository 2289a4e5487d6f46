// Package fake is an in-memory transport.Executor for unit tests of logic:
// files in a map, commands answered by registered replies or handlers.
// Production code never uses it.
package fake
