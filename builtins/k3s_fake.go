package builtins

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	transportpkg "github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// FakeK3sOptions describe a fake cluster.
type FakeK3sOptions struct {
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
}

// FakeK3sCluster is a K3s cluster in miniature for unit tests of the k3s
// builtins and the playbooks: each node is a fake.Executor whose
// files are the node's K3s files and whose k3s, systemctl and journalctl
// commands follow K3s's rules closely enough to exercise the playbooks'
// logic (config-source merging, bootstrap from the peer's disk on
// releases with bug #11233, rotate-ca, leaf renewal, token hash checks).
// The datastore is a real embedded etcd with client TLS, reached through
// the executors' Dial like the real thing; supervisors answer /cacerts and
// /readyz over TLS on in-memory connections. The lab (package lab) is the
// faithful simulator; this is for fast tests.
type FakeK3sCluster struct {
	Cluster  *inventory.Cluster
	Execs    map[string]*fake.Executor
	StateDir string

	dir      string
	etcdAddr string
	cli      *clientv3.Client
	password string
	token    string
	opts     FakeK3sOptions

	mu    sync.Mutex
	nodes map[string]*fakeNode
}

// fakeNode is the simulated K3s of one node.
type fakeNode struct {
	n       *inventory.Node
	ex      *fake.Executor
	version k3s.Version
	ip      string

	state       string
	fault       string
	cacerts     []byte
	serving     *tls.Certificate
	journal     []string
	restarts    int
	reloads     int
	rotateLeafs bool
}

// NewFakeK3sCluster builds and starts a fake cluster. Close stops it.
func NewFakeK3sCluster(o FakeK3sOptions) (fc *FakeK3sCluster, err error) {
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
	fc = &FakeK3sCluster{Execs: map[string]*fake.Executor{}, nodes: map[string]*fakeNode{}, dir: dir, StateDir: filepath.Join(dir, "state"), opts: o}
	defer func() {
		if err != nil {
			fc.Close()
		}
	}()
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	fc.password = hex.EncodeToString(pw)
	shared, err := fakeSharedState()
	if err != nil {
		return nil, err
	}
	fc.etcdAddr, fc.cli = shared.etcdAddr, shared.cli
	t0 := shared.t0
	cas := map[string][]byte{}
	for p, b := range shared.cas {
		cas[p] = b
	}
	cas[k3s.PathPasswd] = k3s.PasswdFile(fc.password, fc.password)
	fc.token = fc.password
	if o.SecureToken {
		h, err := k3s.HashCA(cas[k3s.PathServerCA])
		if err != nil {
			return nil, err
		}
		fc.token = k3s.FormatToken(h, "server", fc.password)
	}

	// The inventory, parsed by the real loader (defaults filled in).
	var inv strings.Builder
	inv.WriteString("clusters:\n  - name: fake\n    nodes:\n")
	var names []string
	for i := 1; i <= o.Servers+o.Agents; i++ {
		role, name := "server", fmt.Sprintf("server-%d", i)
		if i > o.Servers {
			role, name = "agent", fmt.Sprintf("agent-%d", i-o.Servers)
		}
		names = append(names, name)
		ip := fmt.Sprintf("10.0.0.%d", i)
		fmt.Fprintf(&inv, "      - name: %s\n        address: %s\n        role: %s\n", name, ip, role)
		if role == "server" {
			fmt.Fprintf(&inv, "        k3s: {etcd_endpoint: %q, supervisor_endpoint: %q}\n", fc.etcdAddr, ip+":6443")
		}
	}
	invPath := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o600); err != nil {
		return nil, err
	}
	parsed, err := inventory.Load(invPath)
	if err != nil {
		return nil, fmt.Errorf("fake inventory: %w", err)
	}
	fc.Cluster = parsed.Clusters[0]
	for i, n := range fc.Cluster.Nodes {
		v := o.Version
		if nv, ok := o.NodeVersions[n.Name]; ok {
			v = nv
		}
		ver, err := k3s.ParseVersion(v)
		if err != nil {
			return nil, err
		}
		fn := &fakeNode{n: n, ex: fake.New(n.Name), version: ver, ip: fmt.Sprintf("10.0.0.%d", i+1), state: "inactive"}
		fc.nodes[n.Name] = fn
		fc.Execs[n.Name] = fn.ex
		fc.handle(fn)
	}
	for _, n := range fc.Cluster.Nodes {
		if err := fc.writeTree(fc.nodes[n.Name], o, cas, t0); err != nil {
			return nil, fmt.Errorf("fake %s: %w", n.Name, err)
		}
	}
	// Seed the datastore as the first server saved it.
	seed := k3s.BootstrapData{}
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := cas[bf.Path]; ok {
			seed[bf.Key] = k3s.File{Timestamp: t0, Content: b}
		}
	}
	if err := fc.saveBootstrap(context.Background(), seed); err != nil {
		return nil, err
	}
	for _, name := range names {
		fn := fc.nodes[name]
		if err := fc.start(fn); err != nil {
			return nil, fmt.Errorf("fake %s did not start: %w (%s)", name, err, strings.Join(fn.journal, "; "))
		}
	}
	return fc, nil
}

