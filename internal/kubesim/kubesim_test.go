package kubesim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Unit tests of the store and handler without a host simulator; the
// lab's integration tests (lab/kubeapi_test.go) cover the API through a
// real supervisor.

// testCA is a CA that signs client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// clientCert is a PEM certificate and key.
type clientCert struct{ cert, key []byte }

// client issues a client certificate.
func (ca *testCA) client(t *testing.T, cn string, orgs ...string) *clientCert {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return &clientCert{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}
}

// testServer is a Server.
type testServer struct {
	addr     string
	root     []byte
	cas      *x509.CertPool
	ready    atomic.Bool
	stopped  chan struct{}
	stopOnce sync.Once
}

func newTestServer(addr string, root []byte, cas *x509.CertPool) *testServer {
	s := &testServer{addr: addr, root: root, cas: cas, stopped: make(chan struct{})}
	s.ready.Store(true)
	return s
}

func (s *testServer) Address() string           { return s.addr }
func (s *testServer) RootCA() []byte            { return s.root }
func (s *testServer) ClientCAs() *x509.CertPool { return s.cas }
func (s *testServer) Ready() bool               { return s.ready.Load() }
func (s *testServer) Stopped() <-chan struct{}  { return s.stopped }
func (s *testServer) stop()                     { s.stopOnce.Do(func() { close(s.stopped) }) }

// testHost is a Host.
type testHost struct {
	agents int64
	done   chan struct{}
}

func (h *testHost) Agents() int64         { return h.agents }
func (h *testHost) Done() <-chan struct{} { return h.done }

// serve serves the store's API for sv on an HTTPS test server that
// requests client certificates, as K3s does.
func serve(t *testing.T, st *Store, sv Server) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h := st.Handler(sv)
	for _, p := range Routes {
		mux.Handle(p, h)
	}
	ts := httptest.NewUnstartedServer(mux)
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// restConfig is a client of ts with cc (nil: no client certificate).
func restConfig(ts *httptest.Server, cc *clientCert) *rest.Config {
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	cfg := &rest.Config{Host: ts.URL, Timeout: 5 * time.Second, QPS: 1000, Burst: 1000,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
	if cc != nil {
		cfg.CertData, cfg.KeyData = cc.cert, cc.key
	}
	return cfg
}

func clientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// eventually polls cond for up to 3 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 3s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rootCAIn is kube-root-ca.crt's ca.crt in ns.
func rootCAIn(st *Store, ns string) string {
	o, err := st.get(cmResource(), ns, rootCAConfigMap)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	v, _, _ := unstructured.NestedString(o, "data", "ca.crt")
	return v
}

func TestHandlerAuthenticatesPerServer(t *testing.T) {
	ca, other := newTestCA(t, "client-ca"), newTestCA(t, "foreign")
	st := NewStore(nil, []byte("root\n"))
	sv := newTestServer("10.0.0.1:6443", []byte("root\n"), ca.pool())
	ts := serve(t, st, sv)
	ctx := context.Background()
	list := func(cfg *rest.Config) error {
		_, err := clientset(t, cfg).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		return err
	}
	if err := list(restConfig(ts, nil)); !apierrors.IsUnauthorized(err) {
		t.Errorf("no client certificate: %v, want 401", err)
	}
	if err := list(restConfig(ts, other.client(t, "system:admin", "system:masters"))); !apierrors.IsUnauthorized(err) {
		t.Errorf("a certificate of another CA: %v, want 401", err)
	}
	err := list(restConfig(ts, ca.client(t, "system:kube-proxy")))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `User "system:kube-proxy" cannot list resource "namespaces"`) {
		t.Errorf("not an admin: %v, want 403", err)
	}
	admin := restConfig(ts, ca.client(t, "system:admin", "system:masters"))
	if err := list(admin); err != nil {
		t.Errorf("admin: %v", err)
	}
	groups, err := clientset(t, admin).Discovery().ServerGroups()
	if err != nil || len(groups.Groups) == 0 {
		t.Errorf("discovery: %v %v", groups, err)
	}
	sv.ready.Store(false)
	if err := list(admin); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("before the server is ready: %v, want 503", err)
	}
}

