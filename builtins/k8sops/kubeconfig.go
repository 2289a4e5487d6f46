package k8sops

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner/transport"
)

// AdminKubeconfig is a kubeconfig with one cluster, user and context, all
// named name, for the admin credentials of a server.
func AdminKubeconfig(name string, c *k3sops.AdminCredentials) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.CA}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: c.Cert, ClientKeyData: c.Key}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return cfg
}

// Proof is what a request with a kubeconfig showed.
type Proof struct {
	// Version is the API server's version.
	Version string
	// How says the way the request went: "from this machine (URL)", or
	// through SSH when the URL is not reachable from here.
	How string
	// Direct is the error of the direct request, when it failed.
	Direct error
}

// ProveKubeconfig asks the API server for its version (GET /version) with
// the current context of cfg: directly from this machine, else through
// ex (a server's SSH connection) to endpoint (that server's :6443 as it
// sees it). It fails when neither works.
func ProveKubeconfig(ctx context.Context, cfg *clientcmdapi.Config, ex transport.Executor, endpoint string) (*Proof, error) {
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		return nil, err
	}
	rc.Timeout = 15 * time.Second
	v, direct := serverVersion(ctx, rc)
	if direct == nil {
		return &Proof{Version: v, How: "from this machine (" + rc.Host + ")"}, nil
	}
	if ex == nil {
		return nil, fmt.Errorf("GET %s/version: %w", rc.Host, direct)
	}
	tunnel := rest.CopyConfig(rc)
	tunnel.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return ex.Dial(ctx, network, endpoint)
	}
	v, viaSSH := serverVersion(ctx, tunnel)
	if viaSSH == nil {
		return &Proof{Version: v, How: "through SSH only: from this machine " + rc.Host + " failed (" + direct.Error() + ")", Direct: direct}, nil
	}
	return nil, fmt.Errorf("GET %s/version: %w; through SSH: %w", rc.Host, direct, viaSSH)
}

// serverVersion is GET /version with rc.
func serverVersion(ctx context.Context, rc *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return "", err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", err
	}
	var info version.Info
	if err := json.Unmarshal(body, &info); err != nil || info.GitVersion == "" {
		return "", fmt.Errorf("GET /version answered no version: %q", body)
	}
	return info.GitVersion, nil
}