// Close removes the fake cluster's files and its datastore key.
func (fc *FakeK3sCluster) Close() {
	if fc.cli != nil && fc.password != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = fc.cli.Delete(ctx, k3s.StorageKey(fc.password))
		cancel()
	}
	os.RemoveAll(fc.dir)
}

// fakeShared is what every fake cluster of a process shares: one etcd (each
// cluster has its own token and so its own bootstrap key), the initial CA
// set and the leaf certificates of each node name, which are slow to make.
type fakeShared struct {
	dir      string
	etcd     *embed.Etcd
	etcdAddr string
	cli      *clientv3.Client
	t0       time.Time
	cas      map[string][]byte

	mu     sync.Mutex
	leaves map[string]map[string][]byte
}

var (
	fakeOnce   sync.Once
	fakeState  *fakeShared
	fakeErr    error
	fakeCloseM sync.Mutex
)

func fakeSharedState() (*fakeShared, error) {
	fakeCloseM.Lock()
	defer fakeCloseM.Unlock()
	fakeOnce.Do(func() {
		sh := &fakeShared{leaves: map[string]map[string][]byte{}}
		sh.t0 = time.Now().Add(-time.Hour).Truncate(time.Second)
		if sh.cas, fakeErr = k3s.GenerateClusterCAs(sh.t0, "fake"); fakeErr != nil {
			return
		}
		if sh.dir, fakeErr = os.MkdirTemp("", "caretaker-fake-etcd-"); fakeErr != nil {
			return
		}
		if fakeErr = sh.startEtcd(); fakeErr != nil {
			os.RemoveAll(sh.dir)
			return
		}
		fakeState = sh
	})
	if fakeErr != nil {
		return nil, fakeErr
	}
	if fakeState == nil {
		return nil, errors.New("fake k3s: the shared etcd was closed (CloseFakeK3s)")
	}
	return fakeState, nil
}

// CloseFakeK3s stops the etcd the fake clusters of this process share and
// removes its files; call it from TestMain after the tests.
func CloseFakeK3s() {
	fakeCloseM.Lock()
	defer fakeCloseM.Unlock()
	if fakeState == nil {
		return
	}
	fakeState.cli.Close()
	fakeState.etcd.Close()
	os.RemoveAll(fakeState.dir)
	fakeState = nil
}

// leavesFor returns (and caches) the leaf certificates of a node.
func (sh *fakeShared) leavesFor(opts k3s.LeafOptions) (map[string][]byte, error) {
	key := fmt.Sprintf("%s/%v/%v", opts.NodeName, opts.NodeIPs, opts.Agent)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l, ok := sh.leaves[key]; ok {
		return l, nil
	}
	l, err := k3s.IssueLeafCerts(sh.cas, opts)
	if err != nil {
		return nil, err
	}
	sh.leaves[key] = l
	return l, nil
}

