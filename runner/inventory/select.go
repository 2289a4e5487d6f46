package inventory

import (
	"fmt"
	"sort"
	"strings"

	"github.com/caretaker/caretaker/runner/errs"
)

// Cluster returns the named cluster, or the only one when name is empty.
func (inv *Inventory) Cluster(name string) (*Cluster, error) {
	if name == "" {
		if len(inv.Clusters) == 1 {
			return inv.Clusters[0], nil
		}
		return nil, fmt.Errorf("%s declares %d clusters (%s): choose one with --cluster: %w", inv.Path, len(inv.Clusters), strings.Join(inv.clusterNames(), ", "), errs.ErrBadInput)
	}
	for _, c := range inv.Clusters {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%s has no cluster %q; it declares: %s: %w", inv.Path, name, strings.Join(inv.clusterNames(), ", "), errs.ErrBadInput)
}

func (inv *Inventory) clusterNames() []string {
	var out []string
	for _, c := range inv.Clusters {
		out = append(out, c.Name)
	}
	return out
}

// Node returns the named node of the cluster, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Select returns the cluster's nodes matching a selector, in inventory
// order with servers before agents. Selectors: "all", "servers", "agents",
// "group:NAME", "label:KEY=VALUE", or a node name; a comma-separated list
// is their union.
func (c *Cluster) Select(selector string) ([]*Node, error) {
	want := map[*Node]bool{}
	for _, part := range strings.Split(selector, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		matched := 0
		for _, n := range c.Nodes {
			if n.Matches(part) {
				want[n] = true
				matched++
			}
		}
		if matched == 0 && !isRoleSelector(part) {
			return nil, c.NoMatch("selector", part)
		}
	}
	var out []*Node
	for _, n := range c.Nodes {
		if want[n] {
			out = append(out, n)
		}
	}
	SortNodes(out)
	return out, nil
}

func isRoleSelector(s string) bool {
	return s == "all" || s == "servers" || s == "agents" || strings.HasPrefix(s, "group:") || strings.HasPrefix(s, "label:")
}

// Matches reports whether the node matches one selector term.
func (n *Node) Matches(term string) bool {
	switch {
	case term == "all" || term == "*":
		return true
	case term == "servers" || term == "server":
		return n.Role == RoleServer
	case term == "agents" || term == "agent":
		return n.Role == RoleAgent
	case strings.HasPrefix(term, "group:"):
		g := strings.TrimPrefix(term, "group:")
		for _, x := range n.Groups {
			if x == g {
				return true
			}
		}
		return false
	case strings.HasPrefix(term, "label:"):
		kv := strings.SplitN(strings.TrimPrefix(term, "label:"), "=", 2)
		v, ok := n.Labels[kv[0]]
		return ok && (len(kv) == 1 || v == kv[1])
	}
	return n.Name == term
}

func (c *Cluster) nodeNames() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// SortNodes orders nodes servers first, then agents, keeping inventory
// order within a role.
func SortNodes(nodes []*Node) {
	sort.SliceStable(nodes, func(i, j int) bool {
		return nodes[i].Role == RoleServer && nodes[j].Role != RoleServer
	})
}

// String names the node for messages: "server-1 (10.0.0.5:22)".
func (n *Node) String() string {
	return fmt.Sprintf("%s (%s:%d)", n.Name, n.Address, n.Port)
}
