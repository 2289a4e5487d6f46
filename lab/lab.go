// Package lab is K3s in miniature: simulated K3s nodes that behave as K3s
// does for everything caretaker touches, reached over real SSH, with a real
// embedded etcd as the cluster's datastore (issue 3, issue 10; behaviour specified in
// docs/k3s-ca-rotation.md §2-§7 and the checklist in §9).
//
// A lab runs in one process (as root): `caretaker lab up` starts it as a
// detached daemon (`caretaker lab daemon`), tests run it in the test
// process with Start. Each node has its own loopback address <subnet>.N,
// SSH server, etcd member (servers) and file tree DIR/<node>/, which is the
// root of every command run on the node; its k3s, systemctl and journalctl
// commands are the shim (package lab/shim), which hands the command to the
// lab over the unix socket DIR/lab.sock, where the simulated K3s does the
// work.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/internal/kubesim"
	"github.com/caretaker/caretaker/internal/sshserver"
	"github.com/caretaker/caretaker/lab/shim"
)

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	opts   Options
	nodes  []*node
	byName map[string]*node
	ctrl   *controlServer

	// ctx lives as long as the lab: K3s processes run under it.
	ctx    context.Context
	cancel context.CancelFunc

	serving     *servingSecret // kube-system/k3s-serving
	kube        *kubesim.Store // the Kubernetes API's objects (kubeapi.go)
	etcdFilesMu sync.Mutex     // DIR/etcd-client

	sshServers []*sshserver.Server // inprocess mode
	sshds      *openSSH            // openssh mode
	keeper     *keeper             // mounts of the node trees
	bindDirs   []string            // host dirs bound into nodes (no merged /usr)

	clientKey ssh.Signer
	password  string // the cluster token's password
	token     string // the token nodes are configured with
	started   time.Time
	upTook    atomic.Int64 // nanoseconds Start took; 0 until ready

	pidSeq atomic.Int64

	closeOnce sync.Once
	closeErr  error
	downCh    chan struct{} // closed when someone asks the lab to go down
	downOnce  sync.Once
}

// Start creates and starts a lab as o describes and returns once every
// node's service is up, the SSH servers listen and DIR/inventory.yaml is
// written. Close stops it.
func Start(ctx context.Context, o Options) (l *Lab, err error) {
	began := time.Now()
	o, err = o.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("lab: %w", ErrNotRoot)
	}
	if err := prepareDir(o.Dir); err != nil {
		return nil, err
	}
	if o.SSH == SSHOpenSSH {
		if err := checkOpenSSH(); err != nil {
			return nil, err
		}
	}
	if len(filepath.Join(o.Dir, shim.SocketName)) > 100 {
		return nil, fmt.Errorf("lab: directory %s is too long for a unix socket path (at most ~100 bytes); use a shorter --dir", o.Dir)
	}
	l = &Lab{opts: o, byName: map[string]*node{}, downCh: make(chan struct{}), started: began}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.serving = &servingSecret{l: l}
	built := l
	defer func() {
		if err != nil {
			_ = built.Close()
		}
	}()

	cas, t0, err := l.makeSecrets()
	if err != nil {
		return nil, err
	}
	l.kube = kubesim.NewStore(kubeHost{l}, cas[k3s.PathServerCA])

	// Nodes and their trees.
	for i, nn := range nodeNames(o.Servers, o.Agents) {
		n := l.newNode(nn.name, nn.role, i+1)
		l.nodes = append(l.nodes, n)
		l.byName[n.name] = n
	}
	l.bindDirs = hostBindDirs()
	var trees errgroup.Group
	trees.SetLimit(4)
	for _, n := range l.nodes {
		trees.Go(func() error {
			if err := l.writeNodeTree(n, cas, t0); err != nil {
				return fmt.Errorf("lab: %s: %w", n.name, err)
			}
			return nil
		})
	}
	if err := trees.Wait(); err != nil {
		return nil, err
	}

	// The datastore: one etcd member per server, formed into a cluster
	// and seeded as the first server saved it long ago.
	first := l.nodes[0]
	seed, err := k3s.ReadBootstrapFromDir(first.host(filepath.Join(first.dataDir, "server")))
	if err != nil {
		return nil, fmt.Errorf("lab: read the bootstrap files of %s: %w", first.name, err)
	}
	if err := l.bootstrapEtcd(ctx, seed); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}

	l.ctrl, err = startControl(l)
	if err != nil {
		return nil, err
	}

	if err := l.startServices(ctx); err != nil {
		return nil, err
	}

	// The node trees' mounts, then SSH into them.
	l.keeper, err = startKeeper(l, l.bindDirs)
	if err != nil {
		return nil, err
	}
	if o.SSH == SSHOpenSSH {
		l.sshds, err = startOpenSSH(ctx, l)
	} else {
		err = l.startInProcessSSH()
	}
	if err != nil {
		return nil, err
	}
	if err := l.writeInventory(); err != nil {
		return nil, err
	}
	l.upTook.Store(int64(time.Since(began)))
	o.Logf("lab up in %s: %d servers, %d agents, ssh %s, inventory %s", l.UpDuration().Round(time.Millisecond), o.Servers, o.Agents, o.SSH, l.InventoryPath())
	return l, nil
}

