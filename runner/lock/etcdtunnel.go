package lock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport"
)

// etcdProbeTimeout bounds the first request DialEtcd makes to check that
// etcd answers.
const etcdProbeTimeout = 15 * time.Second

// DialEtcd returns an etcd v3 client for the etcd at endpoint ("host:port" as
// seen from the node, e.g. "127.0.0.1:2379") whose connections are opened
// by ex.Dial, so they leave from the node through its SSH connection
// (direct-tcpip), and are secured with client TLS: certPEM/keyPEM are the
// client certificate and key (a K3s server's SD/tls/etcd/client.crt and
// .key), caPEM the CA bundle that signed etcd's serving certificate
// (SD/tls/etcd/server-ca.crt).
//
// Before returning it opens one connection and completes a TLS handshake
// and a read, so an unreachable etcd or a certificate problem is reported
// here with the node and endpoint named. The caller closes the client; it
// does not follow ctx after DialEtcd returned. Endpoint auto-sync is off:
// the client only ever talks to endpoint.
func DialEtcd(ctx context.Context, ex transport.Executor, endpoint string, certPEM, keyPEM, caPEM []byte) (*clientv3.Client, error) {
	node := ex.Name()
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, fmt.Errorf("etcd endpoint %q of node %s: want host:port (set etcd_endpoint in the inventory): %w", endpoint, node, errs.ErrBadInput)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate of node %s: %w", node, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("etcd CA bundle of node %s holds no certificate", node)
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}

	// One explicit handshake first: gRPC reports failed connections only
	// as a timeout, this names the cause.
	if err := probeEtcdTLS(ctx, ex, endpoint, tlsCfg); err != nil {
		return nil, err
	}

	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return ex.Dial(ctx, "tcp", addr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + endpoint},
		TLS:         tlsCfg,
		DialTimeout: etcdProbeTimeout,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialer)},
		Logger:      zap.NewNop(),
		// Keep the client alive beyond ctx (a step's context), as the
		// cluster lock holds it for a whole run.
		Context: context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s via node %s: %w", endpoint, node, err)
	}
	pctx, cancel := context.WithTimeout(ctx, etcdProbeTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "/caretaker-probe", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("etcd at %s (reached from node %s) does not answer: %w", endpoint, node, err)
	}
	return cli, nil
}

// probeEtcdTLS dials endpoint from the node and completes a TLS handshake.
func probeEtcdTLS(ctx context.Context, ex transport.Executor, endpoint string, cfg *tls.Config) error {
	node := ex.Name()
	pctx, cancel := context.WithTimeout(ctx, etcdProbeTimeout)
	defer cancel()
	conn, err := ex.Dial(pctx, "tcp", endpoint)
	if err != nil {
		return fmt.Errorf("etcd at %s is not reachable from node %s (is etcd running there? check etcd_endpoint in the inventory): %w", endpoint, node, err)
	}
	defer conn.Close()
	c := cfg.Clone()
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	if err := tc.HandshakeContext(pctx); err != nil {
		return fmt.Errorf("etcd at %s (reached from node %s): TLS handshake failed (the node's etcd client certificate or CA does not match etcd's): %w", endpoint, node, err)
	}
	return nil
}
