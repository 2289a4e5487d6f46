package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/caretaker/caretaker/internal/k3s"
)

// Paths inside a node, as install.sh lays out a server.
const (
	nodeConfigFile = "/etc/rancher/k3s/config.yaml"
	nodeDropIn     = "/etc/rancher/k3s/config.yaml.d/50-server.yaml"
	nodeUnitFile   = "/etc/systemd/system/k3s.service"
	nodeEnvFile    = "/etc/systemd/system/k3s.service.env"
	nodeServerDir  = "/var/lib/rancher/k3s/server"
	faultDropIn    = "/run/systemd/system/k3s.service.d/50-lab-fault.conf"
)

// serverConf is what decides one server's config sources.
type serverConf struct {
	addr        string
	token       string
	clusterInit bool
	serverURL   string // "" for none
	source      string
	bootstrap   bool // K3S_SERVE_BOOTSTRAP_FROM_DISK=true
}

// renderServer returns the files of a server's config sources, by path in
// the node; a nil value means the file must not exist.
func renderServer(name string, c serverConf) map[string][]byte {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "# written by caretaker lab (real engine) for %s\n", name)
	fmt.Fprintf(&cfg, "token: %s\n", c.token)
	cfg.WriteString(`disable-agent: true
disable: [traefik, servicelb, metrics-server, local-storage, coredns]
disable-network-policy: true
flannel-backend: none
disable-scheduler: true
disable-cloud-controller: true
write-kubeconfig-mode: "0600"
`)
	fmt.Fprintf(&cfg, "node-ip: %s\nadvertise-address: %s\n", c.addr, c.addr)
	if c.clusterInit {
		cfg.WriteString("cluster-init: true\n")
	}
	var env strings.Builder
	if c.bootstrap {
		env.WriteString("K3S_SERVE_BOOTSTRAP_FROM_DISK=true\n")
	}
	var args []string
	files := map[string][]byte{nodeDropIn: nil}
	if c.serverURL != "" {
		switch c.source {
		case SourceDropIn:
			files[nodeDropIn] = []byte("server: " + c.serverURL + "\n")
		case SourceUnit:
			args = append(args, "--server", c.serverURL)
		case SourceEnv:
			fmt.Fprintf(&env, "K3S_URL='%s'\n", c.serverURL)
		default:
			fmt.Fprintf(&cfg, "server: %s\n", c.serverURL)
		}
	}
	files[nodeConfigFile] = []byte(cfg.String())
	files[nodeEnvFile] = []byte(env.String())
	files[nodeUnitFile] = k3s.WriteUnit("server", args, nodeEnvFile)
	return files
}

// writeServerFiles writes the rendered files into the node's root (0600
// for the config and env files, as install.sh, 0644 for the rest) and
// reports whether the unit file changed (then systemd needs a reload).
func writeServerFiles(root string, files map[string][]byte) (unitChanged bool, err error) {
	for p, data := range files {
		hp := filepath.Join(root, p)
		if data == nil {
			if err := os.Remove(hp); err != nil && !os.IsNotExist(err) {
				return false, fmt.Errorf("realnode: remove %s: %w", p, err)
			}
			continue
		}
		if p == nodeUnitFile {
			old, _ := os.ReadFile(hp)
			unitChanged = string(old) != string(data)
		}
		mode := os.FileMode(0o644)
		if p == nodeConfigFile || p == nodeEnvFile {
			mode = 0o600
		}
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			return false, fmt.Errorf("realnode: %w", err)
		}
		if err := writeFileAtomic(hp, data, mode); err != nil {
			return false, fmt.Errorf("realnode: write %s: %w", p, err)
		}
	}
	return unitChanged, nil
}

// secureToken is the full token for password once the server CA exists
// in serverDir (host path): K10<HashCA(server-ca.crt)>::server:<password>.
func secureToken(serverDir, password string) (string, error) {
	ca, err := os.ReadFile(filepath.Join(serverDir, k3s.PathServerCA))
	if err != nil {
		return "", fmt.Errorf("realnode: read the server CA for the secure token: %w", err)
	}
	h, err := k3s.HashCA(ca)
	if err != nil {
		return "", fmt.Errorf("realnode: hash the server CA: %w", err)
	}
	return k3s.FormatToken(h, "server", password), nil
}