// Pool returns a pool of the cluster's executors for runner.RunOptions.
func (fc *FakeK3sCluster) Pool() *runner.Pool {
	return runner.NewPool(func(ctx context.Context, n *inventory.Node) (transportpkg.Executor, error) {
		ex, ok := fc.Execs[n.Name]
		if !ok {
			return nil, fmt.Errorf("fake: no node %s", n.Name)
		}
		return ex, nil
	})
}

func (fc *FakeK3sCluster) node(name string) (*fakeNode, error) {
	n, ok := fc.nodes[name]
	if !ok {
		return nil, fmt.Errorf("fake cluster has no node %q", name)
	}
	return n, nil
}

func (fc *fakeShared) startEtcd() error {
	cas, t0 := fc.cas, fc.t0
	leaves, err := k3s.IssueLeafCerts(cas, k3s.LeafOptions{NodeName: "etcd", Now: t0})
	if err != nil {
		return err
	}
	files := map[string][]byte{"server.crt": leaves["server/tls/etcd/server-client.crt"], "server.key": leaves["server/tls/etcd/server-client.key"], "ca.crt": cas[k3s.PathETCDServerCA]}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(fc.dir, n), b, 0o600); err != nil {
			return err
		}
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(fc.dir, "etcd")
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(fc.dir, "etcd.log")}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: filepath.Join(fc.dir, "server.crt"), KeyFile: filepath.Join(fc.dir, "server.key"), TrustedCAFile: filepath.Join(fc.dir, "ca.crt"), ClientCertAuth: true}
	port := func() (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	}
	client, err1 := port()
	peer, err2 := port()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	cu, pu := []url.URL{{Scheme: "https", Host: client}}, []url.URL{{Scheme: "http", Host: peer}}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = cu, cu
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = pu, pu
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("fake etcd: %w", err)
	}
	fc.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return errors.New("fake etcd did not start")
	}
	fc.etcdAddr = client
	pair, err := tls.X509KeyPair(leaves["server/tls/etcd/client.crt"], leaves["server/tls/etcd/client.key"])
	if err != nil {
		return err
	}
	pool := poolOf(cas[k3s.PathETCDServerCA])
	fc.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{"https://" + client}, DialTimeout: 10 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool}})
	return err
}

// saveBootstrap stores d encrypted under the cluster's key.
func (fc *FakeK3sCluster) saveBootstrap(ctx context.Context, d k3s.BootstrapData) error {
	plain, err := k3s.MarshalBootstrap(d)
	if err != nil {
		return err
	}
	sealed, err := k3s.Encrypt(fc.password, plain)
	if err != nil {
		return err
	}
	_, err = fc.cli.Put(ctx, k3s.StorageKey(fc.password), sealed)
	return err
}

// Datastore returns the decrypted bootstrap data.
func (fc *FakeK3sCluster) Datastore(ctx context.Context) (k3s.BootstrapData, error) {
	resp, err := fc.cli.Get(ctx, k3s.StorageKey(fc.password))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) != 1 {
		return nil, errors.New("fake: no bootstrap data")
	}
	plain, err := k3s.Decrypt(fc.password, string(resp.Kvs[0].Value))
	if err != nil {
		return nil, err
	}
	return k3s.UnmarshalBootstrap(plain)
}

// Token is the token the nodes are configured with (tests only).
func (fc *FakeK3sCluster) Token() string { return fc.token }

func (fn *fakeNode) sd() string { return serverDir(fn.n) }
func (fn *fakeNode) dd() string { return strings.TrimSuffix(fn.n.K3s.DataDir, "/") }

func (fn *fakeNode) file(p string) []byte {
	b, _ := fn.ex.File(p)
	return b
}

func (fn *fakeNode) log(format string, args ...any) {
	fn.journal = append(fn.journal, fmt.Sprintf("%s %s[%d]: %s", time.Now().Format("Jan 02 15:04:05"), "k3s", 1000+fn.restarts, fmt.Sprintf(format, args...)))
}

