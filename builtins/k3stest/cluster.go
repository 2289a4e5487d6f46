package k3stest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/internal/kubesim"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// Options describe a fake cluster. The zero value is the default cluster.
type Options struct {
	// Servers and Agents are the node counts; default 3 and 2 (Agents -1
	// means none).
	Servers, Agents int
	// Version is every node's K3s version; default v1.30.10+k3s1.
	// NodeVersions overrides it per node.
	Version      string
	NodeVersions map[string]string
	// Scenario is "init-replaced" (default: server-1 joins through
	// server-2, the others through server-1) or "cluster-init".
	Scenario string
	// ServerSource says per server where `server` is set: config
	// (default), dropin, unit or env.
	ServerSource map[string]string
	// SecureToken configures the nodes with K10<hash>::server:<password>.
	SecureToken bool
	// BootstrapBug makes servers answer /v1-k3s/server-bootstrap from
	// their disk whatever their version (bug #11233 in a build whose
	// version string says it is fixed).
	BootstrapBug bool
	// Labels and Groups give nodes inventory labels and groups, so
	// playbooks with label: and group: selectors can be tested.
	Labels map[string]map[string]string
	Groups map[string][]string
	// LeafAgeDays makes the named nodes' leaf certificates look issued
	// that many days ago (they expire 365 days after issue), after the
	// first start: certificates K3s renews at the next start when within
	// the release's window (k3s.RenewDays).
	LeafAgeDays map[string]int
}

// Cluster is a K3s cluster in miniature for unit tests of the k3s
// builtins and the playbooks: each node is a fake.Executor whose files are
// the node's K3s files and whose k3s, systemctl and journalctl commands
// follow K3s's rules closely enough to exercise the playbooks' logic
// (config-source merging, bootstrap from the peer's disk on releases with
// bug #11233, rotate-ca, leaf renewal, token hash checks). The datastore is
// the Env's embedded etcd, reached through the executors' Dial like the
// real thing; supervisors answer /cacerts and /readyz over TLS on
// in-memory connections, and serve the Kubernetes API of the lab's
// simulator (internal/kubesim: one store per cluster, client-certificate
// authentication, the simulated controller manager led by the first
// server to start). The lab (package lab) is the faithful simulator of
// K3s; this is for fast tests.
type Cluster struct {
	// Inventory is the cluster as the real inventory loader parsed it:
	// servers server-1..N at 10.0.0.1.., then agents agent-1..M.
	Inventory *inventory.Cluster
	// Execs are the nodes' executors by node name.
	Execs map[string]*fake.Executor
	// StateDir is a controller state directory for runs against the
	// cluster (runner.RunOptions.StateDir).
	StateDir string

	env      *Env
	dir      string
	cli      *clientv3.Client
	password string
	token    string
	opts     Options

	mu    sync.Mutex // guards the nodes' simulated state
	nodes map[string]*simNode

	kube     *kubesim.Store // the Kubernetes API's objects
	done     chan struct{}  // closed by Close: the API's controllers stop
	doneOnce sync.Once
}

// simNode is the simulated K3s of one node.
type simNode struct {
	n       *inventory.Node
	ex      *fake.Executor
	version k3s.Version
	ip      string

	state       string
	fault       string
	cacerts     []byte      // server-ca.crt at the last start (servers)
	sup         *supervisor // the running server's supervisor, nil when its K3s is not up
	journal     []string
	restarts    int
	reloads     int
	rotateLeafs bool
	// auth is the passwd file a server read at its start (user ->
	// password): what it authenticates agents and servers against until
	// it restarts, as K3s's basic-auth file.
	auth map[string]string
}

