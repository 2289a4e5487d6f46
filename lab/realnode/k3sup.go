package realnode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EnvJoin is the environment variable that, set to "serial", starts server-2..N one after the other
// instead of all at once. At once is the default: etcd admits one learner
// at a time, but K3s retries its member add ("too many learner members
// in cluster") until the previous learner is promoted, so the joins
// overlap their certificate and apiserver start-up (measured: doc.go).
const EnvJoin = "CARETAKER_REALNODE_JOIN"

// k3sReadyTimeout bounds one server's start until /readyz answers ok.
const k3sReadyTimeout = 4 * time.Minute

func serverURL(n *nodeState) string { return "https://" + n.Address + ":6443" }

// phaseConf is a server's configuration: first phase (final=false):
// server-1 cluster-init, the others server → server-1; final phase of
// init-replaced: server-1 without cluster-init, server → server-2.
func (c *Cluster) phaseConf(o Options, n *nodeState, token string, final bool) serverConf {
	sc := serverConf{addr: n.Address, token: token, source: n.Source, bootstrap: o.BootstrapBug}
	switch {
	case n.Index != 1:
		sc.serverURL = serverURL(&c.st.Nodes[0])
	case final && o.Scenario == ScenarioInitReplaced:
		sc.serverURL = serverURL(&c.st.Nodes[1])
	default:
		sc.clusterInit = true
	}
	return sc
}

// startK3s enables k3s.service everywhere, starts server-1, computes the
// secure token if asked, joins the other servers, then applies the
// scenario's final configuration to server-1 and restarts it.
func (c *Cluster) startK3s(ctx context.Context, o Options) error {
	if err := c.eachNode(func(n *nodeState) error {
		_, err := c.execOK(ctx, n.Name, "systemctl enable k3s 2>&1")
		return err
	}); err != nil {
		return err
	}
	s1 := &c.st.Nodes[0]
	if err := c.startServer(ctx, s1, "start"); err != nil {
		return err
	}
	token := o.Token
	if o.SecureToken {
		var err error
		if token, err = secureToken(filepath.Join(s1.Root, nodeServerDir), o.Token); err != nil {
			return err
		}
		for i := range c.st.Nodes {
			n := &c.st.Nodes[i]
			if _, err := writeServerFiles(n.Root, renderServer(n.Name, c.phaseConf(o, n, token, false))); err != nil {
				return fmt.Errorf("realnode: %s: %w", n.Name, err)
			}
		}
	}
	if err := c.joinServers(ctx, c.st.Nodes[1:]); err != nil {
		return err
	}
	if o.Scenario == ScenarioClusterInit && !o.SecureToken {
		return nil
	}
	// init-replaced: server-1 drops cluster-init and joins through
	// server-2 (it stays an etcd member); cluster-init with a secure
	// token: server-1 restarts with the token its config now holds.
	changed, err := writeServerFiles(s1.Root, renderServer(s1.Name, c.phaseConf(o, s1, token, true)))
	if err != nil {
		return fmt.Errorf("realnode: %s: %w", s1.Name, err)
	}
	if changed {
		if _, err := c.execOK(ctx, s1.Name, "systemctl daemon-reload"); err != nil {
			return err
		}
	}
	return c.startServer(ctx, s1, "restart")
}

// joinServers starts the given servers all at once, or one after the
// other with $CARETAKER_REALNODE_JOIN=serial.
func (c *Cluster) joinServers(ctx context.Context, nodes []nodeState) error {
	if os.Getenv(EnvJoin) == "serial" {
		for i := range nodes {
			if err := c.startServer(ctx, &nodes[i], "start"); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.startServer(ctx, &nodes[i], "start") }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// eachNode runs fn for every node concurrently.
func (c *Cluster) eachNode(fn func(n *nodeState) error) error {
	errs := make([]error, len(c.st.Nodes))
	var wg sync.WaitGroup
	for i := range c.st.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn(&c.st.Nodes[i]) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startServer runs `systemctl <verb> k3s` in the node (Type=notify: it
// returns once K3s said READY=1, or fails when the start failed) and then
// waits for /readyz.
func (c *Cluster) startServer(ctx context.Context, n *nodeState, verb string) error {
	t := time.Now()
	ctx, cancel := context.WithTimeout(ctx, k3sReadyTimeout)
	defer cancel()
	if _, err := c.execOK(ctx, n.Name, "systemctl "+verb+" k3s"); err != nil {
		return fmt.Errorf("%w\n%s", err, c.journalTail(n.Name))
	}
	if err := c.waitReadyz(ctx, n); err != nil {
		return fmt.Errorf("%w\n%s", err, c.journalTail(n.Name))
	}
	c.logf("%s: k3s %s: /readyz ok after %.1fs", n.Name, verb, time.Since(t).Seconds())
	return nil
}

// journalTail is the end of the node's k3s journal, for error messages.
func (c *Cluster) journalTail(node string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _, _, err := c.Exec(ctx, node, "journalctl -u k3s --no-pager -n 25 -o cat")
	if err != nil {
		return "(no journal: " + err.Error() + ")"
	}
	return node + " journal (last 25 lines of k3s):\n" + strings.TrimRight(out, "\n")
}

// waitReadyz polls https://<node>:6443/readyz with the admin client
// certificate until it answers 200 "ok".
func (c *Cluster) waitReadyz(ctx context.Context, n *nodeState) error {
	var last string
	err := poll(ctx, 500*time.Millisecond, func() (bool, error) {
		ok, msg := c.readyz(ctx, n)
		last = msg
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("realnode: %s: /readyz not ok within %s (last: %s): %w", n.Name, k3sReadyTimeout, last, err)
	}
	return nil
}

// Readyz asks the node's K3s API server for /readyz with the admin client
// certificate (SD/tls/client-admin.crt) and the server CA from the node's
// disk; it reports whether the answer was 200 "ok", and what it was.
func (c *Cluster) Readyz(ctx context.Context, node string) (bool, string) {
	n, err := c.st.node(node)
	if err != nil {
		return false, err.Error()
	}
	return c.readyz(ctx, n)
}

func (c *Cluster) readyz(ctx context.Context, n *nodeState) (bool, string) {
	tlsDir := filepath.Join(n.Root, nodeServerDir, "tls")
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "client-admin.crt"), filepath.Join(tlsDir, "client-admin.key"))
	if err != nil {
		return false, "no admin client certificate yet"
	}
	ca, err := os.ReadFile(filepath.Join(tlsDir, "server-ca.crt"))
	if err != nil {
		return false, "no server CA yet"
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, serverURL(n)+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	body := strings.TrimSpace(string(b))
	return resp.StatusCode == http.StatusOK && body == "ok", fmt.Sprintf("%d %s", resp.StatusCode, tailLines(body, 3))
}
