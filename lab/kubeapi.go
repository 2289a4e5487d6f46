package lab

import (
	"crypto/x509"
	"net"
	"net/http"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/internal/kubesim"
)

// The simulated Kubernetes API on every server's :6443 is package
// internal/kubesim, shared with the playbook test kit (builtins/k3stest):
// one store per lab (Lab.kube), served by each server's supervisor while
// its K3s runs. This file is the lab's side of it.

// NeverReadyAnnotation is the fault annotation: "true" on a Deployment,
// DaemonSet or StatefulSet keeps its rollout from completing
// (lab/README.md "Kubernetes API").
const NeverReadyAnnotation = kubesim.NeverReadyAnnotation

// kubeHost is the lab as the API's host.
type kubeHost struct{ l *Lab }

// Agents counts the lab's agents: DaemonSet pods run there. Servers count
// as disable-agent servers, as the real engine's are (no kubelet, no node
// object).
func (h kubeHost) Agents() int64 {
	var n int64
	for _, nd := range h.l.nodes {
		if !nd.isServer() {
			n++
		}
	}
	return n
}

// Done is closed when the lab closes.
func (h kubeHost) Done() <-chan struct{} { return h.l.ctx.Done() }

// installKubeAPI adds the API routes to a supervisor's mux.
func installKubeAPI(mux *http.ServeMux, s *supervisor) {
	h := s.n.lab.kube.Handler(s)
	for _, p := range kubesim.Routes {
		mux.Handle(p, h)
	}
}

// authenticate is the API's client-certificate authentication against
// the client CA the process loaded at start.
func (s *supervisor) authenticate(r *http.Request) (kubesim.User, bool) {
	return kubesim.Authenticate(r, s.clientCAs)
}

// The supervisor as a kubesim.Server.

// Address is the server's <ip>:6443.
func (s *supervisor) Address() string { return net.JoinHostPort(s.n.ip, "6443") }

// RootCA is SD/tls/server-ca.crt as the process read it at start.
func (s *supervisor) RootCA() []byte { return s.cas[k3s.PathServerCA] }

// ClientCAs is SD/tls/client-ca.crt as the process loaded it at start.
func (s *supervisor) ClientCAs() *x509.CertPool { return s.clientCAs }

// Ready reports that the K3s start completed.
func (s *supervisor) Ready() bool { return s.ready.Load() }

// Stopped is closed when the process's K3s stops.
func (s *supervisor) Stopped() <-chan struct{} { return s.kubeStop }
