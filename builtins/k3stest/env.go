package k3stest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/caretaker/caretaker/internal/k3s"
)

// Env is what the fake clusters made from it share: one embedded etcd
// with client TLS (each cluster keeps its bootstrap data under its own
// key), the initial CA set and the leaf certificates of each node name,
// which are slow to make. Make one with NewEnv (usually in TestMain) and
// Close it after the clusters made from it are closed. An Env is safe for
// concurrent use.
type Env struct {
	dir      string
	etcd     *embed.Etcd
	etcdAddr string
	cli      *clientv3.Client
	t0       time.Time
	cas      map[string][]byte

	mu     sync.Mutex
	closed bool
	leaves map[string]map[string][]byte
}

// NewEnv generates a cluster CA set and starts the shared etcd (a second
// or so). Close stops it and removes its files.
func NewEnv() (env *Env, err error) {
	env = &Env{leaves: map[string]map[string][]byte{}}
	env.t0 = time.Now().Add(-time.Hour).Truncate(time.Second)
	if env.cas, err = k3s.GenerateClusterCAs(env.t0, "fake"); err != nil {
		return nil, fmt.Errorf("k3stest: cluster CAs: %w", err)
	}
	if env.dir, err = os.MkdirTemp("", "caretaker-fake-etcd-"); err != nil {
		return nil, err
	}
	if err := env.startEtcd(); err != nil {
		env.Close()
		return nil, err
	}
	return env, nil
}

// Close stops the etcd and removes its files. Clusters made from env no
// longer work afterwards; NewCluster fails. Close is idempotent.
func (env *Env) Close() error {
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.closed {
		return nil
	}
	env.closed = true
	var err error
	if env.cli != nil {
		err = env.cli.Close()
	}
	if env.etcd != nil {
		env.etcd.Close()
	}
	return errors.Join(err, os.RemoveAll(env.dir))
}

// client returns the etcd client, or an error once env is closed.
func (env *Env) client() (*clientv3.Client, error) {
	if env == nil {
		return nil, errors.New("k3stest: no Env (make one with NewEnv)")
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.closed || env.cli == nil {
		return nil, errors.New("k3stest: the Env is closed")
	}
	return env.cli, nil
}

// clusterCAs returns a copy of the initial CA set, keyed relative to the
// server directory.
func (env *Env) clusterCAs() map[string][]byte {
	out := make(map[string][]byte, len(env.cas))
	for p, b := range env.cas {
		out[p] = b
	}
	return out
}

// leavesFor returns (and caches) the leaf certificates of a node.
func (env *Env) leavesFor(opts k3s.LeafOptions) (map[string][]byte, error) {
	key := fmt.Sprintf("%s/%v/%v", opts.NodeName, opts.NodeIPs, opts.Agent)
	env.mu.Lock()
	defer env.mu.Unlock()
	if l, ok := env.leaves[key]; ok {
		return l, nil
	}
	l, err := k3s.IssueLeafCerts(env.cas, opts)
	if err != nil {
		return nil, err
	}
	env.leaves[key] = l
	return l, nil
}

// startEtcd starts the embedded etcd on loopback ports with client
// certificate authentication against the cluster's etcd server CA, and
// connects a client to it.
func (env *Env) startEtcd() error {
	cas, t0 := env.cas, env.t0
	leaves, err := k3s.IssueLeafCerts(cas, k3s.LeafOptions{NodeName: "etcd", Now: t0})
	if err != nil {
		return err
	}
	files := map[string][]byte{"server.crt": leaves["server/tls/etcd/server-client.crt"], "server.key": leaves["server/tls/etcd/server-client.key"], "ca.crt": cas[k3s.PathETCDServerCA]}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(env.dir, n), b, 0o600); err != nil {
			return err
		}
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(env.dir, "etcd")
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(env.dir, "etcd.log")}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: filepath.Join(env.dir, "server.crt"), KeyFile: filepath.Join(env.dir, "server.key"), TrustedCAFile: filepath.Join(env.dir, "ca.crt"), ClientCertAuth: true}
	client, err1 := freePort()
	peer, err2 := freePort()
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
		return fmt.Errorf("k3stest: etcd: %w", err)
	}
	env.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return errors.New("k3stest: etcd did not start")
	}
	env.etcdAddr = client
	pair, err := tls.X509KeyPair(leaves["server/tls/etcd/client.crt"], leaves["server/tls/etcd/client.key"])
	if err != nil {
		return err
	}
	env.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{"https://" + client}, DialTimeout: 10 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: poolOf(cas[k3s.PathETCDServerCA])}})
	return err
}

// freePort returns a loopback address with a port that was free a moment
// ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// poolOf is a cert pool holding every certificate of a PEM bundle.
func poolOf(bundle []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(bundle)
	return p
}
