package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caretaker/caretaker/runner/errs"
)

// Error reports a problem in an inventory file: which file, line
// and field, and what is allowed there.
type Error struct {
	File    string
	Line    int
	Field   string // dotted path, e.g. clusters[0].nodes[2].role
	Problem string // what is wrong and what is allowed
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Problem)
	}
	return fmt.Sprintf("%s: %s", loc, e.Problem)
}

// Is makes errors.Is(err, ErrBadInput) true.
func (e *Error) Is(target error) bool { return target == errs.ErrBadInput }

// Load reads and validates an inventory file. Relative paths in it
// (identity files, known_hosts) are resolved against the file's directory.
// Unknown keys are errors.
func Load(path string) (*Inventory, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("inventory %s is a directory; give the inventory file with -i FILE (for a lab: DIR/inventory.yaml): %w", path, errs.ErrBadInput)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w; give the inventory file with -i FILE: %w", err, errs.ErrBadInput)
	}
	return Parse(path, data)
}

// Parse parses inventory YAML; path is used for messages and to
// resolve relative paths.
func Parse(path string, data []byte) (*Inventory, error) {
	p := &invParser{file: path, dir: filepath.Dir(path)}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: path, Problem: "the inventory is empty; it needs a top-level 'clusters:' list (see README.md, Inventory)"}
		}
		return nil, yamlError(path, data, err)
	}
	// "---" alone is a document holding null (FuzzParse found its error
	// pointing at line 2 of a one-line file): as empty as no document.
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
		return nil, &Error{File: path, Problem: "the inventory is empty; it needs a top-level 'clusters:' list (see README.md, Inventory)"}
	}
	inv := &Inventory{Path: path}
	if err := p.inventory(doc.Content[0], inv); err != nil {
		return nil, err
	}
	return inv, nil
}

// hasServer says whether nodes include a server.
func hasServer(nodes []*Node) bool {
	for _, n := range nodes {
		if n.Role == RoleServer {
			return true
		}
	}
	return false
}

// yamlError turns a YAML syntax error into an Error on the line where
// the problem is. yaml.v3 reports the line of the enclosing block for many
// errors ("did not find expected key" on the line before the block), so
// the line is found again: a tab in indentation directly, otherwise as the
// first line whose prefix of the file no longer parses.
func yamlError(path string, data []byte, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	line := 0
	if strings.HasPrefix(msg, "yaml: line ") {
		rest := strings.TrimPrefix(msg, "yaml: line ")
		if i := strings.Index(rest, ":"); i > 0 {
			line, _ = strconv.Atoi(rest[:i])
			msg = strings.TrimSpace(rest[i+1:])
		}
	}
	lines := strings.SplitAfter(string(data), "\n")
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(msg, "tab") && strings.Contains(indent, "\t") {
			return &Error{File: path, Line: i + 1, Problem: fmt.Sprintf("not valid YAML: a tab in the indentation (column %d); YAML indents with spaces only", strings.Index(indent, "\t")+1)}
		}
	}
	if first := firstFailingLine(lines); first > 0 {
		line = first
	}
	return &Error{File: path, Line: line, Problem: "not valid YAML: " + msg}
}

// firstFailingLine is the smallest n such that the first n lines do not
// parse (0 when every prefix parses), by bisection: a YAML prefix that
// fails keeps failing as lines are added.
func firstFailingLine(lines []string) int {
	fails := func(n int) bool {
		var doc yaml.Node
		err := yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &doc)
		return err != nil
	}
	if !fails(len(lines)) {
		return 0
	}
	lo, hi := 0, len(lines) // fails(hi); !fails(lo) (the empty prefix parses)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

type invParser struct {
	file string
	dir  string
}

func (p *invParser) errf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Field: field, Problem: fmt.Sprintf(format, args...)}
}

// mapping walks a YAML mapping, refusing keys outside allowed.
func (p *invParser) mapping(n *yaml.Node, field string, allowed []string, fn func(key string, val *yaml.Node, kn *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, field, "must be a mapping with keys: %s", strings.Join(allowed, ", "))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		sub := key
		if field != "" {
			sub = field + "." + key
		}
		ok := false
		for _, a := range allowed {
			if a == key {
				ok = true
			}
		}
		if !ok {
			return p.errf(k, sub, "unknown key %q; allowed here: %s", key, strings.Join(allowed, ", "))
		}
		if seen[key] {
			return p.errf(k, sub, "key %q given twice", key)
		}
		seen[key] = true
		if err := fn(key, v, k); err != nil {
			return err
		}
	}
	return nil
}

// at names a field's place for messages: "FILE:LINE: FIELD".
func (p *invParser) at(n *yaml.Node, field string) string {
	return fmt.Sprintf("%s:%d: %s", p.file, n.Line, field)
}