// peerOf is the server a node joins through.
func (fc *FakeK3sCluster) peerOf(fn *fakeNode, o FakeK3sOptions) *fakeNode {
	var servers []*fakeNode
	for _, n := range fc.Cluster.Nodes {
		if n.Role == inventory.RoleServer {
			servers = append(servers, fc.nodes[n.Name])
		}
	}
	if fn.n.Role == inventory.RoleAgent {
		idx := 0
		fmt.Sscanf(fn.n.Name, "agent-%d", &idx)
		return servers[(idx-1)%len(servers)]
	}
	if fn == servers[0] {
		if o.Scenario == "cluster-init" || len(servers) == 1 {
			return nil
		}
		return servers[1]
	}
	return servers[0]
}

// writeTree lays out a node's files as install.sh and a first start would.
func (fc *FakeK3sCluster) writeTree(fn *fakeNode, o FakeK3sOptions, cas map[string][]byte, t0 time.Time) error {
	k := fn.n.K3s
	envFile := k.UnitFile + ".env"
	peer := fc.peerOf(fn, o)
	var cfg, env strings.Builder
	var args []string
	cfg.WriteString("# written by the fake cluster for " + fn.n.Name + "\n")
	isServer := fn.n.Role == inventory.RoleServer
	if isServer {
		fmt.Fprintf(&cfg, "token: %s\n", fc.token)
		fmt.Fprintf(&cfg, "node-ip: %s\n", fn.ip)
		switch {
		case peer == nil:
			cfg.WriteString("cluster-init: true\n")
		default:
			u := "https://" + peer.ip + ":6443"
			switch o.ServerSource[fn.n.Name] {
			case "dropin":
				fn.ex.SetFile(k.ConfigFile+".d/50-server.yaml", []byte("server: "+u+"\n"), 0o644)
			case "unit":
				args = append(args, "--server", u)
			case "env":
				fmt.Fprintf(&env, "K3S_URL='%s'\n", u)
			default:
				fmt.Fprintf(&cfg, "server: %s\n", u)
			}
		}
	} else {
		fmt.Fprintf(&cfg, "node-ip: %s\n", fn.ip)
		fmt.Fprintf(&env, "K3S_TOKEN='%s'\nK3S_URL='https://%s:6443'\n", fc.token, peer.ip)
	}
	fn.ex.SetFile(k.ConfigFile, []byte(cfg.String()), 0o600)
	fn.ex.SetFile(envFile, []byte(env.String()), 0o600)
	sub := "server"
	if !isServer {
		sub = "agent"
	}
	fn.ex.SetFile(k.UnitFile, k3s.WriteUnit(sub, args, envFile), 0o644)
	leaves, err := fakeState.leavesFor(k3s.LeafOptions{NodeName: fn.n.Name, NodeIPs: []net.IP{net.ParseIP(fn.ip)}, Now: t0, Agent: !isServer})
	if err != nil {
		return err
	}
	for p, b := range leaves {
		fn.ex.SetFile(fn.dd()+"/"+p, b, 0o600)
	}
	if isServer {
		for p, b := range cas {
			fn.ex.SetFile(fn.sd()+"/"+p, b, 0o600)
		}
	}
	return nil
}

// sources reads the node's config sources from its files.
func (fn *fakeNode) sources() k3s.Sources {
	k := fn.n.K3s
	src := k3s.Sources{UnitPath: k.UnitFile, ConfigPath: k.ConfigFile, Unit: fn.file(k.UnitFile), Config: fn.file(k.ConfigFile)}
	for _, p := range fn.ex.Files() {
		switch {
		case path.Dir(p) == k.UnitFile+".d" && strings.HasSuffix(p, ".conf"):
			src.UnitDropIns = append(src.UnitDropIns, k3s.NamedFile{Path: p, Data: fn.file(p)})
		case path.Dir(p) == k.ConfigFile+".d" && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")):
			src.DropIns = append(src.DropIns, k3s.NamedFile{Path: p, Data: fn.file(p)})
		}
	}
	seen := map[string]bool{}
	for _, p := range append(k3s.UnitEnvironmentFiles(src.Unit, k.Service), k.EnvFiles...) {
		if !seen[p] {
			seen[p] = true
			src.EnvFiles = append(src.EnvFiles, k3s.NamedFile{Path: p, Data: fn.file(p)})
		}
	}
	return src
}

