package k3stest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/version"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/internal/kubesim"
)

// supervisor is a running server's K3s supervisor on its :6443: /cacerts,
// /readyz, /ping, /version and the Kubernetes API (internal/kubesim, the
// lab's simulated API, over the cluster's store). It listens on a random
// loopback port, which the executors' Dial to the server's supervisor
// endpoint reaches (a loopback connection rather than net.Pipe: both ends
// of a TLS connection send close_notify when they close, which on an
// unbuffered pipe blocks each for 5 s). One per start of a server's K3s;
// stop ends it. It implements kubesim.Server.
type supervisor struct {
	addr      string
	version   k3s.Version
	cacerts   []byte         // SD/tls/server-ca.crt at start: /cacerts, the controller manager's root CA
	clientCAs *x509.CertPool // SD/tls/client-ca.crt at start: the API's authentication
	ln        net.Listener
	srv       *http.Server
	stopped   chan struct{}
	stopOnce  sync.Once
}

// startSupervisor serves a server whose start completed: TLS with its
// serving certificate, client certificates requested but verified per
// request (kubesim.Authenticate), as K3s's dynamiclistener does.
func startSupervisor(sn *simNode, cert tls.Certificate, cacerts, clientCA []byte, store *kubesim.Store) (*supervisor, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	s := &supervisor{addr: sn.n.K3s.SupervisorEndpoint, version: sn.version, cacerts: cacerts, clientCAs: x509.NewCertPool(),
		ln: ln, stopped: make(chan struct{})}
	s.clientCAs.AppendCertsFromPEM(clientCA)
	mux := http.NewServeMux()
	mux.HandleFunc("/cacerts", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(s.cacerts)))
		_, _ = w.Write(s.cacerts)
	})
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }
	mux.HandleFunc("/readyz", ok)
	mux.HandleFunc("/ping", ok)
	mux.HandleFunc("/version", s.handleVersion)
	auth := sn.auth
	mux.HandleFunc("/v1-k3s/encrypt/status", func(w http.ResponseWriter, r *http.Request) { serveEncryptStatus(w, r, auth) })
	api := store.Handler(s)
	for _, p := range kubesim.Routes {
		mux.Handle(p, api)
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() { _ = s.srv.Serve(tls.NewListener(s.ln, tlsConf)) }()
	store.ServerReady(s)
	return s, nil
}

// serveEncryptStatus is a server's /v1-k3s/encrypt/status as far as its
// authentication goes: basic auth checked against the passwd file the
// server read at its start (401 for a wrong password, 403 without the
// server role).
func serveEncryptStatus(w http.ResponseWriter, r *http.Request, auth map[string]string) {
	user, pass, ok := r.BasicAuth()
	want, known := auth[user]
	switch {
	case !ok:
		http.Error(w, "forbidden", http.StatusForbidden)
	case !known || want != pass:
		http.Error(w, "not authorized", http.StatusUnauthorized)
	case user != "server":
		http.Error(w, "forbidden", http.StatusForbidden)
	default:
		_, _ = io.WriteString(w, "{}")
	}
}

// handleVersion is the API's GET /version: 401 without a client
// certificate of the server's client CA, else the version info.
func (s *supervisor) handleVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if _, ok := kubesim.Authenticate(r, s.clientCAs); !ok {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
		return
	}
	v := s.version
	_ = json.NewEncoder(w).Encode(version.Info{Major: strconv.Itoa(v.Major), Minor: strconv.Itoa(v.Minor), GitVersion: v.String(),
		GitCommit: "abcdef12", GitTreeState: "clean", GoVersion: "go1.22.12", Compiler: "gc", Platform: "linux/amd64"})
}

// dial is a new connection to the supervisor.
func (s *supervisor) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.ln.Addr().String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.addr, err)
	}
	return c, nil
}

// stop ends the supervisor as its K3s stops: new connections are
// refused, watches end, the store's controller manager hands its lease
// over, open connections are closed.
func (s *supervisor) stop(store *kubesim.Store) {
	s.stopOnce.Do(func() {
		_ = s.ln.Close()
		close(s.stopped)
		store.ServerStopped(s)
		_ = s.srv.Close()
	})
}

// Address is the server's supervisor endpoint (ip:6443).
func (s *supervisor) Address() string { return s.addr }

// RootCA is SD/tls/server-ca.crt as the server read it at start.
func (s *supervisor) RootCA() []byte { return s.cacerts }

// ClientCAs is SD/tls/client-ca.crt as the server loaded it at start.
func (s *supervisor) ClientCAs() *x509.CertPool { return s.clientCAs }

// Ready: the fake's starts complete at once.
func (s *supervisor) Ready() bool { return true }

// Stopped is closed when the server's K3s stops.
func (s *supervisor) Stopped() <-chan struct{} { return s.stopped }
