package inventory

// Inventory is the parsed inventory file: one or more clusters.
type Inventory struct {
	// Path is the file the inventory was read from.
	Path     string
	Clusters []*Cluster
}

// Cluster is a set of nodes maintained together.
type Cluster struct {
	Name string
	SSH  SSHSettings
	// K3s holds the cluster-wide k3s: settings; every node starts from them
	// and overrides what it sets itself.
	K3s K3sPaths
	// Kubeconfigs are kubeconfig files on the controller that caretaker
	// keeps trusting the cluster's CA (rewritten after a root change).
	Kubeconfigs []string
	Nodes       []*Node
	// Line is where the cluster is declared in the inventory file.
	Line int
}

// Role values.
const (
	RoleServer = "server"
	RoleAgent  = "agent"
)

// K3s defaults, as install.sh lays out a node.
const (
	DefaultDataDir       = "/var/lib/rancher/k3s"
	DefaultConfigFile    = "/etc/rancher/k3s/config.yaml"
	DefaultServerUnit    = "/etc/systemd/system/k3s.service"
	DefaultAgentUnit     = "/etc/systemd/system/k3s-agent.service"
	DefaultServerService = "k3s"
	DefaultAgentService  = "k3s-agent"
)

// Node is one machine of a cluster.
type Node struct {
	Name    string
	Cluster string
	Address string
	Port    int
	User    string
	Sudo    bool
	Role    string // RoleServer or RoleAgent
	Groups  []string
	Labels  map[string]string
	K3s     K3sPaths
	SSH     SSHSettings // the cluster's settings with this node's overrides applied
	// SSHHost names a Host entry of ~/.ssh/config whose HostName, Port,
	// User, IdentityFile and ProxyJump apply unless set here.
	SSHHost string
	// Line is where the node is declared in the inventory file.
	Line int
}

// K3sPaths are where K3s keeps its files on a node. Defaults follow
// install.sh; the lab overrides them to point into its per-node trees.
type K3sPaths struct {
	DataDir    string   // default /var/lib/rancher/k3s
	ConfigFile string   // default /etc/rancher/k3s/config.yaml; drop-ins in <config>.d/
	UnitFile   string   // default /etc/systemd/system/k3s.service (k3s-agent.service for agents)
	EnvFiles   []string // default: /etc/default/<svc>, /etc/sysconfig/<svc>, <unit>.env
	Service    string   // default k3s, k3s-agent for agents
	KubeConfig string   // default /etc/rancher/k3s/k3s.yaml
	// EtcdEndpoint is etcd's client address as dialed from the node through
	// the SSH tunnel; default 127.0.0.1:2379.
	EtcdEndpoint string
	// SupervisorEndpoint is the node's supervisor/API address as dialed from
	// the node through the SSH tunnel; default 127.0.0.1:6443.
	SupervisorEndpoint string
	// BootstrapBug overrides the version gate of bug k3s-io/k3s#11233 for
	// builds whose version string says nothing (vendor or patched builds):
	// BootstrapBugAuto (default: decide by version), BootstrapBugTrue or
	// BootstrapBugFalse. BootstrapBugFrom says where it was set.
	BootstrapBug     string
	BootstrapBugFrom string
}

// Values of K3sPaths.BootstrapBug.
const (
	BootstrapBugAuto  = "auto"
	BootstrapBugTrue  = "true"
	BootstrapBugFalse = "false"
)

// HostKeyPolicy says what to do with a host key that is not in known_hosts.
type HostKeyPolicy string

// Host key policies. A changed key is refused under every policy.
const (
	HostKeyStrict    HostKeyPolicy = "strict"     // unknown keys are refused
	HostKeyAcceptNew HostKeyPolicy = "accept-new" // unknown keys are recorded and accepted
)

// SSHSettings configure how nodes are reached.
type SSHSettings struct {
	User           string
	Port           int
	IdentityFiles  []string
	UseAgent       bool // use $SSH_AUTH_SOCK
	KnownHosts     string
	HostKeyPolicy  HostKeyPolicy
	ConnectTimeout Duration
	CommandTimeout Duration
	KeepAlive      Duration
	JumpHost       string // user@host:port, reached first
	ConfigFile     string // ssh_config to honour; default ~/.ssh/config
	// IdentityFilesAt and KnownHostsAt say where identity_files and
	// known_hosts were set ("inventory.yaml:7: clusters[0].ssh.known_hosts"),
	// for messages about those files.
	IdentityFilesAt, KnownHostsAt string
}