// serverByURL finds the server a https://host:port URL points at.
func (fc *FakeK3sCluster) serverByURL(u string) *fakeNode {
	pu, err := url.Parse(u)
	if err != nil {
		return nil
	}
	for _, n := range fc.nodes {
		if n.n.Role == inventory.RoleServer && n.ip == pu.Hostname() {
			return n
		}
	}
	return nil
}

// caSet returns the node's CA files keyed relative to SD.
func (fn *fakeNode) caSet() map[string][]byte {
	out := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := fn.ex.File(fn.sd() + "/" + bf.Path); ok {
			out[bf.Path] = b
		}
	}
	return out
}

// start runs K3s's start-up on the node (k3s-ca-rotation.md §2, §7).
func (fc *FakeK3sCluster) start(fn *fakeNode) error {
	fn.restarts++
	fn.state = "activating"
	fail := func(format string, args ...any) error {
		fn.state = "failed"
		fn.log("level=fatal msg=\""+format+"\"", args...)
		fn.journal = append(fn.journal, fmt.Sprintf("systemd[1]: %s.service: Failed with result 'exit-code'.", fn.n.K3s.Service))
		return fmt.Errorf(format, args...)
	}
	if fn.fault == "fail-start" {
		return fail("injected fault fail-start: k3s exits during start-up")
	}
	eff, err := k3s.Effective(fn.sources())
	if err != nil {
		return fail("config: %v", err)
	}
	get := func(k string) string { return strings.TrimSpace(eff[k].Value) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := k3s.LeafOptions{NodeName: fn.n.Name, NodeIPs: []net.IP{net.ParseIP(fn.ip)}, Now: time.Now()}
	if fn.n.Role == inventory.RoleAgent {
		peer := fc.serverByURL(get("server"))
		if peer == nil || peer.state != "active" {
			return fail("failed to get CA certs: %s: connection refused", get("server"))
		}
		if tok, err := k3s.ParseToken(get("token")); err == nil && tok.Secure() {
			h, _ := k3s.HashCA(peer.cacerts)
			if h != tok.CAHash {
				return fail("token CA hash does not match the Cluster CA certificate hash: %s != %s", tok.CAHash, h)
			}
		}
		opts.Agent = true
		return fc.finishStart(fn, peer.caSet(), opts, map[string][]byte{
			fn.dd() + "/agent/server-ca.crt": peer.file(peer.sd() + "/" + k3s.PathServerCA),
			fn.dd() + "/agent/client-ca.crt": peer.file(peer.sd() + "/" + k3s.PathClientCA),
		})
	}

	// Servers: where the bootstrap data comes from (§2).
	var data k3s.BootstrapData
	from := "local datastore"
	if join := get("server"); join != "" && get("token") != "" {
		peer := fc.serverByURL(join)
		ok := peer != nil && peer.state == "active"
		if ok {
			if tok, err := k3s.ParseToken(get("token")); err == nil && tok.Secure() {
				h, _ := k3s.HashCA(peer.cacerts)
				ok = h == tok.CAHash
			}
		}
		if ok && (fc.opts.BootstrapBug || !k3s.ServesBootstrapFromDatastore(peer.version)) {
			data = k3s.BootstrapData{}
			for _, bf := range k3s.BootstrapFiles {
				if b, has := peer.ex.File(peer.sd() + "/" + bf.Path); has {
					data[bf.Key] = k3s.File{Content: b}
				}
			}
			from = "remote disk of " + peer.n.Name
		} else if ok {
			from = "remote datastore via " + peer.n.Name
		}
	}
	if data == nil {
		if data, err = fc.Datastore(ctx); err != nil {
			return fail("read the datastore: %v", err)
		}
	}
	var updated []string
	for _, bf := range k3s.BootstrapFiles {
		f, ok := data[bf.Key]
		if !ok {
			continue
		}
		p := fn.sd() + "/" + bf.Path
		if !bytes.Equal(fn.file(p), f.Content) {
			fn.ex.SetFile(p, f.Content, 0o600)
			updated = append(updated, bf.Path)
		}
	}
	fn.log("level=info msg=\"Successfully reconciled with %s (%d files updated)\"", from, len(updated))
	cas := fn.caSet()
	hash, err := k3s.HashCA(cas[k3s.PathServerCA])
	if err != nil {
		return fail("server CA: %v", err)
	}
	fn.ex.SetFile(fn.sd()+"/token", []byte(k3s.FormatToken(hash, "server", fc.password)+"\n"), 0o600)
	return fc.finishStart(fn, cas, opts, nil)
}

// finishStart renews the leaf certificates and brings the service up.
func (fc *FakeK3sCluster) finishStart(fn *fakeNode, cas map[string][]byte, opts k3s.LeafOptions, extra map[string][]byte) error {
	existing := map[string][]byte{}
	for _, p := range k3s.LeafFiles(opts) {
		if b, ok := fn.ex.File(fn.dd() + "/" + p); ok && !fn.rotateLeafs {
			existing[p] = b
		}
	}
	renewed, _, err := k3s.RenewLeafCerts(cas, existing, opts)
	if err != nil {
		fn.state = "failed"
		return fmt.Errorf("renew leaf certificates: %w", err)
	}
	fn.rotateLeafs = false
	for p, b := range renewed {
		fn.ex.SetFile(fn.dd()+"/"+p, b, 0o600)
	}
	for p, b := range extra {
		fn.ex.SetFile(p, b, 0o644)
	}
	if fn.n.Role == inventory.RoleServer {
		pair, err := tls.X509KeyPair(fn.file(fn.sd()+"/tls/serving-kube-apiserver.crt"), fn.file(fn.sd()+"/tls/serving-kube-apiserver.key"))
		if err != nil {
			fn.state = "failed"
			return fmt.Errorf("serving certificate: %w", err)
		}
		fn.serving = &pair
		fn.cacerts = fn.file(fn.sd() + "/" + k3s.PathServerCA)
	}
	fn.state = "active"
	fn.log("level=info msg=\"k3s is up and running\"")
	return nil
}

// serveSupervisor answers one HTTPS request on conn as the node's
// supervisor: /cacerts (cached at start) and /readyz.
func serveSupervisor(conn net.Conn, cert tls.Certificate, cacerts []byte) {
	defer conn.Close()
	tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(tc))
	if err != nil {
		return
	}
	resp := &http.Response{StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Close: true}
	var body []byte
	switch req.URL.Path {
	case "/cacerts":
		body = cacerts
	case "/readyz", "/ping":
		body = []byte("ok")
	default:
		resp.StatusCode, body = http.StatusNotFound, []byte("404 page not found\n")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	_ = resp.Write(tc)
	// Close the raw pipe without a close_notify: net.Pipe is unbuffered
	// and the client closes its side at the same time.
}

// unquote undoes runner.ShellQuote for the simple words the builtins use.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return strings.ReplaceAll(s[1:len(s)-1], `'\''`, "'")
	}
	return s
}

