// Package inventory parses and validates caretaker inventories (clusters,
// nodes, SSH settings, K3s paths) with file:line positions in every error,
// and resolves node selectors (all, servers, agents, group:, label:, names).
package inventory