// NewCluster builds and starts a fake cluster whose datastore is env's
// etcd. Close removes it.
func NewCluster(env *Env, o Options) (c *Cluster, err error) {
	cli, err := env.client()
	if err != nil {
		return nil, err
	}
	if o.Servers == 0 {
		o.Servers = 3
	}
	switch {
	case o.Agents == 0:
		o.Agents = 2
	case o.Agents < 0:
		o.Agents = 0
	}
	if o.Version == "" {
		o.Version = "v1.30.10+k3s1"
	}
	if o.Scenario == "" {
		o.Scenario = "init-replaced"
	}
	dir, err := os.MkdirTemp("", "caretaker-fake-k3s-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Execs: map[string]*fake.Executor{}, nodes: map[string]*simNode{}, env: env, cli: cli, dir: dir, StateDir: filepath.Join(dir, "state"), opts: o,
		done: make(chan struct{})}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	c.password = hex.EncodeToString(pw)
	cas := env.clusterCAs()
	c.kube = kubesim.NewStore(kubeHost{c}, cas[k3s.PathServerCA])
	cas[k3s.PathPasswd] = k3s.PasswdFile(c.password, c.password)
	c.token = c.password
	if o.SecureToken {
		h, err := k3s.HashCA(cas[k3s.PathServerCA])
		if err != nil {
			return nil, err
		}
		c.token = k3s.FormatToken(h, "server", c.password)
	}
	names, err := c.loadInventory(o)
	if err != nil {
		return nil, err
	}
	for i, n := range c.Inventory.Nodes {
		v := o.Version
		if nv, ok := o.NodeVersions[n.Name]; ok {
			v = nv
		}
		ver, err := k3s.ParseVersion(v)
		if err != nil {
			return nil, err
		}
		sn := &simNode{n: n, ex: fake.New(n.Name), version: ver, ip: fmt.Sprintf("10.0.0.%d", i+1), state: "inactive"}
		unknownCommands(sn.ex, n.Name)
		c.nodes[n.Name] = sn
		c.Execs[n.Name] = sn.ex
		c.handle(sn)
	}
	for _, n := range c.Inventory.Nodes {
		if err := c.writeTree(c.nodes[n.Name], cas); err != nil {
			return nil, fmt.Errorf("fake %s: %w", n.Name, err)
		}
	}
	// Seed the datastore as the first server saved it.
	seed := k3s.BootstrapData{}
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := cas[bf.Path]; ok {
			seed[bf.Key] = k3s.File{Timestamp: env.t0, Content: b}
		}
	}
	if err := c.saveBootstrap(context.Background(), seed); err != nil {
		return nil, err
	}
	for _, name := range names {
		sn := c.nodes[name]
		if err := c.start(sn); err != nil {
			return nil, fmt.Errorf("fake %s did not start: %w (%s)", name, err, strings.Join(sn.journal, "; "))
		}
	}
	if err := c.ageLeaves(o.LeafAgeDays); err != nil {
		return nil, err
	}
	return c, nil
}

// loadInventory writes the cluster's inventory and parses it with the
// real loader, so that every default is filled in. It returns the node
// names in the order the nodes first start.
func (c *Cluster) loadInventory(o Options) ([]string, error) {
	var inv strings.Builder
	var names []string
	inv.WriteString("clusters:\n  - name: fake\n    nodes:\n")
	for i := 1; i <= o.Servers+o.Agents; i++ {
		role, name := "server", fmt.Sprintf("server-%d", i)
		if i > o.Servers {
			role, name = "agent", fmt.Sprintf("agent-%d", i-o.Servers)
		}
		names = append(names, name)
		ip := fmt.Sprintf("10.0.0.%d", i)
		fmt.Fprintf(&inv, "      - name: %s\n        address: %s\n        role: %s\n", name, ip, role)
		if role == "server" {
			fmt.Fprintf(&inv, "        k3s: {etcd_endpoint: %q, supervisor_endpoint: %q}\n", c.env.etcdAddr, ip+":6443")
		}
		writeLabelsAndGroups(&inv, o.Labels[name], o.Groups[name])
	}
	if err := knownNodes(names, o); err != nil {
		return nil, err
	}
	invPath := filepath.Join(c.dir, "inventory.yaml")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o600); err != nil {
		return nil, err
	}
	parsed, err := inventory.Load(invPath)
	if err != nil {
		return nil, fmt.Errorf("fake inventory: %w", err)
	}
	c.Inventory = parsed.Clusters[0]
	return names, nil
}

// unknownCommands makes a command the fake does not know fail as a shell
// does (127), saying how a test stubs it. Registered first, so every
// other handler wins over it.
func unknownCommands(ex *fake.Executor, node string) {
	ex.OnFunc(`.*`, func(line string, _ []byte, _, stderr io.Writer) int {
		fmt.Fprintf(stderr, "fake cluster: %s does not know the command %q; stub it in the test: cluster.on(PATTERN, stdout=\"...\", code=0)\n", node, line)
		return 127
	})
}

// writeLabelsAndGroups adds a node's labels and groups to the fake
// inventory (JSON strings are YAML flow scalars).
func writeLabelsAndGroups(inv *strings.Builder, labels map[string]string, groups []string) {
	if len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		inv.WriteString("        labels: {")
		for i, k := range keys {
			if i > 0 {
				inv.WriteString(", ")
			}
			fmt.Fprintf(inv, "%q: %q", k, labels[k])
		}
		inv.WriteString("}\n")
	}
	if len(groups) > 0 {
		inv.WriteString("        groups: [")
		for i, g := range groups {
			if i > 0 {
				inv.WriteString(", ")
			}
			fmt.Fprintf(inv, "%q", g)
		}
		inv.WriteString("]\n")
	}
}