// makeSecrets creates the cluster's secrets: the SSH client key, the token
// password, the CAs generated as a first server start does (an hour ago,
// so that later rotations are clearly newer: §2 "Reconcile" 3).
func (l *Lab) makeSecrets() (cas map[string][]byte, t0 time.Time, err error) {
	if err := l.writeClientKey(); err != nil {
		return nil, t0, err
	}
	l.password = l.opts.Token
	if l.password == "" {
		pw := make([]byte, 16)
		if _, err := rand.Read(pw); err != nil {
			return nil, t0, err
		}
		l.password = hex.EncodeToString(pw)
	}
	t0 = time.Now().Add(-time.Hour).Truncate(time.Second)
	cas, err = k3s.GenerateClusterCAs(t0, l.password)
	if err != nil {
		return nil, t0, fmt.Errorf("lab: generate the cluster CAs: %w", err)
	}
	l.token = l.password
	if l.opts.SecureToken {
		hash, err := k3s.HashCA(cas[k3s.PathServerCA])
		if err != nil {
			return nil, t0, fmt.Errorf("lab: hash the server CA: %w", err)
		}
		l.token = k3s.FormatToken(hash, "server", l.password)
	}
	return cas, t0, nil
}

// startServices starts the units: servers one by one in address order
// (each joins through a peer that may not be up yet, as after a full
// cluster restart), then the agents together.
func (l *Lab) startServices(ctx context.Context) error {
	for _, n := range l.nodes {
		if err := n.daemonReload(); err != nil {
			return fmt.Errorf("lab: %s: load %s: %w", n.name, n.unitFile, err)
		}
	}
	for _, n := range l.nodes {
		if !n.isServer() {
			continue
		}
		if err := l.startService(ctx, n); err != nil {
			return err
		}
	}
	var g errgroup.Group
	for _, n := range l.nodes {
		if n.isServer() {
			continue
		}
		g.Go(func() error { return l.startService(ctx, n) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return nil
}

func (l *Lab) startService(ctx context.Context, n *node) error {
	if err := n.startAndWait(ctx, false); err != nil {
		return fmt.Errorf("lab: %s: %s did not start; its journal ends:\n%s", n.name, n.unitName(), n.journalTail(15))
	}
	return nil
}

// journalTail returns the last k journal lines of the node's unit.
func (n *node) journalTail(k int) string {
	es := n.journal.snapshot(n.unitName())
	if len(es) > k {
		es = es[len(es)-k:]
	}
	var b strings.Builder
	for _, e := range es {
		b.WriteString("  " + n.journal.formatShort(e) + "\n")
	}
	return b.String()
}

// labEntries are the names Start may find in (and clear from) a lab dir
// left by an earlier lab.
func isLabEntry(name string) bool {
	switch name {
	case "lab.log", shim.SocketName, "inventory.yaml", "known_hosts", "id_ed25519", "id_ed25519.pub",
		"etcd", "etcd-tls", "etcd-client", "etcd.log", "run", "ssh_config":
		return true
	}
	return strings.HasPrefix(name, "server-") || strings.HasPrefix(name, "agent-")
}

// prepareDir creates dir or clears what an earlier, stopped lab left in it.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab: create %s: %w", dir, err)
	}
	sock := filepath.Join(dir, shim.SocketName)
	if _, err := os.Stat(sock); err == nil {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("lab: a lab is already running in %s; stop it first with: caretaker lab down --dir %s", dir, dir)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("lab: read %s: %w", dir, err)
	}
	for _, e := range ents {
		if !isLabEntry(e.Name()) {
			return fmt.Errorf("lab: %s holds %s, which is not from a lab; use an empty or new --dir", dir, e.Name())
		}
	}
	for _, e := range ents {
		if e.Name() == "lab.log" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("lab: clear the old lab in %s: %w", dir, err)
		}
	}
	return nil
}

func (l *Lab) newNode(name, role string, index int) *node {
	o := l.opts
	v := o.Version
	if nv, ok := o.NodeVersions[name]; ok {
		v = nv
	}
	n := &node{
		lab: l, name: name, role: role, index: index,
		ip:      fmt.Sprintf("%s.%d", o.Subnet, index),
		version: k3s.MustParseVersion(v),
		root:    filepath.Join(o.Dir, name),
		u:       unitStatus{active: stateInactive, sub: subDead, result: "success"},
	}
	n.commit = fakeCommit(n.version.String())
	n.service = "k3s"
	if role == "agent" {
		n.service = "k3s-agent"
	}
	n.dataDir = n.view(viewDataDir)
	n.configFile = n.view(viewConfigFile)
	n.kubeconfig = n.view(viewKubeconfig)
	n.unitFile = n.view(filepath.Join(viewUnitDir, n.service+".service"))
	n.envFile = n.unitFile + ".env"
	n.journal = newJournal(name, filepath.Join(n.runDir(), "journal.log"))
	return n
}

