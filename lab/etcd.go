package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	etcdversion "go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"google.golang.org/protobuf/proto"

	"github.com/caretaker/caretaker/internal/k3s"
)

// etcdVersion is "v3.x.y" of the embedded etcd (K3s logs it on connect).
var etcdVersion = "v" + etcdversion.Version

// The datastore is K3s's embedded etcd: one member per server, joined as
// one cluster, with its data in that node's SD/db/etcd, listening on the
// node's <ip>:2379 for clients (TLS from the node's etcd server CA, client
// certificates required) and <ip>:2380 for peers (TLS from the node's etcd
// peer CA). A member runs while its server's K3s runs: K3s starts it with
// certificates issued from the node's disk at that start (k3s-ca-rotation
// §4) and it stops with K3s. Quorum rules are etcd's own: with two of three
// members down, the third does not become ready.

// etcdMember is one running member.
type etcdMember struct {
	n   *node
	e   *embed.Etcd
	cli *clientv3.Client // in-process client of this member, no TLS hop
	// gate is the node's member gate, held from start to stop (see
	// node.memberGate).
	gate chan struct{}

	closeOnce sync.Once
}

// memberGate is held by the node's running etcd member, from before it
// opens its data until it stopped: a start waits until the previous
// member of the node let go of its WAL (etcd exits the process, not only
// the member, when it finds the WAL locked).
func (n *node) memberGate() chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gate == nil {
		n.gate = make(chan struct{}, 1)
	}
	return n.gate
}

// etcd timing: etcd's defaults (100 ms heartbeat, 1 s election timeout).
const (
	etcdTickMs     = 100
	etcdElectionMs = 1000
)

var walSizeOnce sync.Once

// memberName is the member's name, K3s-style <hostname>-<8 hex>.
func memberName(n *node) string {
	sum := sha256.Sum256([]byte(n.lab.opts.Dir + "/" + n.name))
	return n.name + "-" + hex.EncodeToString(sum[:4])
}

func peerURL(n *node) url.URL {
	return url.URL{Scheme: "https", Host: net.JoinHostPort(n.ip, "2380")}
}

func clientURL(n *node) url.URL {
	return url.URL{Scheme: "https", Host: net.JoinHostPort(n.ip, "2379")}
}

// initialCluster is the --initial-cluster of every member.
func (l *Lab) initialCluster() string {
	var parts []string
	for _, n := range l.nodes {
		if n.isServer() {
			u := peerURL(n)
			parts = append(parts, memberName(n)+"="+u.String())
		}
	}
	return strings.Join(parts, ",")
}

// etcdEndpoints lists every server's client endpoint "<ip>:2379".
func (l *Lab) etcdEndpoints() []string {
	var out []string
	for _, n := range l.nodes {
		if n.isServer() {
			out = append(out, net.JoinHostPort(n.ip, "2379"))
		}
	}
	return out
}

// memberConfig is the embed configuration of n's member; sdHost is the
// host path of the node's server dir.
func (n *node) memberConfig(sdHost string) *embed.Config {
	etls := filepath.Join(sdHost, "tls", "etcd")
	cfg := embed.NewConfig()
	cfg.Name = memberName(n)
	cfg.Dir = filepath.Join(sdHost, "db", "etcd")
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(n.runDir(), "etcd.log")}
	cfg.TickMs, cfg.ElectionMs = etcdTickMs, etcdElectionMs
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       filepath.Join(etls, "server-client.crt"),
		KeyFile:        filepath.Join(etls, "server-client.key"),
		TrustedCAFile:  filepath.Join(etls, "server-ca.crt"),
		ClientCertAuth: true,
	}
	cfg.PeerTLSInfo = transport.TLSInfo{
		CertFile:       filepath.Join(etls, "peer-server-client.crt"),
		KeyFile:        filepath.Join(etls, "peer-server-client.key"),
		TrustedCAFile:  filepath.Join(etls, "peer-ca.crt"),
		ClientCertAuth: true,
	}
	cu, pu := clientURL(n), peerURL(n)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = n.lab.initialCluster()
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.AutoCompactionMode = embed.CompactorModeRevision
	cfg.AutoCompactionRetention = "1000"
	return cfg
}

