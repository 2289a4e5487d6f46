package lab

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/caretaker/caretaker/internal/k3s"
)

// datastore is the cluster's datastore: one real embedded etcd for the
// whole lab, listening for clients on every server's <ip>:2379 with client
// TLS from the cluster's etcd server CA (issue 3 "Datastore"). It holds
// /bootstrap/<hash> in K3s's encrypted format.
type datastore struct {
	etcd *embed.Etcd
	cli  *clientv3.Client // in-process client, no TLS hop
	// Paths of a client certificate, key and CA for tools (etcdctl,
	// caretaker) in DIR/etcd-client/.
	caFile, certFile, keyFile string
	endpoints                 []string // "<ip>:2379" of every server
}

// startDatastore starts etcd in dir/etcd. etcdServerCA and etcdServerCAKey
// are the cluster's etcd server CA (PEM).
func startDatastore(ctx context.Context, dir string, serverIPs []string, etcdServerCA, etcdServerCAKey []byte) (*datastore, error) {
	ca, err := loadCAPair(etcdServerCA, etcdServerCAKey)
	if err != nil {
		return nil, fmt.Errorf("etcd server CA: %w", err)
	}
	tlsDir := filepath.Join(dir, "etcd-tls")
	clientDir := filepath.Join(dir, "etcd-client")
	for _, d := range []string{tlsDir, clientDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	for _, ip := range serverIPs {
		ips = append(ips, net.ParseIP(ip))
	}
	srvCert, srvKey, err := ca.issue("etcd-server", ips, []string{"localhost"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, etcdServerCA)
	if err != nil {
		return nil, fmt.Errorf("issue the etcd serving certificate: %w", err)
	}
	cliCert, cliKey, err := ca.issue("etcd-client", nil, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, etcdServerCA)
	if err != nil {
		return nil, fmt.Errorf("issue the etcd client certificate: %w", err)
	}
	ds := &datastore{
		caFile:   filepath.Join(clientDir, "ca.crt"),
		certFile: filepath.Join(clientDir, "client.crt"),
		keyFile:  filepath.Join(clientDir, "client.key"),
	}
	files := map[string][]byte{
		filepath.Join(tlsDir, "server.crt"): srvCert,
		filepath.Join(tlsDir, "server.key"): srvKey,
		filepath.Join(tlsDir, "ca.crt"):     etcdServerCA,
		ds.caFile:                           etcdServerCA,
		ds.certFile:                         cliCert,
		ds.keyFile:                          cliKey,
	}
	for p, b := range files {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, err
		}
	}

	cfg := embed.NewConfig()
	cfg.Name = "lab"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       filepath.Join(tlsDir, "server.crt"),
		KeyFile:        filepath.Join(tlsDir, "server.key"),
		TrustedCAFile:  filepath.Join(tlsDir, "ca.crt"),
		ClientCertAuth: true,
	}
	var clientURLs []url.URL
	for _, ip := range serverIPs {
		clientURLs = append(clientURLs, url.URL{Scheme: "https", Host: net.JoinHostPort(ip, "2379")})
		ds.endpoints = append(ds.endpoints, net.JoinHostPort(ip, "2379"))
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = clientURLs, clientURLs
	peer := []url.URL{{Scheme: "http", Host: net.JoinHostPort(serverIPs[0], "2380")}}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = peer, peer
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.AutoCompactionMode = embed.CompactorModeRevision
	cfg.AutoCompactionRetention = "1000"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd on %v: %w (another lab on the same --subnet?)", ds.endpoints, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd did not become ready within 60s (see %s)", filepath.Join(dir, "etcd.log"))
	}
	ds.etcd = e
	ds.cli = v3client.New(e.Server)
	return ds, nil
}

func (ds *datastore) close() {
	if ds == nil {
		return
	}
	if ds.cli != nil {
		_ = ds.cli.Close()
	}
	if ds.etcd != nil {
		ds.etcd.Close()
		<-ds.etcd.Server.StopNotify()
	}
}

// errNoBootstrapKey says the datastore has no bootstrap data for a token.
var errNoBootstrapKey = fmt.Errorf("bootstrap data not found in the datastore")

// getBootstrap reads and decrypts /bootstrap/<hash(passphrase)> as K3s's
// getBootstrapData does (k3s-ca-rotation.md §1 fix, §3 "Key"). With a
// different token's key present it fails like getBootstrapKeyFromStorage.
func (ds *datastore) getBootstrap(ctx context.Context, passphrase string) (k3s.BootstrapData, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	key := k3s.StorageKey(passphrase)
	resp, err := ds.cli.Get(ctx, "/bootstrap", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("read %s from etcd: %w", key, err)
	}
	var found []byte
	var rev int64
	for _, kv := range resp.Kvs {
		if string(kv.Key) == key {
			found, rev = kv.Value, kv.ModRevision
		}
	}
	if found == nil {
		if len(resp.Kvs) > 0 {
			return nil, 0, fmt.Errorf("bootstrap data already found and encrypted with different token")
		}
		return nil, 0, errNoBootstrapKey
	}
	if len(found) == 0 {
		return nil, 0, fmt.Errorf("bootstrap key %s is locked for initial create", key)
	}
	plain, err := k3s.Decrypt(passphrase, string(found))
	if err != nil {
		return nil, 0, err
	}
	d, err := k3s.UnmarshalBootstrap(plain)
	if err != nil {
		return nil, 0, err
	}
	return d, rev, nil
}

// getBootstrapRaw returns the decrypted JSON exactly as stored, which the
// fixed /v1-k3s/server-bootstrap streams (golden server-bootstrap-endpoint.txt 1).
func (ds *datastore) getBootstrapRaw(ctx context.Context, passphrase string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := ds.cli.Get(ctx, k3s.StorageKey(passphrase))
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
func (ds *datastore) saveBootstrap(ctx context.Context, passphrase string, d k3s.BootstrapData, override bool) (exists bool, err error) {
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
	all, err := ds.cli.Get(ctx, "/bootstrap", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return false, err
	}
	if len(all.Kvs) > 1 {
		return false, fmt.Errorf("found multiple bootstrap keys in storage")
	}
	if len(all.Kvs) == 1 && string(all.Kvs[0].Key) != key {
		return false, fmt.Errorf("bootstrap data already found and encrypted with different token")
	}
	if override {
		_, err = ds.cli.Put(ctx, key, sealed)
		return false, err
	}
	txn, err := ds.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, sealed)).
		Commit()
	if err != nil {
		return false, err
	}
	return !txn.Succeeded, nil
}
