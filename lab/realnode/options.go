package realnode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/gofrs/flock"
)

// Scenarios: how the servers' `server` settings point at each other once
// the lab is up.
const (
	// ScenarioInitReplaced: server-1 bootstrapped the cluster with
	// cluster-init, then was reconfigured to join through server-2 and
	// restarted; every server has `server` set (server-1 → server-2, the
	// others → server-1) and all stay etcd members.
	ScenarioInitReplaced = "init-replaced"
	// ScenarioClusterInit: server-1 keeps cluster-init: true, the others
	// have server: https://<server-1>:6443.
	ScenarioClusterInit = "cluster-init"
)

// Sources: where a server's `server` setting is written.
const (
	SourceConfig = "config" // /etc/rancher/k3s/config.yaml
	SourceDropIn = "dropin" // /etc/rancher/k3s/config.yaml.d/50-server.yaml
	SourceUnit   = "unit"   // '--server' 'URL' in the unit's ExecStart
	SourceEnv    = "env"    // K3S_URL= in /etc/systemd/system/k3s.service.env
)

// Faults for SetFault.
const (
	// FaultFailStart makes every start of the node's k3s.service fail: a
	// runtime drop-in with ExecStartPre=/bin/false (nothing under /etc
	// changes).
	FaultFailStart = "fail-start"
	// FaultHangStart makes every start of k3s.service hang (activating):
	// a runtime drop-in with ExecStartPre=/bin/sleep infinity.
	FaultHangStart = "hang-start"
	// FaultClear removes the fault drop-in.
	FaultClear = "clear"
)

// DefaultSubnet is the first three octets of the node addresses unless
// Options.Subnet says otherwise.
const DefaultSubnet = "127.1.0"

// DefaultCacheDir holds the Debian root filesystem and decompressed K3s
// binaries shared by every lab of this machine.
const DefaultCacheDir = "/var/cache/caretaker/realnode"

// EnvK3sBinary names the K3s binary (or .xz of one) when Options.K3sBinary
// is empty.
const EnvK3sBinary = "CARETAKER_K3S_BINARY"

// ErrAgentsUnsupported is returned when Options.Agents is not 0.
var ErrAgentsUnsupported = errors.New("realnode: K3s agents need containerd and writable cgroup controllers, " +
	"which systemd-nspawn does not give on this machine; use the simulator engine (--engine sim) for agents")

// Options configure a real-engine lab.
type Options struct {
	// Dir holds the lab's own files: the state file realnode.json, the
	// node directories (overlay upper/work, console logs), the SSH client
	// key id_ed25519(.pub), known_hosts, ssh_config and inventory.yaml.
	// Created if missing.
	Dir string
	// Name is the cluster name in the inventory; default "lab".
	Name string
	// Servers is the number of K3s servers (server-1..server-N), ≥ 1.
	Servers int
	// Agents must be 0: see ErrAgentsUnsupported.
	Agents int
	// Scenario is ScenarioInitReplaced (default) or ScenarioClusterInit.
	Scenario string
	// ServerSource says per server where its `server` is set: SourceConfig
	// (default), SourceDropIn, SourceUnit or SourceEnv.
	ServerSource map[string]string
	// SecureToken configures every server with the full token
	// K10<hash of the server CA>::server:<password> (the hash is known only
	// once server-1 has generated its CA at its first start).
	SecureToken bool
	// BootstrapBug puts K3S_SERVE_BOOTSTRAP_FROM_DISK=true into every
	// server's k3s.service.env before its first start: the K3s binary then
	// serves /v1-k3s/server-bootstrap from disk, as releases with bug
	// k3s-io/k3s#11233 did. The inventory says k3s: {bootstrap_bug: true}.
	BootstrapBug bool
	// K3sBinary is a k3s binary or an xz-compressed one (name ending in
	// .xz). Default: $CARETAKER_K3S_BINARY, else ../shared/k3s/k3s.xz
	// beside the repository, when present.
	K3sBinary string
	// CacheDir holds the Debian root filesystem (built once) and the
	// decompressed K3s binaries; default DefaultCacheDir.
	CacheDir string
	// Subnet is the first three octets of a 127.x.y.0/24 network: node N
	// is <Subnet>.N, the host end of the lab's bridge <Subnet>.254.
	// Default DefaultSubnet. Labs with different subnets can run at once.
	Subnet string
	// Token is the cluster token password; default 32 random hex digits.
	Token string
	// Logf receives progress and timings; default: discard.
	Logf func(format string, args ...any)
}

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("realnode: no lab directory given (Options.Dir, --dir)")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("realnode: lab directory %q: %w", o.Dir, err)
	}
	o.Dir = abs
	if o.Name == "" {
		o.Name = "lab"
	}
	if o.Agents != 0 {
		return o, ErrAgentsUnsupported
	}
	if o.Servers < 1 || o.Servers > 250 {
		return o, fmt.Errorf("realnode: --servers must be between 1 and 250, got %d", o.Servers)
	}
	switch o.Scenario {
	case "":
		o.Scenario = ScenarioInitReplaced
	case ScenarioInitReplaced, ScenarioClusterInit:
	default:
		return o, fmt.Errorf("realnode: unknown scenario %q (want %s or %s)", o.Scenario, ScenarioInitReplaced, ScenarioClusterInit)
	}
	if o.Scenario == ScenarioInitReplaced && o.Servers < 2 {
		return o, fmt.Errorf("realnode: scenario %s needs at least 2 servers (server-1 joins through server-2); use --servers 2+ or --scenario %s", ScenarioInitReplaced, ScenarioClusterInit)
	}
	for n, s := range o.ServerSource {
		i, ok := serverIndex(n)
		if !ok || i > o.Servers {
			return o, fmt.Errorf("realnode: --server-source names %q, which is not a server of this lab (server-1..server-%d)", n, o.Servers)
		}
		switch s {
		case SourceConfig, SourceDropIn, SourceUnit, SourceEnv:
		default:
			return o, fmt.Errorf("realnode: --server-source %s=%s: want config, dropin, unit or env", n, s)
		}
	}
	if o.Subnet == "" {
		o.Subnet = DefaultSubnet
	}
	if _, _, err := subnetOctets(o.Subnet); err != nil {
		return o, err
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.K3sBinary == "" {
		o.K3sBinary = DefaultK3sBinary()
	}
	if o.K3sBinary == "" {
		return o, fmt.Errorf("realnode: no K3s binary: pass --k3s-binary PATH or set $%s (the project's is shared/k3s/k3s.xz)", EnvK3sBinary)
	}
	if o.Token == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return o, fmt.Errorf("realnode: random token: %w", err)
		}
		o.Token = hex.EncodeToString(b)
	}
	if strings.ContainsAny(o.Token, ",:\n\r'\" \t#") {
		return o, errors.New("realnode: the token password must not contain commas, colons, quotes, spaces, '#' or newlines")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o, nil
}

