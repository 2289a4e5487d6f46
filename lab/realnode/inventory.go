package realnode

import (
	"fmt"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Inventory shapes (README "Inventory"); only what the real engine writes.
type invFile struct {
	Clusters []invCluster `yaml:"clusters"`
}

type invCluster struct {
	Name  string    `yaml:"name"`
	SSH   invSSH    `yaml:"ssh"`
	Nodes []invNode `yaml:"nodes"`
}

type invSSH struct {
	User          string   `yaml:"user"`
	IdentityFiles []string `yaml:"identity_files"`
	KnownHosts    string   `yaml:"known_hosts"`
	HostKeyPolicy string   `yaml:"host_key_policy"`
	ConfigFile    string   `yaml:"config_file"`
}

type invNode struct {
	Name    string   `yaml:"name"`
	Address string   `yaml:"address"`
	Role    string   `yaml:"role"`
	Groups  []string `yaml:"groups,omitempty"`
	K3s     *invK3s  `yaml:"k3s,omitempty"`
}

// invK3s: the nodes have install.sh's default paths, so the only key is
// the per-node bug override (a fixed release's version string, the
// pre-fix behaviour: real-nodes.md "The K3s binary").
type invK3s struct {
	BootstrapBug bool `yaml:"bootstrap_bug,omitempty"`
}

// renderInventory is Dir/inventory.yaml: user root with Dir/id_ed25519,
// strict host keys from Dir/known_hosts, an empty ssh_config (the user's
// ~/.ssh/config must not redirect the lab's addresses), one server per
// node with K3s's default paths.
func (c *Cluster) renderInventory(bootstrapBug bool) ([]byte, error) {
	cl := invCluster{
		Name: c.st.Name,
		SSH: invSSH{
			User:          "root",
			IdentityFiles: []string{filepath.Join(c.st.Dir, "id_ed25519")},
			KnownHosts:    filepath.Join(c.st.Dir, "known_hosts"),
			HostKeyPolicy: "strict",
			ConfigFile:    filepath.Join(c.st.Dir, "ssh_config"),
		},
	}
	for _, n := range c.st.Nodes {
		in := invNode{Name: n.Name, Address: n.Address, Role: "server", Groups: []string{"etcd"}}
		if bootstrapBug {
			in.K3s = &invK3s{BootstrapBug: true}
		}
		cl.Nodes = append(cl.Nodes, in)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# caretaker lab inventory (real engine, %s); written by `caretaker lab up --engine real`.\n", c.st.Dir)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(invFile{Clusters: []invCluster{cl}}); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

func (c *Cluster) writeInventory(o Options) error {
	b, err := c.renderInventory(o.BootstrapBug)
	if err != nil {
		return fmt.Errorf("realnode: render the inventory: %w", err)
	}
	if err := writeFileAtomic(c.InventoryPath(), b, 0o644); err != nil {
		return fmt.Errorf("realnode: write the inventory: %w", err)
	}
	return nil
}