// knownNodes refuses labels and groups for nodes the cluster does not have.
func knownNodes(names []string, o Options) error {
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	for n := range o.Labels {
		if !known[n] {
			return fmt.Errorf("labels: no node %q (nodes: %s)", n, strings.Join(names, ", "))
		}
	}
	for n := range o.Groups {
		if !known[n] {
			return fmt.Errorf("groups: no node %q (nodes: %s)", n, strings.Join(names, ", "))
		}
	}
	return nil
}

// Close stops the servers' supervisors and removes the cluster's files
// and its datastore key.
func (c *Cluster) Close() {
	c.doneOnce.Do(func() { close(c.done) })
	c.mu.Lock()
	for _, sn := range c.nodes {
		c.stopSupervisor(sn)
	}
	c.mu.Unlock()
	if cli, err := c.env.client(); err == nil && c.password != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = cli.Delete(ctx, k3s.StorageKey(c.password))
		cancel()
	}
	os.RemoveAll(c.dir)
}

// Pool returns a pool of the cluster's executors for runner.RunOptions.
func (c *Cluster) Pool() *runner.Pool {
	return runner.NewPool(func(ctx context.Context, n *inventory.Node) (transport.Executor, error) {
		ex, ok := c.Execs[n.Name]
		if !ok {
			return nil, fmt.Errorf("fake: no node %s", n.Name)
		}
		return ex, nil
	})
}

// Node returns the inventory node of that name, or nil.
func (c *Cluster) Node(name string) *inventory.Node {
	if sn, ok := c.nodes[name]; ok {
		return sn.n
	}
	return nil
}

// Token is the token the nodes are configured with.
func (c *Cluster) Token() string { return c.token }

// Datastore returns the decrypted bootstrap data.
func (c *Cluster) Datastore(ctx context.Context) (k3s.BootstrapData, error) {
	resp, err := c.cli.Get(ctx, k3s.StorageKey(c.password))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) != 1 {
		return nil, errors.New("fake: no bootstrap data")
	}
	plain, err := k3s.Decrypt(c.password, string(resp.Kvs[0].Value))
	if err != nil {
		return nil, err
	}
	return k3s.UnmarshalBootstrap(plain)
}

// saveBootstrap stores d encrypted under the cluster's key.
func (c *Cluster) saveBootstrap(ctx context.Context, d k3s.BootstrapData) error {
	plain, err := k3s.MarshalBootstrap(d)
	if err != nil {
		return err
	}
	sealed, err := k3s.Encrypt(c.password, plain)
	if err != nil {
		return err
	}
	_, err = c.cli.Put(ctx, k3s.StorageKey(c.password), sealed)
	return err
}

// kubeHost is the cluster as the Kubernetes API's host.
type kubeHost struct{ c *Cluster }

// Agents is the number of agents: DaemonSet pods run there.
func (h kubeHost) Agents() int64 { return int64(h.c.opts.Agents) }

// Done is closed when the cluster is closed.
func (h kubeHost) Done() <-chan struct{} { return h.c.done }

// stopSupervisor ends the node's supervisor (its K3s stops or restarts).
// Called with c.mu held.
func (c *Cluster) stopSupervisor(sn *simNode) {
	if sn.sup != nil {
		sn.sup.stop(c.kube)
		sn.sup = nil
	}
}

func (c *Cluster) lookup(name string) (*simNode, error) {
	sn, ok := c.nodes[name]
	if !ok {
		return nil, fmt.Errorf("fake cluster has no node %q", name)
	}
	return sn, nil
}

// serverDir is DATA_DIR/server, where a server keeps its CAs and token
// (the builtins' own rule).
func serverDir(n *inventory.Node) string { return strings.TrimSuffix(n.K3s.DataDir, "/") + "/server" }

func (sn *simNode) sd() string { return serverDir(sn.n) }
func (sn *simNode) dd() string { return strings.TrimSuffix(sn.n.K3s.DataDir, "/") }

func (sn *simNode) file(p string) []byte {
	b, _ := sn.ex.File(p)
	return b
}

func (sn *simNode) log(format string, args ...any) {
	sn.journal = append(sn.journal, fmt.Sprintf("%s %s[%d]: %s", time.Now().Format("Jan 02 15:04:05"), "k3s", 1000+sn.restarts, fmt.Sprintf(format, args...)))
}

// peerOf is the server a node joins through.
func (c *Cluster) peerOf(sn *simNode) *simNode {
	var servers []*simNode
	for _, n := range c.Inventory.Nodes {
		if n.Role == inventory.RoleServer {
			servers = append(servers, c.nodes[n.Name])
		}
	}
	if sn.n.Role == inventory.RoleAgent {
		idx := 0
		_, _ = fmt.Sscanf(sn.n.Name, "agent-%d", &idx) // names are agent-N by construction
		return servers[(idx-1)%len(servers)]
	}
	if sn == servers[0] {
		if c.opts.Scenario == "cluster-init" || len(servers) == 1 {
			return nil
		}
		return servers[1]
	}
	return servers[0]
}

