package inventory

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Nodes: their fields, SSH settings and K3s paths as the inventory gives
// them, and the defaults for what it leaves out.

var sshKeys = []string{"user", "port", "identity_files", "agent", "known_hosts", "host_key_policy", "connect_timeout", "command_timeout", "keepalive", "jump_host", "config_file"}

func (p *invParser) ssh(n *yaml.Node, field string, s *SSHSettings) error {
	return p.mapping(n, field, sshKeys, func(key string, v, _ *yaml.Node) error {
		f := field + "." + key
		var err error
		switch key {
		case "user":
			s.User, err = p.str(v, f)
		case "port":
			s.Port, err = p.port(v, f)
		case "identity_files":
			var l []string
			l, err = p.strList(v, f)
			s.IdentityFiles, s.IdentityFilesAt = nil, p.at(v, f)
			for _, x := range l {
				s.IdentityFiles = append(s.IdentityFiles, p.path(x))
			}
		case "agent":
			s.UseAgent, err = p.boolean(v, f)
		case "known_hosts":
			var x string
			x, err = p.str(v, f)
			s.KnownHosts, s.KnownHostsAt = p.path(x), p.at(v, f)
		case "host_key_policy":
			var x string
			x, err = p.str(v, f)
			switch HostKeyPolicy(x) {
			case HostKeyStrict, HostKeyAcceptNew:
				s.HostKeyPolicy = HostKeyPolicy(x)
			default:
				return p.errf(v, f, "must be strict or accept-new, got %q", x)
			}
		case "connect_timeout":
			s.ConnectTimeout, err = p.duration(v, f)
		case "command_timeout":
			s.CommandTimeout, err = p.duration(v, f)
		case "keepalive":
			s.KeepAlive, err = p.duration(v, f)
		case "jump_host":
			s.JumpHost, err = p.str(v, f)
		case "config_file":
			var x string
			x, err = p.str(v, f)
			s.ConfigFile = p.path(x)
		}
		return err
	})
}

var nodeKeys = []string{"name", "address", "port", "user", "sudo", "role", "groups", "labels", "ssh_host", "ssh", "k3s"}
var k3sKeys = []string{"data_dir", "config_file", "unit_file", "env_files", "service", "kubeconfig", "etcd_endpoint", "supervisor_endpoint", "bootstrap_bug"}

