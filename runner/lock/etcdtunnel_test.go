package lock

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/caretaker/caretaker/runner/transport/sshnode"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

// testPKI is a CA with helpers to issue certificates for the etcd tests.
type testPKI struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newTestPKI(t *testing.T, cn string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testPKI{cert: c, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (p *testPKI) issue(t *testing.T, cn string, ips []net.IP, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startTestEtcd starts a real etcd with client TLS from ca on a free
// 127.0.0.1 port and returns its client address.
func startTestEtcd(t *testing.T, ca *testPKI) string {
	t.Helper()
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, "etcd", []net.IP{net.ParseIP("127.0.0.1")}, x509.ExtKeyUsageServerAuth)
	files := map[string][]byte{"server.crt": srvCert, "server.key": srvKey, "ca.crt": ca.certPEM}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "data")
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		TrustedCAFile: filepath.Join(dir, "ca.crt"), ClientCertAuth: true,
	}
	// A port found free may be taken by another test process before etcd
	// binds it: try a few.
	var (
		client string
		e      *embed.Etcd
		err    error
	)
	for attempt := 0; attempt < 5; attempt++ {
		client = "127.0.0.1:" + strconv.Itoa(freePort(t))
		peer := "127.0.0.1:" + strconv.Itoa(freePort(t))
		cu := []url.URL{{Scheme: "https", Host: client}}
		pu := []url.URL{{Scheme: "http", Host: peer}}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = cu, cu
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = pu, pu
		cfg.ListenMetricsUrls = nil
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		e, err = embed.StartEtcd(cfg)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	return client
}

func TestDialEtcdThroughSSH(t *testing.T) {
	ca := newTestPKI(t, "etcd-server-ca")
	endpoint := startTestEtcd(t, ca)
	node, srv := transporttest.StartNode(t, "server-1")
	ctx := context.Background()
	ex, err := sshnode.Dial(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	certPEM, keyPEM := ca.issue(t, "etcd-client", nil, x509.ExtKeyUsageClientAuth)

	cli, err := DialEtcd(ctx, ex, endpoint, certPEM, keyPEM, ca.certPEM)
	if err != nil {
		t.Fatalf("DialEtcd: %v", err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/bootstrap/abc", "sealed"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "/bootstrap/abc")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "sealed" {
		t.Fatalf("get = %v, %v; want the value put", resp, err)
	}
	if srv.Connections() != 1 {
		t.Errorf("the tunnel used %d SSH connections, want the executor's one", srv.Connections())
	}
}

func TestDialEtcdErrorsNameNodeAndEndpoint(t *testing.T) {
	ca := newTestPKI(t, "etcd-server-ca")
	endpoint := startTestEtcd(t, ca)
	node, _ := transporttest.StartNode(t, "server-2")
	ctx := context.Background()
	ex, err := sshnode.Dial(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	certPEM, keyPEM := ca.issue(t, "etcd-client", nil, x509.ExtKeyUsageClientAuth)

	other := newTestPKI(t, "another-ca")
	_, err = DialEtcd(ctx, ex, endpoint, certPEM, keyPEM, other.certPEM)
	if err == nil || !strings.Contains(err.Error(), "TLS handshake failed") || !strings.Contains(err.Error(), "server-2") || !strings.Contains(err.Error(), endpoint) {
		t.Errorf("wrong CA: err = %v; want a TLS handshake error naming the node and endpoint", err)
	}

	closed := "127.0.0.1:" + strconv.Itoa(freePort(t))
	_, err = DialEtcd(ctx, ex, closed, certPEM, keyPEM, ca.certPEM)
	if err == nil || !strings.Contains(err.Error(), "not reachable from node server-2") {
		t.Errorf("closed port: err = %v; want 'not reachable from node server-2'", err)
	}

	_, err = DialEtcd(ctx, ex, "no-port", certPEM, keyPEM, ca.certPEM)
	if err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("bad endpoint: err = %v", err)
	}
	_, err = DialEtcd(ctx, ex, endpoint, certPEM, []byte("junk"), ca.certPEM)
	if err == nil || !strings.Contains(err.Error(), "etcd client certificate of node server-2") {
		t.Errorf("bad key: err = %v", err)
	}
}