// writeTree lays out a node's files as install.sh and a first start would.
func (c *Cluster) writeTree(sn *simNode, cas map[string][]byte) error {
	k := sn.n.K3s
	envFile := k.UnitFile + ".env"
	peer := c.peerOf(sn)
	var cfg, env strings.Builder
	var args []string
	cfg.WriteString("# written by the fake cluster for " + sn.n.Name + "\n")
	isServer := sn.n.Role == inventory.RoleServer
	if isServer {
		fmt.Fprintf(&cfg, "token: %s\n", c.token)
		fmt.Fprintf(&cfg, "node-ip: %s\n", sn.ip)
		switch {
		case peer == nil:
			cfg.WriteString("cluster-init: true\n")
		default:
			u := "https://" + peer.ip + ":6443"
			switch c.opts.ServerSource[sn.n.Name] {
			case "dropin":
				sn.ex.SetFile(k.ConfigFile+".d/50-server.yaml", []byte("server: "+u+"\n"), 0o644)
			case "unit":
				args = append(args, "--server", u)
			case "env":
				fmt.Fprintf(&env, "K3S_URL='%s'\n", u)
			default:
				fmt.Fprintf(&cfg, "server: %s\n", u)
			}
		}
	} else {
		fmt.Fprintf(&cfg, "node-ip: %s\n", sn.ip)
		fmt.Fprintf(&env, "K3S_TOKEN='%s'\nK3S_URL='https://%s:6443'\n", c.token, peer.ip)
	}
	sn.ex.SetFile(k.ConfigFile, []byte(cfg.String()), 0o600)
	sn.ex.SetFile(envFile, []byte(env.String()), 0o600)
	sub := "server"
	if !isServer {
		sub = "agent"
	}
	sn.ex.SetFile(k.UnitFile, k3s.WriteUnit(sub, args, envFile), 0o644)
	leaves, err := c.env.leavesFor(k3s.LeafOptions{NodeName: sn.n.Name, NodeIPs: []net.IP{net.ParseIP(sn.ip)}, Now: c.env.t0, Agent: !isServer})
	if err != nil {
		return err
	}
	for p, b := range leaves {
		sn.ex.SetFile(sn.dd()+"/"+p, b, 0o600)
	}
	if isServer {
		for p, b := range cas {
			sn.ex.SetFile(sn.sd()+"/"+p, b, 0o600)
		}
		// The embedded etcd's data directory (its content is not used).
		sn.ex.SetFile(sn.sd()+"/db/etcd/member/snap/db", []byte("fake etcd database\n"), 0o600)
	}
	return nil
}

// sources reads the node's config sources from its files.
func (sn *simNode) sources() k3s.Sources {
	k := sn.n.K3s
	src := k3s.Sources{UnitPath: k.UnitFile, ConfigPath: k.ConfigFile, Unit: sn.file(k.UnitFile), Config: sn.file(k.ConfigFile)}
	for _, p := range sn.ex.Files() {
		switch {
		case path.Dir(p) == k.UnitFile+".d" && strings.HasSuffix(p, ".conf"):
			src.UnitDropIns = append(src.UnitDropIns, k3s.NamedFile{Path: p, Data: sn.file(p)})
		case path.Dir(p) == k.ConfigFile+".d" && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")):
			src.DropIns = append(src.DropIns, k3s.NamedFile{Path: p, Data: sn.file(p)})
		}
	}
	seen := map[string]bool{}
	for _, p := range append(k3s.UnitEnvironmentFiles(src.Unit, k.Service), k.EnvFiles...) {
		if !seen[p] {
			seen[p] = true
			src.EnvFiles = append(src.EnvFiles, k3s.NamedFile{Path: p, Data: sn.file(p)})
		}
	}
	return src
}

// serverByURL finds the server a https://host:port URL points at.
func (c *Cluster) serverByURL(u string) *simNode {
	pu, err := url.Parse(u)
	if err != nil {
		return nil
	}
	for _, sn := range c.nodes {
		if sn.n.Role == inventory.RoleServer && sn.ip == pu.Hostname() {
			return sn
		}
	}
	return nil
}

// caSet returns the node's CA files keyed relative to the server
// directory.
func (sn *simNode) caSet() map[string][]byte {
	out := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := sn.ex.File(sn.sd() + "/" + bf.Path); ok {
			out[bf.Path] = b
		}
	}
	return out
}
