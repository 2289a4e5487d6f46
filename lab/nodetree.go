package lab

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/internal/k3s"
)

// writeNodeTree lays out DIR/<node>/ as install.sh and a first start would
// have left it (issue 3 "Each node"), with the node's command shims.
func (l *Lab) writeNodeTree(n *node, cas map[string][]byte, t0 time.Time) error {
	if err := os.MkdirAll(n.root, 0o755); err != nil {
		return err
	}
	if err := l.writeSystemFiles(n); err != nil {
		return err
	}
	dirs := []string{
		n.host(filepath.Dir(n.configFile)), n.host(n.configFile + ".d"), n.host(filepath.Dir(n.unitFile)),
		n.host(n.dataDir), n.host("/etc/default"), n.host("/etc/sysconfig"),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	if err := l.writeConfigSources(n); err != nil {
		return err
	}
	if !n.isServer() {
		return os.MkdirAll(filepath.Join(n.host(n.dataDir), "agent"), 0o755)
	}
	// The server's bootstrap files as the datastore holds them, and an
	// initialized etcd member dir (§2 "Choosing the driver").
	sd := n.host(filepath.Join(n.dataDir, "server"))
	d := k3s.BootstrapData{}
	for i, bf := range k3s.BootstrapFiles {
		b, ok := cas[bf.Path]
		if !ok {
			continue
		}
		d[bf.Key] = k3s.File{Timestamp: t0.Add(time.Duration(i+1) * 1733 * time.Microsecond), Content: b}
	}
	if err := k3s.WriteBootstrapToDir(sd, d); err != nil {
		return err
	}
	for rel, b := range cas {
		if _, known := bootstrapPath(rel); known {
			continue
		}
		if err := writeFile(filepath.Join(sd, rel), b, 0o600); err != nil {
			return err
		}
	}
	// The leaf certificates a first start issued (the etcd member needs
	// its own before the cluster forms at lab up).
	leaves, err := k3s.IssueLeafCerts(cas, k3s.LeafOptions{NodeName: n.name, NodeIPs: []net.IP{net.ParseIP(n.ip)}, Now: time.Now()})
	if err != nil {
		return err
	}
	dd := n.host(n.dataDir)
	for rel, b := range leaves {
		mode := os.FileMode(0o600)
		if strings.HasSuffix(rel, ".crt") {
			mode = 0o644
		}
		if err := writeFile(filepath.Join(dd, rel), b, mode); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(sd, "db"), 0o700)
}

// writeConfigSources writes the node's K3s config sources (§7): config.yaml
// (or the drop-in, unit args or env file that sets server, per
// Options.ServerSource), the unit as install.sh writes it and its env file.
func (l *Lab) writeConfigSources(n *node) error {
	peer := l.peerOf(n)
	var args []string
	var cfg strings.Builder
	var env strings.Builder
	cfg.WriteString("# written by caretaker lab for " + n.name + "\n")
	if n.isServer() {
		fmt.Fprintf(&cfg, "token: %s\n", l.token)
		fmt.Fprintf(&cfg, "node-ip: %s\n", n.ip)
		if peer == nil {
			if l.opts.Scenario == ScenarioClusterInit {
				cfg.WriteString("cluster-init: true\n")
			}
		} else {
			url := peer.serverURL()
			switch l.opts.ServerSource[n.name] {
			case SourceDropIn:
				if err := writeFile(n.host(filepath.Join(n.configFile+".d", "50-server.yaml")), []byte("server: "+url+"\n"), 0o644); err != nil {
					return err
				}
			case SourceUnit:
				args = append(args, "--server", url)
			case SourceEnv:
				fmt.Fprintf(&env, "K3S_URL='%s'\n", url)
			default:
				fmt.Fprintf(&cfg, "server: %s\n", url)
			}
		}
	} else {
		fmt.Fprintf(&cfg, "node-ip: %s\n", n.ip)
		fmt.Fprintf(&env, "K3S_TOKEN='%s'\nK3S_URL='%s'\n", l.token, peer.serverURL())
	}
	if err := writeFile(n.host(n.configFile), []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	if err := writeFile(n.host(n.envFile), []byte(env.String()), 0o600); err != nil {
		return err
	}
	sub := "server"
	if !n.isServer() {
		sub = "agent"
	}
	unit := k3s.WriteUnit(sub, args, n.envFile)
	if err := writeFile(n.host(n.unitFile), unit, 0o644); err != nil {
		return err
	}

	return nil
}

func bootstrapPath(rel string) (k3s.BootstrapFile, bool) {
	for _, bf := range k3s.BootstrapFiles {
		if bf.Path == rel {
			return bf, true
		}
	}
	return k3s.BootstrapFile{}, false
}

// writeClientKey creates the lab's SSH client key DIR/id_ed25519 (0600).
func (l *Lab) writeClientKey() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "caretaker lab")
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	l.clientKey = signer
	p := filepath.Join(l.opts.Dir, "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	return os.WriteFile(p+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644)
}
