package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// Scenarios: how the servers' `server` flags point at each other.
const (
	// ScenarioInitReplaced: the cluster-init server has been replaced, so
	// every server joins through a peer: server-1 → server-2, every other
	// server → server-1 (k3s-ca-rotation.md §1, issue #11233).
	ScenarioInitReplaced = "init-replaced"
	// ScenarioClusterInit: server-1 has cluster-init: true, the others
	// server: https://<server-1>:6443.
	ScenarioClusterInit = "cluster-init"
)

// SSH modes.
const (
	// SSHInProcess runs one x/crypto/ssh server per node inside the lab
	// process; it runs each command as the logged-in user with DIR/<node>
	// as its root.
	SSHInProcess = "inprocess"
	// SSHOpenSSH runs one real OpenSSH sshd per node, chrooted into
	// DIR/<node> in a UTS namespace of its own. Needs /usr/sbin/sshd.
	// Both modes need root and give the nodes the default K3s paths.
	SSHOpenSSH = "openssh"
)

// Where the `server` flag of a server is configured (§7 sources).
const (
	SourceConfig = "config" // /etc/rancher/k3s/config.yaml
	SourceDropIn = "dropin" // /etc/rancher/k3s/config.yaml.d/50-server.yaml
	SourceUnit   = "unit"   // ExecStart args of the unit, install.sh layout
	SourceEnv    = "env"    // K3S_URL in /etc/systemd/system/k3s.service.env
)

// Faults that can be injected into a node's service.
const (
	// FaultFailStart makes every start of the node's service fail (K3s
	// exits with a fatal error; Restart=always tries again after the
	// restart delay) until the fault is cleared.
	FaultFailStart = "fail-start"
	// FaultHangStart makes every start of the node's service hang before
	// it becomes ready (state activating, sub-state start), K3s logging an
	// error every few seconds, until the fault is cleared: then the
	// hanging start completes.
	FaultHangStart = "hang-start"
	// FaultClear removes any fault.
	FaultClear = "clear"
)

// DefaultVersion is the K3s version of lab nodes unless told otherwise: a
// release with the --server bootstrap bug.
const DefaultVersion = "v1.30.10+k3s1"

// DefaultSubnet is the first three octets of the nodes' loopback addresses.
const DefaultSubnet = "127.0.1"

// Options configure a lab.
type Options struct {
	// Dir holds everything of the lab: the nodes' trees, the etcd data, the
	// inventory, keys and the control socket. Created if missing.
	Dir string
	// Name is the cluster name in the inventory; default "lab".
	Name string
	// Servers and Agents are the node counts (servers ≥ 1).
	Servers, Agents int
	// Version is the K3s version of every node; NodeVersions overrides it
	// per node name (a mixed cluster during an upgrade).
	Version      string
	NodeVersions map[string]string
	// Scenario is ScenarioInitReplaced (default) or ScenarioClusterInit.
	Scenario string
	// ServerSource says per server node where `server` is configured:
	// SourceConfig (default), SourceDropIn, SourceUnit or SourceEnv.
	ServerSource map[string]string
	// Token is the password of the cluster token (the passphrase of the
	// datastore key); default a random one. It must not contain ',' or
	// newlines (it lands in the CSV passwd file).
	Token string
	// SecureToken configures nodes with the full K10<ca-hash>::server:<pw>
	// token instead of the bare password.
	SecureToken bool
	// SSH is SSHInProcess (default) or SSHOpenSSH.
	SSH string
	// Subnet is the first three octets of the node addresses: node N of
	// the lab is <Subnet>.N. Default DefaultSubnet; parallel labs need
	// distinct subnets (see AllocateSubnet).
	Subnet string
	// ShimBinary is the executable the nodes' k3s, systemctl and
	// journalctl commands link to; it must call RunShim first thing.
	// Default: the running executable (the caretaker binary).
	ShimBinary string
	// Logf receives the daemon's own diagnostics (not node journals).
	Logf func(format string, args ...any)
	// Engine is EngineSim (default) or EngineReal; see StartEngine.
	Engine string
	// K3sBinary is the K3s binary (or a .xz of one) the real engine runs;
	// default $CARETAKER_K3S_BINARY, else ../shared/k3s/k3s.xz.
	K3sBinary string
	// BootstrapBug makes every server answer /v1-k3s/server-bootstrap from
	// its disk whatever its version says (bug k3s-io/k3s#11233 in a build
	// that reports a fixed version; the real engine's
	// K3S_SERVE_BOOTSTRAP_FROM_DISK toggle). The inventory then says
	// k3s: {bootstrap_bug: true}.
	BootstrapBug bool
	// StartDelay is how long a service start takes once the lab is up,
	// before the service reports active (or failed): real K3s servers take
	// 10–15 s to come back (k3s-golden README time line), the simulation
	// ~0.1 s. Default 0, for fast tests; benchmarks of whole procedures set
	// it so that "unavoidable waits" are realistic.
	StartDelay time.Duration
	// RestartDelay is RestartSec of the units (Restart=always): how long a
	// unit whose K3s exited stays activating/auto-restart before systemd
	// starts it again. Default DefaultRestartDelay (5 s, the installer's);
	// tests set it short.
	RestartDelay time.Duration
	// ServingCertSyncDelay is the time from a server's start completing to
	// its sync with the shared kube-system/k3s-serving secret (real K3s:
	// 0.3-2.3 s after the unit is active, 27 restarts measured); running
	// servers that synced adopt each later write within 20 ms.
	// Default DefaultServingCertSyncDelay.
	ServingCertSyncDelay time.Duration
}

