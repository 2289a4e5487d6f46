package k3stest

import (
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// ageLeaves makes the leaf certificates of the nodes in days look issued
// that many days ago (K3s issues them for a year): as on a node whose K3s
// has run that long since its last start. It is applied after the
// cluster's first start, which would have renewed them; the running K3s
// keeps what it loaded until it restarts. A node not named keeps its own.
func (c *Cluster) ageLeaves(days map[string]int) error {
	names := make([]string, 0, len(days))
	for n := range days {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		sn, err := c.lookup(name)
		if err != nil {
			return fmt.Errorf("leaf_age_days: %w", err)
		}
		if days[name] < 0 || days[name] > 3650 {
			return fmt.Errorf("leaf_age_days: %s: %d days: give 0 to 3650", name, days[name])
		}
		cas := sn.caSet()
		agent := sn.n.Role == inventory.RoleAgent
		if agent {
			peer := c.peerOf(sn)
			cas = peer.caSet()
		}
		leaves, err := k3s.IssueLeafCerts(cas, k3s.LeafOptions{NodeName: sn.n.Name, NodeIPs: []net.IP{net.ParseIP(sn.ip)},
			Now: time.Now(), Age: time.Duration(days[name]) * 24 * time.Hour, Agent: agent})
		if err != nil {
			return fmt.Errorf("leaf_age_days: %s: %w", name, err)
		}
		for p, b := range leaves {
			sn.ex.SetFile(sn.dd()+"/"+p, b, 0o600)
		}
	}
	return nil
}