// handle registers the node's commands on its fake executor.
func (fc *FakeK3sCluster) handle(fn *fakeNode) {
	ex := fn.ex
	ok := func(string, []byte, io.Writer, io.Writer) int { return 0 }
	ex.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == fc.etcdAddr && fn.n.Role == inventory.RoleServer {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		fc.mu.Lock()
		defer fc.mu.Unlock()
		for _, n := range fc.nodes {
			if n.n.K3s.SupervisorEndpoint == addr && n.n.Role == inventory.RoleServer {
				if n.state != "active" || n.serving == nil {
					return nil, fmt.Errorf("dial %s from %s: connection refused", addr, fn.n.Name)
				}
				client, server := net.Pipe()
				go serveSupervisor(server, *n.serving, n.cacerts)
				return client, nil
			}
		}
		return nil, fmt.Errorf("dial %s from %s: no route to host", addr, fn.n.Name)
	}
	ex.OnFunc(`^IFS=`, func(_ string, stdin []byte, stdout, _ io.Writer) int {
		files := ex.Files()
		var found []string
		for _, pat := range strings.Split(string(stdin), "\n") {
			if pat == "" {
				continue
			}
			var matched []string
			for _, p := range files {
				if m, _ := path.Match(pat, p); m {
					matched = append(matched, p)
				}
			}
			sort.Strings(matched)
			found = append(found, matched...)
		}
		if len(found) == 0 {
			return 0
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, p := range found {
			data, _ := ex.File(p)
			fi, err := ex.Stat(context.Background(), p)
			if err != nil {
				continue
			}
			fmt.Fprintf(stdout, "%s%s\n", fetchHeader, p)
			_ = tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: int64(fi.Mode.Perm()), Size: int64(len(data)), ModTime: fi.ModTime, Typeflag: tar.TypeReg})
			_, _ = tw.Write(data)
		}
		_ = tw.Close()
		fmt.Fprintln(stdout, fetchTar)
		enc := base64.StdEncoding.EncodeToString(buf.Bytes())
		for len(enc) > 76 {
			fmt.Fprintln(stdout, enc[:76])
			enc = enc[76:]
		}
		if enc != "" {
			fmt.Fprintln(stdout, enc)
		}
		return 0
	})
	ex.OnFunc(`^(umask 077 && )?mkdir -p -- `, ok)
	ex.OnFunc(`^chmod [0-7]+ `, func(line string, _ []byte, _, stderr io.Writer) int {
		for _, part := range strings.Split(line, " && ") {
			f := strings.Fields(part)
			if len(f) == 3 && f[0] == "chmod" {
				mode, _ := strconv.ParseUint(f[1], 8, 32)
				p := unquote(f[2])
				data, _ := ex.File(p)
				ex.SetFile(p, data, fs.FileMode(mode))
			}
		}
		return 0
	})
	svc := regexp.QuoteMeta(fn.n.K3s.Service)
	ex.OnFunc(`^systemctl daemon-reload$`, func(string, []byte, io.Writer, io.Writer) int {
		fc.mu.Lock()
		fn.reloads++
		fc.mu.Unlock()
		return 0
	})
	ex.OnFunc(`^systemctl is-active '?`+svc+`'?$`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fc.mu.Lock()
		st := fn.state
		fc.mu.Unlock()
		fmt.Fprintln(stdout, st)
		if st == "active" {
			return 0
		}
		return 3
	})
	ex.OnFunc(`^systemctl (re)?start '?`+svc+`'?$`, func(_ string, _ []byte, _, stderr io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if err := fc.start(fn); err != nil {
			fmt.Fprintf(stderr, "Job for %s.service failed because the control process exited with error code.\n", fn.n.K3s.Service)
			return 1
		}
		return 0
	})
	ex.OnFunc(`^systemctl stop '?`+svc+`'?$`, func(string, []byte, io.Writer, io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		fn.state = "inactive"
		return 0
	})
	show := func(stdout io.Writer) {
		active, sub, result := fn.state, "running", "success"
		switch fn.state {
		case "failed":
			sub, result = "failed", "exit-code"
		case "inactive":
			sub = "dead"
		}
		fmt.Fprintf(stdout, "Result=%s\nNRestarts=0\nActiveState=%s\nSubState=%s\nInvocationID=%032x\n", result, active, sub, fn.restarts)
	}
	ex.OnFunc(`^date \+%s\.%N && systemctl show '?`+svc+`'? --property=`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		now := time.Now()
		fmt.Fprintf(stdout, "%d.%09d\n", now.Unix(), now.Nanosecond())
		show(stdout)
		return 0
	})
	ex.OnFunc(`^systemctl show '?`+svc+`'? --property=`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		show(stdout)
		return 0
	})
	ex.OnFunc(`^(touch \S+ && )?systemctl restart --no-block '?`+svc+`'?$`, func(line string, _ []byte, _, _ io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if f := strings.Fields(line); f[0] == "touch" {
			ex.SetFile(unquote(f[1]), nil, 0o644)
		}
		_ = fc.start(fn) // the failure shows in systemctl show and the journal
		return 0
	})
	ex.OnFunc(`^journalctl -u '?`+svc+`'? (-n \d+|--since @\S+) --no-pager`, func(line string, _ []byte, stdout, _ io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		for _, l := range fn.journal {
			if strings.Contains(line, "grep -E") && !errorLine.MatchString(l) {
				continue
			}
			fmt.Fprintln(stdout, l)
		}
		return 0
	})
	// The ping playbook's probe.
	ex.OnFunc(`^uname -n; k3s --version`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fc.mu.Lock()
		st := fn.state
		fc.mu.Unlock()
		fmt.Fprintf(stdout, "%s\nk3s version %s (abcdef12)\n%s\n", fn.n.Name, fn.version, st)
		return 0
	})
	ex.OnFunc(`^k3s --version$`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fmt.Fprintf(stdout, "k3s version %s (abcdef12)\ngo version go1.22.12\n", fn.version)
		return 0
	})
	ex.OnFunc(`^k3s certificate rotate-ca `, func(line string, _ []byte, stdout, stderr io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.rotateCA(fn, line, stdout, stderr)
	})
	ex.OnFunc(`^k3s certificate rotate( |$)`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		fn.rotateLeafs = true
		fmt.Fprintf(stdout, "Successfully backed up certificates to %s/tls-%d, please restart k3s server or agent to rotate certificates\n", fn.sd(), time.Now().Unix())
		return 0
	})
}

