// Package kubesim is a simulated Kubernetes API for the simulators of K3s
// in this module: the lab (package lab, every server's :6443) and the
// playbook test kit (builtins/k3stest, the fake cluster's supervisors).
// One Store per cluster holds the objects and runs the simulated
// controller manager; each server serves them with Store.Handler.
//
// What the API serves and how (resources, verbs, patches, watches,
// errors, the controllers, the never-ready fault) is described in
// lab/README.md "Kubernetes API (simulator)".
//
// The package knows nothing of its hosts: what it needs from the cluster
// is Host, and from each server Server. It may import k8s.io and
// internal/k3s, never lab, runner or builtins.
package kubesim

import (
	"crypto/x509"
	"net/http"
	"slices"
)

// Host is what a Store needs from the cluster it simulates the API of.
type Host interface {
	// Agents is the number of nodes DaemonSet pods are scheduled to (the
	// cluster's agents; servers count as disable-agent servers, as the
	// lab's real engine runs them).
	Agents() int64
	// Done is closed when the cluster goes away: the simulated
	// controllers stop reacting. nil: never.
	Done() <-chan struct{}
}

// Server is one server's apiserver as the Store sees it: what its K3s
// loaded at start.
type Server interface {
	// Address is the server's host:port as discovery advertises it
	// (ServerAddressByClientCIDRs).
	Address() string
	// RootCA is SD/tls/server-ca.crt as the server's K3s read it at start:
	// the controller manager's --root-ca-file while this server holds the
	// lease.
	RootCA() []byte
	// ClientCAs is SD/tls/client-ca.crt as the server loaded it at start:
	// every request's client certificate must chain to it (Authenticate).
	ClientCAs() *x509.CertPool
	// Ready reports that the server's start completed; before, the API
	// answers 503.
	Ready() bool
	// Stopped is closed when the server's K3s stops: its watches end.
	Stopped() <-chan struct{}
}

// Handler is the API as server serves it over the store: discovery and
// the resources, at /api, /api/... , /apis and /apis/... (mount it on
// those four patterns). Every request is authenticated with the server's
// client CA (401 without a valid client certificate, 403 for anyone but
// system:masters).
func (s *Store) Handler(server Server) http.Handler {
	return &kubeHandler{sup: server, store: s}
}

// Routes are the mux patterns Handler answers.
var Routes = []string{"/api", "/api/", "/apis", "/apis/"}

// User is who a client certificate authenticates as: its CN, and its O
// values plus system:authenticated as groups.
type User struct {
	Name   string
	Groups []string
}

// IsAdmin reports membership of system:masters (the simulated API has no
// RBAC: only cluster admins may use it).
func (u User) IsAdmin() bool { return slices.Contains(u.Groups, "system:masters") }

// Authenticate is kube-apiserver's x509 authenticator: the request's
// client certificate must chain to clientCAs (the client CA bundle the
// server loaded at start). K3s's :6443 requests but does not verify
// client certificates in the TLS handshake (tls.RequestClientCert), so a
// certificate of another CA gets an HTTP 401, not a handshake failure.
func Authenticate(r *http.Request, clientCAs *x509.CertPool) (User, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || clientCAs == nil {
		return User{}, false
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: clientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		return User{}, false
	}
	groups := append(slices.Clone(leaf.Subject.Organization), "system:authenticated")
	return User{Name: leaf.Subject.CommonName, Groups: groups}, true
}

// serverStopped reports whether sv's K3s stopped.
func serverStopped(sv Server) bool {
	select {
	case <-sv.Stopped():
		return true
	default:
		return false
	}
}