// peerOf is the server a node joins through (issue 3 scenarios; agents
// spread over the servers).
func (l *Lab) peerOf(n *node) *node {
	servers := l.opts.Servers
	if !n.isServer() {
		idx := 0
		_, _ = fmt.Sscanf(n.name, "agent-%d", &idx) // names are agent-N by construction
		return l.nodes[(idx-1)%servers]
	}
	if n.index == 1 {
		if l.opts.Scenario == ScenarioClusterInit || servers == 1 {
			return nil
		}
		return l.nodes[1]
	}
	return l.nodes[0]
}

// startInProcessSSH starts one x/crypto/ssh server per node that checks
// users against the node's /etc/passwd and authorized_keys as sshd does
// and runs commands as that user, chrooted into the node's tree.
func (l *Lab) startInProcessSSH() error {
	for _, n := range l.nodes {
		hk, err := sshserver.GenerateHostKey()
		if err != nil {
			return err
		}
		srv, err := sshserver.Start(sshserver.Config{
			Addr:    net.JoinHostPort(n.ip, "0"),
			HostKey: hk,
			Users:   n.sshUser,
			Command: l.keeper.nodeCommand(n),
			Env: []string{
				shim.EnvNode + "=" + n.name,
				shim.EnvSock + "=" + shim.NodeSocket,
			},
			AllowTCPForwarding: true,
			DialTarget:         n.localAddr,
			Logf:               func(f string, a ...any) { l.opts.Logf(n.name+" ssh: "+f, a...) },
		})
		if err != nil {
			return fmt.Errorf("lab: %s: start the SSH server on %s: %w", n.name, n.ip, err)
		}
		l.sshServers = append(l.sshServers, srv)
		n.sshPort = srv.Port()
		n.hostKey = srv.HostKey()
	}
	return nil
}

// supervisorAt returns the running supervisor a URL points at.
func (l *Lab) supervisorAt(baseURL string) *supervisor {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil
	}
	for _, n := range l.nodes {
		if n.ip == u.Hostname() {
			return n.runningSupervisor()
		}
	}
	return nil
}

// Close stops the lab: SSH servers (and every process of openssh-mode
// nodes), the simulated services, the control socket and etcd. It leaves
// the files in DIR and nothing running. It is safe to call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		t0 := time.Now()
		defer func() { l.opts.Logf("lab closed in %s", time.Since(t0).Round(time.Millisecond)) }()
		var errs []error
		if l.ctrl != nil {
			l.ctrl.close()
		}
		for _, s := range l.sshServers {
			if err := s.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if l.sshds != nil {
			if err := l.sshds.close(); err != nil {
				errs = append(errs, err)
			}
		}
		l.keeper.close()
		// Every node at once; with the lab's context cancelled the etcd
		// members stop without handing their leadership over.
		l.cancel()
		var wg sync.WaitGroup
		for _, n := range l.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.stopUnit()
				n.takeInitMember().close()
			}()
		}
		wg.Wait()
		for _, n := range l.nodes {
			n.journal.close()
		}
		_ = os.Remove(filepath.Join(l.opts.Dir, shim.SocketName))
		l.requestDown()
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// requestDown asks whoever waits on Done to stop the lab.
func (l *Lab) requestDown() {
	l.downOnce.Do(func() { close(l.downCh) })
}

// Done is closed when `lab down` (or Close) asked the lab to stop.
func (l *Lab) Done() <-chan struct{} { return l.downCh }

// Dir is the lab directory.
func (l *Lab) Dir() string { return l.opts.Dir }

// InventoryPath is DIR/inventory.yaml.
func (l *Lab) InventoryPath() string { return filepath.Join(l.opts.Dir, "inventory.yaml") }

// UpDuration is how long Start took.
func (l *Lab) UpDuration() time.Duration { return time.Duration(l.upTook.Load()) }

// SetFault injects a fault into a node's service: FaultFailStart makes
// every start fail, FaultHangStart every start hang before it is ready,
// until FaultClear (a hanging start then completes).
func (l *Lab) SetFault(nodeName, fault string) error {
	n, ok := l.byName[nodeName]
	if !ok {
		return fmt.Errorf("lab: no node %q (nodes: %s)", nodeName, strings.Join(l.nodeNames(), ", "))
	}
	switch fault {
	case FaultFailStart, FaultHangStart:
	case FaultClear, "":
		fault = ""
	default:
		return fmt.Errorf("lab: unknown fault %q (want %s, %s or %s)", fault, FaultFailStart, FaultHangStart, FaultClear)
	}
	n.mu.Lock()
	n.fault = fault
	n.mu.Unlock()
	return nil
}

func (l *Lab) nodeNames() []string {
	var out []string
	for _, n := range l.nodes {
		out = append(out, n.name)
	}
	return out
}

// NodeRoot returns DIR/<node>, the node's root file system: its commands
// see it as /.
func (l *Lab) NodeRoot(name string) string { return filepath.Join(l.opts.Dir, name) }

// Token returns the token the nodes are configured with (the bare
// password, or the K10 form with SecureToken). Tests only: never log it.
func (l *Lab) Token() string { return l.token }
