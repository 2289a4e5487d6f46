// Package k8sops is caretaker's Kubernetes API operations as typed Go
// functions, for the work around a CA rotation: reading and patching
// objects, restarting workloads in waves and waiting for their rollout,
// finding the trust bundles (webhook configurations, APIServices, CRD
// conversion webhooks, service-account token Secrets, kubeconfigs) that
// still trust only the previous cluster root, and refreshing them.
//
// Every call reaches the API through one server's SSH connection to its
// own supervisor port (:6443), as the cluster admin with the server's own
// admin client certificate (SD/tls/client-admin.*), held in memory only.
// Check mode is decided the k3sops way: every change goes through
// Run.Wet, and undo actions are recorded through Run.Undo before the
// change they protect.
//
// The package imports no Starlark; the `k8s` module (package builtins) is
// a thin layer over it.
package k8sops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// requestTimeout bounds one API request (a rollout wait polls with many).
const requestTimeout = 30 * time.Second

// Client is a connection to a cluster's Kubernetes API as its admin,
// through one server.
type Client struct {
	// Server is the target the client goes through (its credentials, its
	// SSH connection, its :6443).
	Server *k3sops.Target
	// Dynamic is the API client every operation uses.
	Dynamic dynamic.Interface
	// ServerCA is the server CA bundle on the server's disk: what the API's
	// serving certificate chains to now.
	ServerCA []byte
	mapper   meta.RESTMapper
	config   *rest.Config
}

// Connect reads the admin credentials of server c (read-only, also in
// check mode) and returns a client that reaches the API through c's SSH
// connection to its supervisor endpoint.
func Connect(ctx context.Context, c *k3sops.Target) (*Client, error) {
	creds, err := k3sops.ReadAdminCredentials(ctx, c)
	if err != nil {
		return nil, err
	}
	rc := RestConfig(creds, c.Exec, c.Node.K3s.SupervisorEndpoint)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: API client: %w", c.Op, c.Node.Name, err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: API discovery client: %w", c.Op, c.Node.Name, err)
	}
	cached := memory.NewMemCacheClient(disc)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil)
	return &Client{Server: c, Dynamic: dyn, ServerCA: creds.CA, mapper: mapper, config: rc}, nil
}

// ConnectAny connects through the first server of the run that answers,
// preferring prefer (a server node of the run, or nil).
func ConnectAny(ctx context.Context, run k3sops.Run, prefer *inventory.Node, op string) (*Client, error) {
	var tried []string
	for _, n := range serversFirst(run.Nodes(), prefer) {
		t, err := k3sops.NewTarget(ctx, run, n, nil, op)
		if err == nil {
			var cl *Client
			if cl, err = Connect(ctx, t); err == nil {
				return cl, nil
			}
		}
		tried = append(tried, err.Error())
	}
	if len(tried) == 0 {
		return nil, fmt.Errorf("%s: the run has no server: the Kubernetes API is reached through a server", op)
	}
	return nil, fmt.Errorf("%s: no server of the run gave access to the Kubernetes API: %s", op, strings.Join(tried, "; "))
}

// serversFirst is prefer (when it is a server) followed by the other
// servers of nodes.
func serversFirst(nodes []*inventory.Node, prefer *inventory.Node) []*inventory.Node {
	var out []*inventory.Node
	if prefer != nil && prefer.Role == inventory.RoleServer {
		out = append(out, prefer)
	}
	for _, n := range nodes {
		if n.Role == inventory.RoleServer && n != prefer {
			out = append(out, n)
		}
	}
	return out
}

// RestConfig is a client configuration for the API of one server as its
// admin: TLS to https://<endpoint> verified against the server CA bundle,
// every connection dialed through ex (the server's SSH connection) to
// endpoint as the server sees it.
func RestConfig(creds *k3sops.AdminCredentials, ex transport.Executor, endpoint string) *rest.Config {
	rc := &rest.Config{
		Host:    "https://" + endpoint,
		Timeout: requestTimeout,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   creds.CA,
			CertData: creds.Cert,
			KeyData:  creds.Key,
		},
		UserAgent: "caretaker",
		QPS:       50,
		Burst:     100,
	}
	rc.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return ex.Dial(ctx, network, endpoint)
	}
	return rc
}

// Kind is a resolved kind: its resource and whether it is namespaced.
type Kind struct {
	GVR        schema.GroupVersionResource
	Kind       string
	Namespaced bool
}

// String is the kind as kubectl names it ("deployments.apps").
func (k Kind) String() string {
	if k.GVR.Group == "" {
		return k.GVR.Resource
	}
	return k.GVR.Resource + "." + k.GVR.Group
}

// ResolveKind resolves a kind as kubectl does: a resource name, singular
// or plural ("deployment", "deployments"), a short name ("deploy"), a
// kind ("Deployment") or a qualified name ("apiservices.apiregistration.k8s.io",
// "deployments.v1.apps").
func (cl *Client) ResolveKind(kind string) (Kind, error) {
	k := strings.TrimSpace(kind)
	if k == "" {
		return Kind{}, errors.New("no kind given (e.g. \"deployments\", \"secrets\", \"validatingwebhookconfigurations\")")
	}
	gvr, gr := schema.ParseResourceArg(strings.ToLower(k))
	var err error
	var full schema.GroupVersionResource
	if gvr != nil {
		full, err = cl.mapper.ResourceFor(*gvr)
	}
	if gvr == nil || err != nil {
		full, err = cl.mapper.ResourceFor(gr.WithVersion(""))
	}
	if err != nil {
		return Kind{}, fmt.Errorf("unknown kind %q: the API server serves no such resource (`k3s kubectl api-resources` lists them): %w", kind, err)
	}
	gvk, err := cl.mapper.KindFor(full)
	if err != nil {
		return Kind{}, fmt.Errorf("kind %q: %w", kind, err)
	}
	m, err := cl.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return Kind{}, fmt.Errorf("kind %q: %w", kind, err)
	}
	return Kind{GVR: full, Kind: gvk.Kind, Namespaced: m.Scope.Name() == meta.RESTScopeNameNamespace}, nil
}

// resource is the dynamic client of a kind in a namespace ("" for
// cluster-scoped kinds or every namespace).
func (cl *Client) resource(k Kind, namespace string) dynamic.ResourceInterface {
	r := cl.Dynamic.Resource(k.GVR)
	if k.Namespaced && namespace != "" {
		return r.Namespace(namespace)
	}
	return r
}

// errorf builds an error naming the operation and the server used.
func (cl *Client) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: via %s: "+format, append([]any{cl.Server.Op, cl.Server.Node.Name}, args...)...)
}