// TestLeaseFollowsTheServers: the first ready server's root CA is
// published; a later one does not take the lease; when the leader stops
// the longest-ready running server takes over and its root CA is
// published everywhere.
func TestLeaseFollowsTheServers(t *testing.T) {
	st := NewStore(&testHost{done: make(chan struct{})}, []byte("initial\n"))
	a := newTestServer("a:6443", []byte("root-a\n"), nil)
	b := newTestServer("b:6443", []byte("root-b\n"), nil)
	c := newTestServer("c:6443", []byte("root-c\n"), nil)
	st.ServerReady(a)
	eventually(t, "root-a published", func() bool { return rootCAIn(st, "default") == "root-a\n" })
	st.ServerReady(b)
	st.ServerReady(c)
	time.Sleep(3 * kubeControllerDelay)
	if got := rootCAIn(st, "kube-system"); got != "root-a\n" {
		t.Fatalf("a later server took the lease: %q", got)
	}
	a.stop()
	st.ServerStopped(a)
	eventually(t, "root-b (ready longest) published", func() bool { return rootCAIn(st, "kube-public") == "root-b\n" })
	// A non-leader's stop changes nothing.
	c.stop()
	st.ServerStopped(c)
	time.Sleep(3 * kubeControllerDelay)
	if got := rootCAIn(st, "default"); got != "root-b\n" {
		t.Fatalf("a non-leader's stop moved the lease: %q", got)
	}
	// A restarted server is ready again; the leader's stop hands over to it.
	a2 := newTestServer("a:6443", []byte("root-a2\n"), nil)
	st.ServerReady(a2)
	b.stop()
	st.ServerStopped(b)
	eventually(t, "root-a2 published", func() bool { return rootCAIn(st, "default") == "root-a2\n" })
}

// TestHostAgentsAndDone: DaemonSets are scheduled to the host's agents;
// once the host is done the controllers stop.
func TestHostAgentsAndDone(t *testing.T) {
	h := &testHost{agents: 3, done: make(chan struct{})}
	st := NewStore(h, []byte("root\n"))
	ds := map[string]any{
		"apiVersion": "apps/v1", "kind": "DaemonSet",
		"metadata": map[string]any{"name": "agent"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "agent"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "agent"}}},
		},
	}
	if _, err := st.create(kubeResourceByKind("apps", "DaemonSet"), "default", ds, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 scheduled", func() bool {
		o, err := st.get(kubeResourceByKind("apps", "DaemonSet"), "default", "agent")
		n, _, _ := unstructured.NestedInt64(o, "status", "desiredNumberScheduled")
		return err == nil && n == 3
	})
	close(h.done)
	if _, err := st.create(nsResource(), "", map[string]any{"metadata": map[string]any{"name": "late"}}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * kubeControllerDelay)
	if got := rootCAIn(st, "late"); !strings.Contains(got, "not found") {
		t.Errorf("the controllers reacted after the host was done: %q", got)
	}
}

func TestNilStoreHooks(t *testing.T) {
	var st *Store
	sv := newTestServer("x:6443", nil, nil)
	st.ServerReady(sv) // must not panic
	st.ServerStopped(sv)
}

func TestResolveKind(t *testing.T) {
	for _, k := range []string{"deployments", "Deployment", "deploy", "deployments.apps", "DEPLOYMENT.apps"} {
		if v, kind, ns, err := ResolveKind(k); err != nil || v != "apps/v1" || kind != "Deployment" || !ns {
			t.Errorf("%s: %s %s %v %v", k, v, kind, ns, err)
		}
	}
	if _, kind, ns, err := ResolveKind("validatingwebhookconfiguration"); err != nil || kind != "ValidatingWebhookConfiguration" || ns {
		t.Errorf("validatingwebhookconfiguration: %s %v %v", kind, ns, err)
	}
	if _, _, _, err := ResolveKind("pods"); err == nil || !strings.Contains(err.Error(), "serves namespaces, secrets") {
		t.Errorf("pods: %v", err)
	}
}

// TestApplyAndGet: Apply creates, then replaces (status kept, generation
// bumped, a stale resourceVersion ignored); Get finds by any kind name.
func TestApplyAndGet(t *testing.T) {
	st := NewStore(&testHost{done: make(chan struct{})}, []byte("root\n"))
	dep := func(image string) map[string]any {
		return map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": "web", "resourceVersion": "1"},
			"spec": map[string]any{
				"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
					"spec":     map[string]any{"containers": []any{map[string]any{"name": "c", "image": image}}},
				},
			},
		}
	}
	if o, err := st.Get("deploy", "default", "web"); o != nil || err != nil {
		t.Fatalf("before: %v %v", o, err)
	}
	if _, err := st.Apply(dep("a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "status", func() bool {
		o, _ := st.Get("deployments", "default", "web")
		n, _, _ := unstructured.NestedInt64(o, "status", "readyReplicas")
		return n == 1
	})
	out, err := st.Apply(dep("b"))
	if err != nil {
		t.Fatal(err)
	}
	if g, _, _ := unstructured.NestedInt64(out, "metadata", "generation"); g != 2 {
		t.Errorf("generation %d after a replace, want 2", g)
	}
	if n, _, _ := unstructured.NestedInt64(out, "status", "readyReplicas"); n != 1 {
		t.Errorf("the replace dropped the status: %v", out["status"])
	}
	if _, err := st.Apply(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"}}); err == nil {
		t.Error("a Pod was applied")
	}
	if _, err := st.Get("pods", "default", "p"); err == nil {
		t.Error("Get of an unknown kind did not fail")
	}
}