// startMember starts n's etcd member from the files in sdHost (host
// path). It returns once the member listens; waitReady waits for it to
// join the cluster's quorum.
func (n *node) startMember(sdHost string) (*etcdMember, error) {
	// Small WAL segments: etcd preallocates 64 MiB per member otherwise.
	walSizeOnce.Do(func() { wal.SegmentSizeBytes = 4 << 20 })
	if err := os.MkdirAll(n.runDir(), 0o755); err != nil {
		return nil, err
	}
	gate := n.memberGate()
	select {
	case gate <- struct{}{}:
	case <-time.After(2 * time.Minute):
		return nil, fmt.Errorf("start etcd member %s: its previous member has not stopped after 2 minutes", memberName(n))
	}
	var e *embed.Etcd
	var err error
	for try := 0; ; try++ {
		e, err = embed.StartEtcd(n.memberConfig(sdHost))
		// A member that just stopped may still hold its data for a moment.
		if err == nil || try >= 20 || !(strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "timeout")) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		<-gate
		return nil, fmt.Errorf("start etcd member %s on %s:2379/2380 from %s: %w", memberName(n), n.ip, filepath.Join(sdHost, "tls", "etcd"), err)
	}
	return &etcdMember{n: n, e: e, cli: v3client.New(e.Server), gate: gate}, nil
}

// waitReady waits until the member serves (it has a leader and has
// published itself: quorum), logging as K3s's wait does every 5 s.
func (m *etcdMember) waitReady(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.e.Server.ReadyNotify():
			return nil
		case err := <-m.e.Err():
			return fmt.Errorf("etcd member %s failed: %w", memberName(m.n), err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			m.n.logK3s("info", "Waiting for etcd server to become available")
		}
	}
}

// close stops the member as K3s's shutdown does: its listeners go at
// once (so that the next start can bind them), the server hands its
// leadership to a connected peer and stops, and etcd's own slow drain of
// the connections still open (up to its request timeout) finishes in the
// background, listening on nothing.
func (m *etcdMember) close() {
	if m == nil {
		return
	}
	m.closeOnce.Do(func() {
		for _, l := range m.e.Clients {
			_ = l.Close()
		}
		for _, p := range m.e.Peers {
			_ = p.Listener.Close()
		}
		_ = m.cli.Close()
		if m.n.lab.ctx.Err() != nil {
			// The whole lab goes down: no leader to hand over to.
			m.e.Server.HardStop()
		} else {
			m.e.Server.Stop()
		}
		<-m.e.Server.StopNotify()
		<-m.gate // the WAL and the backend are closed by now
		go m.e.Close()
	})
}

// bootstrapEtcd forms the cluster at lab up: every server's member starts
// at once from its node's files, and once they agree, the bootstrap data
// is saved as the first server saved it long ago. The members keep
// running; each server's first start takes its member over.
func (l *Lab) bootstrapEtcd(ctx context.Context, seed k3s.BootstrapData) error {
	var servers []*node
	for _, n := range l.nodes {
		if n.isServer() {
			servers = append(servers, n)
		}
	}
	for _, n := range servers {
		m, err := n.startMember(n.host(filepath.Join(n.dataDir, "server")))
		if err != nil {
			return fmt.Errorf("%w (another lab on the same --subnet?)", err)
		}
		n.mu.Lock()
		n.initMember = m
		n.mu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, n := range servers {
		if err := n.initMember.waitReady(wctx); err != nil {
			return fmt.Errorf("etcd member of %s did not become ready (see %s): %w", n.name, filepath.Join(n.runDir(), "etcd.log"), err)
		}
	}
	if _, err := saveBootstrap(ctx, servers[0].initMember.cli, l.password, seed, false); err != nil {
		return fmt.Errorf("seed the datastore: %w", err)
	}
	return nil
}

// takeInitMember hands the member started at lab up to the node's first
// K3s start (nil afterwards).
func (n *node) takeInitMember() *etcdMember {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.initMember
	n.initMember = nil
	return m
}

// refreshEtcdClientFiles copies a server's etcd client certificate, key and
// CA bundle to DIR/etcd-client (what `lab status` names for tools): those
// of the server that started last, so that they always verify against a
// member that is up.
func (l *Lab) refreshEtcdClientFiles(n *node) {
	etls := n.host(filepath.Join(n.dataDir, "server", "tls", "etcd"))
	dst := filepath.Join(l.opts.Dir, "etcd-client")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return
	}
	l.etcdFilesMu.Lock()
	defer l.etcdFilesMu.Unlock()
	for src, name := range map[string]string{"server-ca.crt": "ca.crt", "client.crt": "client.crt", "client.key": "client.key"} {
		b, err := os.ReadFile(filepath.Join(etls, src))
		if err != nil {
			continue
		}
		tmp := filepath.Join(dst, "."+name+".tmp")
		if os.WriteFile(tmp, b, 0o600) == nil {
			_ = os.Rename(tmp, filepath.Join(dst, name))
		}
	}
}

