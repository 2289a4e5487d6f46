package runner

import (
	"fmt"
	"sort"
	"strings"
)

// FormatPlan renders a plan as text: parameters, then each step with its
// target nodes, serial limit and whether it changes nodes.
func FormatPlan(p *Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "playbook %s (%s) on cluster %s, %d nodes\n", p.Playbook, p.File, p.Cluster.Name, len(p.Nodes))
	if p.Description != "" {
		fmt.Fprintf(&b, "  %s\n", p.Description)
	}
	if p.LocalLockOnly {
		b.WriteString("  lock: the controller's local lock only (the playbook stops or replaces the datastore the cluster lock lives in)\n")
	}
	if len(p.Params) > 0 {
		b.WriteString("parameters:\n")
		params := append([]*Param(nil), p.Params...)
		sort.SliceStable(params, func(i, j int) bool { return params[i].Name < params[j].Name })
		for _, x := range params {
			src := "default"
			if x.Set {
				src = "-p"
			}
			line := fmt.Sprintf("  %s = %s (%s)", x.Name, x.Value.String(), src)
			if x.Type != "" || x.Min != nil || x.Max != nil {
				line += " [" + x.Want() + "]"
			}
			if x.Doc != "" {
				line += "  # " + x.Doc
			}
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("steps:\n")
	for _, s := range p.Steps {
		var tags []string
		if s.Mutates {
			tags = append(tags, "changes nodes")
		} else {
			tags = append(tags, "read-only")
		}
		if s.Serial > 0 {
			tags = append(tags, fmt.Sprintf("serial %d", s.Serial))
		}
		if s.Once {
			tags = append(tags, "once")
		}
		if s.Timeout > 0 {
			tags = append(tags, "timeout "+s.Timeout.String())
		}
		fmt.Fprintf(&b, "  %d. %s [%s]\n", s.Index+1, s.Name, strings.Join(tags, ", "))
		if s.Doc != "" {
			fmt.Fprintf(&b, "     %s\n", s.Doc)
		}
		var names []string
		for _, n := range s.Nodes {
			names = append(names, n.Name)
			if s.Once {
				break
			}
		}
		if len(names) == 0 {
			names = []string{"(no nodes)"}
		}
		fmt.Fprintf(&b, "     nodes: %s\n", strings.Join(names, ", "))
	}
	return b.String()
}