func (p *invParser) str(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!map" || n.Tag == "!!seq" {
		return "", p.errf(n, field, "must be a string")
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func (p *invParser) boolean(n *yaml.Node, field string) (bool, error) {
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on":
			return true, nil
		case "false", "no", "off":
			return false, nil
		}
	}
	return false, p.errf(n, field, "must be yes or no (true/false), got %q", n.Value)
}

func (p *invParser) port(n *yaml.Node, field string) (int, error) {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 1 || v > 65535 {
		return 0, p.errf(n, field, "must be a port number from 1 to 65535, got %q", n.Value)
	}
	return v, nil
}

func (p *invParser) duration(n *yaml.Node, field string) (Duration, error) {
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || d < 0 {
		return 0, p.errf(n, field, "must be a duration such as 10s, 2m or 1h, got %q", n.Value)
	}
	return Duration(d), nil
}

func (p *invParser) strList(n *yaml.Node, field string) ([]string, error) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, field, "must be a list of strings")
	}
	var out []string
	for i, c := range n.Content {
		s, err := p.str(c, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// path resolves a file path from the inventory: ~ expands to $HOME and a
// relative path is taken from the inventory's directory.
func (p *invParser) path(s string) string {
	if s == "" {
		return ""
	}
	if strings.HasPrefix(s, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, s[2:])
		}
	}
	if filepath.IsAbs(s) {
		return s
	}
	return filepath.Join(p.dir, s)
}

func (p *invParser) inventory(n *yaml.Node, inv *Inventory) error {
	var clusters *yaml.Node
	err := p.mapping(n, "", []string{"clusters"}, func(key string, v, _ *yaml.Node) error {
		clusters = v
		return nil
	})
	if err != nil {
		return err
	}
	if clusters == nil || clusters.Kind != yaml.SequenceNode || len(clusters.Content) == 0 {
		return p.errf(n, "clusters", "must be a non-empty list of clusters, each with name, ssh and nodes")
	}
	names := map[string]int{}
	for i, c := range clusters.Content {
		field := fmt.Sprintf("clusters[%d]", i)
		cl, err := p.cluster(c, field)
		if err != nil {
			return err
		}
		if prev, dup := names[cl.Name]; dup {
			return p.errf(c, field+".name", "cluster %q is declared twice (first on line %d); names must be unique", cl.Name, prev)
		}
		names[cl.Name] = c.Line
		inv.Clusters = append(inv.Clusters, cl)
	}
	return nil
}

func (p *invParser) cluster(n *yaml.Node, field string) (*Cluster, error) {
	cl := &Cluster{Line: n.Line}
	var nodes *yaml.Node
	err := p.mapping(n, field, []string{"name", "ssh", "k3s", "kubeconfigs", "nodes"}, func(key string, v, _ *yaml.Node) error {
		var err error
		switch key {
		case "name":
			cl.Name, err = p.str(v, field+".name")
		case "kubeconfigs":
			cl.Kubeconfigs, err = p.kubeconfigs(v, field+".kubeconfigs")
		case "ssh":
			err = p.ssh(v, field+".ssh", &cl.SSH)
		case "k3s":
			err = p.k3s(v, field+".k3s", &cl.K3s)
		case "nodes":
			nodes = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if cl.Name == "" {
		return nil, p.errf(n, field+".name", "is required: give the cluster a name")
	}
	if nodes == nil || nodes.Kind != yaml.SequenceNode || len(nodes.Content) == 0 {
		return nil, p.errf(n, field+".nodes", "must be a non-empty list of nodes")
	}
	seen := map[string]int{}
	for i, nn := range nodes.Content {
		nf := fmt.Sprintf("%s.nodes[%d]", field, i)
		node, err := p.node(nn, nf, cl)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[node.Name]; dup {
			return nil, p.errf(nn, nf+".name", "node %q is declared twice (first on line %d); names must be unique in a cluster", node.Name, prev)
		}
		seen[node.Name] = nn.Line
		cl.Nodes = append(cl.Nodes, node)
	}
	if !hasServer(cl.Nodes) {
		return nil, p.errf(nodes, field+".nodes", "cluster %q has no server (every node has role: agent); a K3s cluster has at least one server, and caretaker reaches the datastore and the cluster lock through one: mark the server nodes with role: server", cl.Name)
	}
	return cl, nil
}

// kubeconfigs reads the cluster's kubeconfig files on the controller:
// each must exist and be a regular file.
func (p *invParser) kubeconfigs(n *yaml.Node, field string) ([]string, error) {
	l, err := p.strList(n, field)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, x := range l {
		f := fmt.Sprintf("%s[%d]", field, i)
		path := p.path(x)
		st, err := os.Stat(path)
		switch {
		case err != nil:
			return nil, p.errf(n, f, "%s: %v (list the kubeconfig files on this machine that caretaker refreshes after a CA rotation)", path, errors.Unwrap(err))
		case !st.Mode().IsRegular():
			return nil, p.errf(n, f, "%s is not a regular file", path)
		}
		out = append(out, path)
	}
	return out, nil
}

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
