package lock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// EtcdClientFiles reads a K3s server's own etcd client certificate, key
// and etcd server CA bundle from its disk: DATA_DIR/server/tls/etcd/
// client.crt and .key (or server-client.crt and .key) and server-ca.crt.
// It returns ErrNoEtcd when the node has none (no embedded etcd).
func EtcdClientFiles(ctx context.Context, ex transport.Executor, n *inventory.Node) (cert, key, ca []byte, err error) {
	dir := strings.TrimSuffix(n.K3s.DataDir, "/") + "/server/tls/etcd/"
	var errs []error
	read := func(name string) []byte {
		b, err := ex.ReadFile(ctx, dir+name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		return b
	}
	cert, key = read("client.crt"), read("client.key")
	if len(cert) == 0 || len(key) == 0 {
		cert, key = read("server-client.crt"), read("server-client.key")
	}
	ca = read("server-ca.crt")
	if len(errs) > 0 {
		return nil, nil, nil, fmt.Errorf("read the etcd client certificate of %s: %w", n.Name, errors.Join(errs...))
	}
	if len(cert) == 0 || len(key) == 0 || len(ca) == 0 {
		return nil, nil, nil, fmt.Errorf("%s has no etcd client certificate (looked for %sclient.crt/.key, %sserver-client.crt/.key and %sserver-ca.crt): %w", n.Name, dir, dir, dir, ErrNoEtcd)
	}
	return cert, key, ca, nil
}

// EtcdEndpoint is one server's etcd as caretaker reaches it: dialed from
// the node through its SSH connection, with that node's own client
// certificate.
type EtcdEndpoint struct {
	Node *inventory.Node
	Exec transport.Executor
	// Addr is etcd's client address as seen from the node (the inventory's
	// etcd_endpoint, e.g. 127.0.0.1:2379).
	Addr string
	TLS  *tls.Config
}

// NewEtcdEndpoint prepares the endpoint of server n from its files.
func NewEtcdEndpoint(ctx context.Context, ex transport.Executor, n *inventory.Node) (*EtcdEndpoint, error) {
	cert, key, ca, err := EtcdClientFiles(ctx, ex, n)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(n.K3s.EtcdEndpoint)
	if err != nil {
		return nil, fmt.Errorf("etcd endpoint %q of node %s: want host:port (set etcd_endpoint in the inventory): %w", n.K3s.EtcdEndpoint, n.Name, errspkg.ErrBadInput)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate of node %s: %w", n.Name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("etcd CA bundle of node %s holds no certificate", n.Name)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	return &EtcdEndpoint{Node: n, Exec: ex, Addr: n.K3s.EtcdEndpoint, TLS: cfg}, nil
}

// dial opens a TLS connection to the endpoint from its node.
func (ep *EtcdEndpoint) dial(ctx context.Context) (net.Conn, error) {
	raw, err := ep.Exec.Dial(ctx, "tcp", ep.Addr)
	if err != nil {
		return nil, fmt.Errorf("etcd at %s is not reachable from node %s (is K3s running there? check etcd_endpoint in the inventory): %w", ep.Addr, ep.Node.Name, err)
	}
	tc := tls.Client(raw, ep.TLS.Clone())
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("etcd at %s (reached from node %s): TLS handshake failed (the node's etcd client certificate or CA does not match etcd's): %w", ep.Addr, ep.Node.Name, err)
	}
	return tc, nil
}

// epHost is the made-up host name of endpoint i in the client's endpoint
// list; the dialer maps it back to the endpoint (nothing resolves it).
func epHost(i int) string { return "caretaker-etcd-" + strconv.Itoa(i) + ".invalid:2379" }

// DialEtcdCluster returns an etcd client over several servers' etcd
// members at once, each reached through its own node and certificate, so
// that the client keeps working while one of them restarts (a CA rotation
// restarts every server). TLS is done per connection by the dialer (each
// member has its own serving certificate and CA during a rotation), gRPC
// itself runs over it. At least one endpoint must answer a read before it
// returns; the caller closes the client.
func DialEtcdCluster(ctx context.Context, eps []*EtcdEndpoint) (*clientv3.Client, error) {
	if len(eps) == 0 {
		return nil, fmt.Errorf("no etcd endpoint to dial: %w", errspkg.ErrBadInput)
	}
	byHost := map[string]*EtcdEndpoint{}
	var urls []string
	for i, ep := range eps {
		byHost[epHost(i)] = ep
		urls = append(urls, "http://"+epHost(i))
	}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		ep, ok := byHost[addr]
		if !ok {
			return nil, fmt.Errorf("etcd client: unknown endpoint %s", addr)
		}
		return ep.dial(ctx)
	}
	// One handshake first, per endpoint: gRPC reports failed connections
	// only as a timeout; this names the cause.
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, etcdProbeTimeout)
			defer cancel()
			c, err := ep.dial(pctx)
			if err != nil {
				errs[i] = err
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed == len(eps) {
		return nil, fmt.Errorf("reach the cluster's etcd: %w", errors.Join(errs...))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   urls,
		DialTimeout: etcdProbeTimeout,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialer), grpc.WithTransportCredentials(insecure.NewCredentials())},
		Logger:      zap.NewNop(),
		// Keep the client alive beyond ctx (a step's context), as the
		// cluster lock holds it for a whole run.
		Context: context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, etcdProbeTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "/caretaker-probe", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the cluster's etcd does not answer through %s: %w", epNames(eps), err)
	}
	return cli, nil
}

func epNames(eps []*EtcdEndpoint) string {
	var names []string
	for _, ep := range eps {
		names = append(names, ep.Node.Name+" ("+ep.Addr+")")
	}
	return strings.Join(names, ", ")
}