func (p *invParser) node(n *yaml.Node, field string, cl *Cluster) (*Node, error) {
	node := &Node{Cluster: cl.Name, Line: n.Line, SSH: cl.SSH, K3s: cl.K3s}
	node.SSH.IdentityFiles = append([]string(nil), cl.SSH.IdentityFiles...)
	if cl.K3s.EnvFiles != nil {
		node.K3s.EnvFiles = append([]string(nil), cl.K3s.EnvFiles...)
	}
	var roleNode, addrNode *yaml.Node
	err := p.mapping(n, field, nodeKeys, func(key string, v, _ *yaml.Node) error {
		f := field + "." + key
		var err error
		switch key {
		case "name":
			node.Name, err = p.str(v, f)
		case "address":
			addrNode = v
			node.Address, err = p.str(v, f)
		case "port":
			node.Port, err = p.port(v, f)
		case "user":
			node.User, err = p.str(v, f)
		case "sudo":
			node.Sudo, err = p.boolean(v, f)
		case "role":
			roleNode = v
			node.Role, err = p.str(v, f)
		case "groups":
			node.Groups, err = p.strList(v, f)
		case "labels":
			node.Labels = map[string]string{}
			if v.Kind != yaml.MappingNode {
				return p.errf(v, f, "must be a mapping of label names to values")
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				node.Labels[v.Content[i].Value] = v.Content[i+1].Value
			}
		case "ssh_host":
			node.SSHHost, err = p.str(v, f)
		case "ssh":
			err = p.ssh(v, f, &node.SSH)
		case "k3s":
			err = p.k3s(v, f, &node.K3s)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if node.Name == "" {
		return nil, p.errf(n, field+".name", "is required: every node needs a name")
	}
	if node.Address == "" && node.SSHHost == "" {
		return nil, p.errf(n, field+".address", "is required (an IP address or host name), unless ssh_host names a ~/.ssh/config entry")
	}
	if node.Address != "" && !validHost(node.Address) {
		return nil, p.errf(addrNode, field+".address", "must be an IP address or a host name, got %q", node.Address)
	}
	switch node.Role {
	case RoleServer, RoleAgent:
	case "":
		return nil, p.errf(n, field+".role", "is required: server or agent")
	default:
		return nil, p.errf(roleNode, field+".role", "must be server or agent, got %q", node.Role)
	}
	applyNodeDefaults(node)
	return node, nil
}

func (p *invParser) k3s(n *yaml.Node, field string, k *K3sPaths) error {
	return p.mapping(n, field, k3sKeys, func(key string, v, _ *yaml.Node) error {
		f := field + "." + key
		var err error
		switch key {
		case "data_dir":
			k.DataDir, err = p.str(v, f)
		case "config_file":
			k.ConfigFile, err = p.str(v, f)
		case "unit_file":
			k.UnitFile, err = p.str(v, f)
		case "env_files":
			k.EnvFiles, err = p.strList(v, f)
		case "service":
			k.Service, err = p.str(v, f)
		case "kubeconfig":
			k.KubeConfig, err = p.str(v, f)
		case "etcd_endpoint":
			k.EtcdEndpoint, err = p.endpoint(v, f)
		case "supervisor_endpoint":
			k.SupervisorEndpoint, err = p.endpoint(v, f)
		case "bootstrap_bug":
			k.BootstrapBug, err = p.bootstrapBug(v, f)
			k.BootstrapBugFrom = fmt.Sprintf("%s:%d %s", filepath.Base(p.file), v.Line, f)
		}
		return err
	})
}

// endpoint reads a host:port endpoint.
func (p *invParser) endpoint(n *yaml.Node, field string) (string, error) {
	s, err := p.str(n, field)
	if err != nil || s == "" {
		return s, err
	}
	if err := checkEndpoint(s); err != nil {
		return "", p.errf(n, field, "%v", err)
	}
	return s, nil
}

// bootstrapBug reads k3s.bootstrap_bug: auto, or a boolean (true/false,
// yes/no as YAML spells them).
func (p *invParser) bootstrapBug(n *yaml.Node, field string) (string, error) {
	if n.Kind == yaml.ScalarNode && n.Value == BootstrapBugAuto {
		return BootstrapBugAuto, nil
	}
	b, err := p.boolean(n, field)
	if err != nil {
		return "", p.errf(n, field, "must be auto, true or false, got %q (true: the nodes have bug k3s-io/k3s#11233 whatever their version says)", n.Value)
	}
	if b {
		return BootstrapBugTrue, nil
	}
	return BootstrapBugFalse, nil
}

// applyNodeDefaults fills in what the inventory left out with K3s's and
// OpenSSH's defaults.
func applyNodeDefaults(n *Node) {
	if n.User == "" {
		n.User = n.SSH.User
	}
	if n.Port == 0 {
		n.Port = n.SSH.Port
	}
	if n.SSHHost == "" {
		if n.Port == 0 {
			n.Port = 22
		}
		if n.User == "" {
			n.User = currentUser()
		}
	}
	if n.SSH.HostKeyPolicy == "" {
		n.SSH.HostKeyPolicy = HostKeyStrict
	}
	k := &n.K3s
	if k.DataDir == "" {
		k.DataDir = DefaultDataDir
	}
	if k.ConfigFile == "" {
		k.ConfigFile = DefaultConfigFile
	}
	if k.Service == "" {
		k.Service = DefaultServerService
		if n.Role == RoleAgent {
			k.Service = DefaultAgentService
		}
	}
	if k.UnitFile == "" {
		k.UnitFile = "/etc/systemd/system/" + k.Service + ".service"
	}
	if k.EnvFiles == nil {
		// install.sh's EnvironmentFile lines (k3s-ca-rotation.md §7).
		k.EnvFiles = []string{"/etc/default/" + k.Service, "/etc/sysconfig/" + k.Service, k.UnitFile + ".env"}
	}
	if k.KubeConfig == "" {
		k.KubeConfig = "/etc/rancher/k3s/k3s.yaml"
	}
	if k.EtcdEndpoint == "" {
		k.EtcdEndpoint = "127.0.0.1:2379"
	}
	if k.SupervisorEndpoint == "" {
		k.SupervisorEndpoint = "127.0.0.1:6443"
	}
	if k.BootstrapBug == "" {
		k.BootstrapBug = BootstrapBugAuto
	}
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}