// DefaultServingCertSyncDelay is Options.ServingCertSyncDelay's default.
const DefaultServingCertSyncDelay = time.Second

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, fmt.Errorf("lab: no directory given (--dir)")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("lab: directory %q: %w", o.Dir, err)
	}
	o.Dir = abs
	if o.Name == "" {
		o.Name = "lab"
	}
	if o.Servers < 1 {
		return o, fmt.Errorf("lab: --servers must be at least 1, got %d", o.Servers)
	}
	if o.Agents < 0 {
		return o, fmt.Errorf("lab: --agents must not be negative, got %d", o.Agents)
	}
	if o.Servers+o.Agents > 250 {
		return o, fmt.Errorf("lab: at most 250 nodes fit in one subnet, got %d", o.Servers+o.Agents)
	}
	if strings.ContainsAny(o.Token, ",\n\r'\" ") {
		return o, fmt.Errorf("lab: the token password must not contain commas, quotes, spaces or newlines")
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if _, err := k3s.ParseVersion(o.Version); err != nil {
		return o, fmt.Errorf("lab: --version %q: %w", o.Version, err)
	}
	names := map[string]bool{}
	for _, n := range nodeNames(o.Servers, o.Agents) {
		names[n.name] = true
	}
	for n, v := range o.NodeVersions {
		if !names[n] {
			return o, fmt.Errorf("lab: --node-version names unknown node %q (nodes: %s)", n, strings.Join(sortedKeys(names), ", "))
		}
		if _, err := k3s.ParseVersion(v); err != nil {
			return o, fmt.Errorf("lab: --node-version %s=%s: %w", n, v, err)
		}
	}
	switch o.Scenario {
	case "":
		o.Scenario = ScenarioInitReplaced
	case ScenarioInitReplaced, ScenarioClusterInit:
	default:
		return o, fmt.Errorf("lab: unknown scenario %q (want %s or %s)", o.Scenario, ScenarioInitReplaced, ScenarioClusterInit)
	}
	for n, s := range o.ServerSource {
		if !names[n] || !strings.HasPrefix(n, "server-") {
			return o, fmt.Errorf("lab: --server-source names %q, which is not a server of this lab", n)
		}
		switch s {
		case SourceConfig, SourceDropIn, SourceUnit, SourceEnv:
		default:
			return o, fmt.Errorf("lab: --server-source %s=%s: want config, dropin, unit or env", n, s)
		}
	}
	switch o.SSH {
	case "":
		o.SSH = SSHInProcess
	case SSHInProcess, SSHOpenSSH:
	default:
		return o, fmt.Errorf("lab: unknown --ssh mode %q (want %s or %s)", o.SSH, SSHInProcess, SSHOpenSSH)
	}
	if o.Subnet == "" {
		o.Subnet = DefaultSubnet
	}
	if ip := net.ParseIP(o.Subnet + ".1"); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return o, fmt.Errorf("lab: --subnet %q: want the first three octets of a 127.x.y.0/24 network, e.g. 127.0.1", o.Subnet)
	}
	if o.ShimBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("lab: find the shim binary: %w", err)
		}
		o.ShimBinary = exe
	}
	if o.RestartDelay <= 0 {
		o.RestartDelay = DefaultRestartDelay
	}
	if o.ServingCertSyncDelay <= 0 {
		o.ServingCertSyncDelay = DefaultServingCertSyncDelay
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o, nil
}

type nodeName struct {
	name, role string
}

// nodeNames lists the nodes in address order: servers first, then agents.
func nodeNames(servers, agents int) []nodeName {
	var out []nodeName
	for i := 1; i <= servers; i++ {
		out = append(out, nodeName{fmt.Sprintf("server-%d", i), "server"})
	}
	for i := 1; i <= agents; i++ {
		out = append(out, nodeName{fmt.Sprintf("agent-%d", i), "agent"})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
