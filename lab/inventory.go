package lab

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh/knownhosts"
	"gopkg.in/yaml.v3"
)

// Inventory file shapes (helpers/inventory-format.md); only what the lab
// writes.
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
	Name    string            `yaml:"name"`
	Address string            `yaml:"address"`
	Port    int               `yaml:"port,omitempty"`
	Role    string            `yaml:"role"`
	Groups  []string          `yaml:"groups,omitempty"`
	Labels  map[string]string `yaml:"labels,omitempty"`
	K3s     invK3s            `yaml:"k3s,omitempty"`
}

type invK3s struct {
	DataDir            string   `yaml:"data_dir,omitempty"`
	ConfigFile         string   `yaml:"config_file,omitempty"`
	UnitFile           string   `yaml:"unit_file,omitempty"`
	EnvFiles           []string `yaml:"env_files,omitempty"`
	Service            string   `yaml:"service,omitempty"`
	KubeConfig         string   `yaml:"kubeconfig,omitempty"`
	EtcdEndpoint       string   `yaml:"etcd_endpoint,omitempty"`
	SupervisorEndpoint string   `yaml:"supervisor_endpoint,omitempty"`
	BootstrapBug       bool     `yaml:"bootstrap_bug,omitempty"`
}

// writeInventory writes DIR/inventory.yaml for caretaker and DIR/known_hosts
// with every node's pinned host key. Every node has the default K3s paths
// (its commands see its own tree as /), in both SSH modes, as on a real
// cluster; the user is root.
func (l *Lab) writeInventory() error {
	userName := "root"
	c := invCluster{
		Name: l.opts.Name,
		SSH: invSSH{
			User: userName, IdentityFiles: []string{"id_ed25519"}, KnownHosts: "known_hosts",
			HostKeyPolicy: "strict",
			// An empty ssh_config: the user's ~/.ssh/config must not
			// redirect the lab's addresses.
			ConfigFile: "ssh_config",
		},
	}
	var kh strings.Builder
	for _, n := range l.nodes {
		in := invNode{Name: n.name, Address: n.ip, Role: n.role, Labels: map[string]string{"lab-version": n.version.String()}}
		if n.sshPort != 22 {
			in.Port = n.sshPort
		}
		if n.isServer() {
			in.Groups = []string{"etcd"}
			in.K3s.EtcdEndpoint = net.JoinHostPort(n.ip, "2379")
			in.K3s.SupervisorEndpoint = net.JoinHostPort(n.ip, "6443")
			in.K3s.BootstrapBug = l.opts.BootstrapBug
		}
		c.Nodes = append(c.Nodes, in)
		addr := n.ip
		if n.sshPort != 22 {
			addr = net.JoinHostPort(n.ip, strconv.Itoa(n.sshPort))
		}
		kh.WriteString(knownhosts.Line([]string{knownhosts.Normalize(addr)}, n.hostKey) + "\n")
	}
	var buf strings.Builder
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(invFile{Clusters: []invCluster{c}}); err != nil {
		return err
	}
	b := []byte(buf.String())
	header := "# caretaker lab inventory (" + l.opts.Dir + "); written by `caretaker lab up`.\n"
	if err := os.WriteFile(filepath.Join(l.opts.Dir, "ssh_config"), []byte("# empty on purpose: the lab's nodes need no ssh_config\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.opts.Dir, "known_hosts"), []byte(kh.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(l.InventoryPath(), append([]byte(header), b...), 0o644)
}