// subnetOctets checks that s is "127.X.Y" and returns X and Y.
func subnetOctets(s string) (int, int, error) {
	bad := fmt.Errorf("realnode: --subnet %q: want the first three octets of a 127.X.Y.0/24 network, e.g. %s", s, DefaultSubnet)
	ip := net.ParseIP(s + ".1").To4()
	if ip == nil || ip[0] != 127 || strings.Count(s, ".") != 2 {
		return 0, 0, bad
	}
	if ip[1] == 0 && ip[2] == 0 {
		return 0, 0, fmt.Errorf("realnode: --subnet %q is the host's own 127.0.0.0/24: choose another, e.g. %s", s, DefaultSubnet)
	}
	return int(ip[1]), int(ip[2]), nil
}

// serverIndex parses "server-N".
func serverIndex(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "server-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 1 || strconv.Itoa(i) != rest {
		return 0, false
	}
	return i, true
}

// DefaultK3sBinary returns $CARETAKER_K3S_BINARY, else the project's
// shared/k3s/k3s.xz found next to the repository that holds this source
// file or the working directory, else "".
func DefaultK3sBinary() string {
	if p := os.Getenv(EnvK3sBinary); p != "" {
		return p
	}
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, s := range starts {
		for d := s; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				p := filepath.Join(filepath.Dir(d), "shared", "k3s", "k3s.xz")
				if _, err := os.Stat(p); err == nil {
					return p
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}

// AllocateSubnet reserves a 127.2.y subnet for a lab of a test or a
// benchmark, so that labs of parallel test processes never share one: an
// exclusive lock file per subnet in $TMPDIR/caretaker-lab-subnets, held
// until release is called. The simulator's test subnets (127.200+) and the
// engine's default 127.1.0 are never handed out. A subnet whose lock is
// free but which a lab still holds — a test process that died before its
// cleanup (a timeout, a kill) leaves its machines, bridge and
// registration behind, and $TMPDIR may be fresh while /run is not — is
// taken back when that lab's state file is still there (Open + Close, as
// `lab down` would) and skipped otherwise.
func AllocateSubnet() (subnet string, release func(), err error) {
	dir := filepath.Join(os.TempDir(), "caretaker-lab-subnets")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", nil, fmt.Errorf("realnode: subnet lock dir: %w", err)
	}
	var skipped []string
	for y := 1; y < 255; y++ {
		s := fmt.Sprintf("127.2.%d", y)
		fl := flock.New(filepath.Join(dir, s+".lock"))
		ok, err := fl.TryLock()
		if err != nil {
			return "", nil, fmt.Errorf("realnode: lock subnet %s: %w", s, err)
		}
		if !ok {
			continue
		}
		if err := reclaimSubnet(names{x: 2, y: y}); err != nil {
			_ = fl.Unlock()
			skipped = append(skipped, err.Error())
			continue
		}
		return s, func() { _ = fl.Unlock() }, nil
	}
	return "", nil, fmt.Errorf("realnode: every test subnet 127.2.* is taken (%s)", strings.Join(skipped, "; "))
}

// reclaimSubnet makes sure no lab holds nm's subnet, whose lock the caller
// has just taken (so no live test uses it): nil when none does or when the
// leftover lab was torn down, an error saying what holds it otherwise.
func reclaimSubnet(nm names) error {
	br := nm.bridge()
	lab := registeredDir(br)
	if !fileExists(filepath.Join("/sys/class/net", br)) && (lab == "" || !registrantAlive(br)) {
		return nil
	}
	if lab == "" || registrantAlive(br) {
		return fmt.Errorf("%s: bridge %s exists", br, br)
	}
	c, err := Open(lab)
	if errors.Is(err, fs.ErrNotExist) {
		if c, err = recoverCluster(nm, lab); err == nil {
			defer os.RemoveAll(c.Dir())
		}
	}
	if err != nil {
		return fmt.Errorf("%s: held by the lab in %s, which cannot be opened: %w", br, lab, err)
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("%s: tear down the leftover lab in %s: %w", br, lab, err)
	}
	if fileExists(filepath.Join("/sys/class/net", br)) {
		return fmt.Errorf("%s: bridge %s is still there after the leftover lab in %s was torn down", br, br, lab)
	}
	return nil
}

// recoverCluster rebuilds the state of the lab on nm's subnet whose lab
// dir (and state file) is gone — a test's temp dir removed while its
// machines ran — from the names that derive from the subnet: the nodes
// are the lab's cgroups and network namespaces. The state file of the
// rebuilt lab goes to a new temp dir, since Close records what it did.
func recoverCluster(nm names, dir string) (*Cluster, error) {
	hier, err := detectCgroups()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "caretaker-reclaim-")
	if err != nil {
		return nil, fmt.Errorf("realnode: %w", err)
	}
	subnet := fmt.Sprintf("127.%d.%d", nm.x, nm.y)
	st := &state{Version: 1, Dir: tmp, Subnet: subnet, Bridge: nm.bridge(), HostAcquired: true, OwnsSubnet: true}
	for _, h := range hier {
		st.CgroupRoots = append(st.CgroupRoots, filepath.Join(h, nm.cgroup()))
	}
	for i := 1; i < 255; i++ {
		name := fmt.Sprintf("server-%d", i)
		n := nodeState{Name: name, Index: i, Machine: nm.machine(name), Netns: nm.netns(i), Veth: nm.veth(i),
			Dir: filepath.Join(dir, "nodes", name)}
		n.Root = filepath.Join(n.Dir, "root")
		found := fileExists(filepath.Join("/run/netns", n.Netns)) || fileExists(filepath.Join("/sys/class/net", n.Veth)) || isMountPoint(n.Root)
		for _, r := range st.CgroupRoots {
			n.Cgroups = append(n.Cgroups, filepath.Join(r, name))
			found = found || fileExists(filepath.Join(r, name))
		}
		if !found {
			break
		}
		st.Nodes = append(st.Nodes, n)
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	// The registration names the lost dir; Close leaves the network of a
	// subnet registered to another dir alone, so it moves to the new one.
	if err := reregister(nm.bridge(), dir, tmp); err != nil {
		return nil, err
	}
	return &Cluster{st: st, logf: func(string, ...any) {}}, nil
}

// reregister moves bridge's registration from dir to newDir (under the
// host lock), keeping the registrant.
func reregister(bridge, dir, newDir string) error {
	l, err := lockHost(context.Background())
	if err != nil {
		return err
	}
	defer l.Unlock()
	reg := filepath.Join(runDir, "labs", bridge)
	b, err := os.ReadFile(reg)
	if err != nil {
		return fmt.Errorf("realnode: %w", err)
	}
	got, rest, _ := strings.Cut(string(b), "\n")
	if strings.TrimSpace(got) != dir {
		return fmt.Errorf("realnode: %s is now registered to %s", bridge, got)
	}
	if err := writeFileAtomic(reg, []byte(newDir+"\n"+rest), 0o644); err != nil {
		return fmt.Errorf("realnode: %w", err)
	}
	return nil
}