// errNoBootstrapKey says the datastore has no bootstrap data for a token.
var errNoBootstrapKey = errors.New("bootstrap data not found in the datastore")

// bootstrapFromKVs picks and decrypts /bootstrap/<hash(passphrase)> out
// of the /bootstrap keys as K3s's getBootstrapKeyFromStorage does
// (k3s-ca-rotation.md §3 "Key").
func bootstrapFromKVs(kvs map[string][]byte, passphrase string) (k3s.BootstrapData, error) {
	key := k3s.StorageKey(passphrase)
	found, ok := kvs[key]
	if !ok {
		if len(kvs) > 0 {
			return nil, errors.New("bootstrap data already found and encrypted with different token")
		}
		return nil, errNoBootstrapKey
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("bootstrap key %s is locked for initial create", key)
	}
	plain, err := k3s.Decrypt(passphrase, string(found))
	if err != nil {
		return nil, err
	}
	return k3s.UnmarshalBootstrap(plain)
}

// getBootstrap reads and decrypts the bootstrap data through a member
// (getBootstrapData, 10 s timeout: k3s-ca-rotation.md §1 fix).
func getBootstrap(ctx context.Context, kv clientv3.KV, passphrase string) (k3s.BootstrapData, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := kv.Get(ctx, "/bootstrap", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s from etcd: %w", k3s.StorageKey(passphrase), err)
	}
	kvs := map[string][]byte{}
	for _, e := range resp.Kvs {
		kvs[string(e.Key)] = e.Value
	}
	return bootstrapFromKVs(kvs, passphrase)
}

// getBootstrapRaw returns the decrypted JSON exactly as stored, which the
// fixed /v1-k3s/server-bootstrap streams (golden server-bootstrap-endpoint.txt 1).
func getBootstrapRaw(ctx context.Context, kv clientv3.KV, passphrase string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := kv.Get(ctx, k3s.StorageKey(passphrase))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, errNoBootstrapKey
	}
	return k3s.Decrypt(passphrase, string(resp.Kvs[0].Value))
}

// saveBootstrap is K3s's Save (k3s-ca-rotation.md §2 "Writing back"):
// without override it creates the key only when absent and reports
// exists=true otherwise; with override it updates the existing key.
func saveBootstrap(ctx context.Context, kv clientv3.KV, passphrase string, d k3s.BootstrapData, override bool) (exists bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	plain, err := k3s.MarshalBootstrap(d)
	if err != nil {
		return false, err
	}
	sealed, err := k3s.Encrypt(passphrase, plain)
	if err != nil {
		return false, err
	}
	key := k3s.StorageKey(passphrase)
	all, err := kv.Get(ctx, "/bootstrap", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return false, err
	}
	if len(all.Kvs) > 1 {
		return false, errors.New("found multiple bootstrap keys in storage")
	}
	if len(all.Kvs) == 1 && string(all.Kvs[0].Key) != key {
		return false, errors.New("bootstrap data already found and encrypted with different token")
	}
	if override {
		_, err = kv.Put(ctx, key, sealed)
		return false, err
	}
	txn, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, sealed)).
		Commit()
	if err != nil {
		return false, err
	}
	return !txn.Succeeded, nil
}

// readLocalBootstrap reads the bootstrap data from the node's own etcd
// data while its member is stopped, as K3s's local reconcile does (the
// temporary etcd over the local data before d300004f2, a read-only copy of
// SD/db/etcd after): whatever the member last applied, however stale,
// without quorum. The member the lab started at lab up is still running
// at a node's first start; it is read through that member.
func (n *node) readLocalBootstrap(ctx context.Context, sdHost, passphrase string) (k3s.BootstrapData, error) {
	n.mu.Lock()
	m := n.initMember
	n.mu.Unlock()
	if m != nil {
		return getBootstrap(ctx, m.cli, passphrase)
	}
	path := filepath.Join(sdHost, "db", "etcd", "member", "snap", "db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open the local etcd data %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open the local etcd data %s: %w", path, err)
	}
	defer db.Close()
	kvs := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return nil
		}
		// Keys are revisions in order; a trailing 't' marks a deletion.
		return b.ForEach(func(rev, v []byte) error {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return fmt.Errorf("decode revision %x: %w", rev, err)
			}
			if !strings.HasPrefix(string(kv.Key), "/bootstrap") {
				return nil
			}
			if len(rev) == 18 && rev[17] == 't' {
				delete(kvs, string(kv.Key))
			} else {
				kvs[string(kv.Key)] = kv.Value
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read the local etcd data %s: %w", path, err)
	}
	return bootstrapFromKVs(kvs, passphrase)
}