// rotateCA is `k3s certificate rotate-ca` with the handler's validation
// (k3s-ca-rotation.md §5).
func (fc *FakeK3sCluster) rotateCA(fn *fakeNode, line string, stdout, stderr io.Writer) int {
	var dir string
	force := false
	for _, w := range strings.Fields(line)[3:] {
		switch {
		case strings.HasPrefix(w, "--path="):
			dir = unquote(strings.TrimPrefix(w, "--path="))
		case w == "--force":
			force = true
		}
	}
	if fn.n.Role != inventory.RoleServer || fn.state != "active" {
		fmt.Fprintln(stderr, "Error: see server log for details: connection refused")
		return 1
	}
	staged := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := fn.ex.File(dir + "/" + bf.Path); ok && bf.Rotate {
			staged[bf.Path] = b
		}
	}
	if len(staged) == 0 {
		fmt.Fprintf(stderr, "Error: no CA files in %s\n", dir)
		return 1
	}
	if errs := k3s.ValidateCARotation(fn.caSet(), staged); len(errs) > 0 && !force {
		fn.log("level=error msg=\"certificate error: failed to validate new CA certificates and keys: %v\"", errors.Join(errs...))
		fmt.Fprintln(stderr, "Error: see server log for details")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := fc.Datastore(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	now := time.Now()
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := staged[bf.Path]; ok && len(b) > 0 {
			cur[bf.Key] = k3s.File{Timestamp: now, Content: b}
		}
	}
	if err := fc.saveBootstrap(ctx, cur); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	fn.log("level=info msg=\"certificate: Cluster Certificate Authority data has been updated, k3s must be restarted.\"")
	fmt.Fprintln(stdout, "certificates saved to datastore")
	return 0
}

// poolOf is a cert pool holding every certificate of a PEM bundle.
func poolOf(bundle []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(bundle)
	return p
}
