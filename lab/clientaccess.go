package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// clientInfo is the lab's pkg/clientaccess Info: where a node reaches a
// supervisor, the CA bundle it trusts and the basic-auth credentials.
type clientInfo struct {
	baseURL  string
	caCerts  []byte
	caHash   string
	username string
	password string
	source   string // node address requests come from
}

// validateOptions mirror clientaccess.WithUser and WithCACertificate.
type validateOptions struct {
	user string
	// localCA is the path (host) of SD/tls/server-ca.crt, trusted instead
	// of fetching /cacerts when its hash matches the token (post-fix
	// 244bfd0c3, k3s-ca-rotation.md §1 "Client side").
	localCA string
	// warn receives K3s's warnings.
	warn func(format string, args ...any)
	// source is the address of the node making the requests.
	source string
}

// parseAndValidateToken is clientaccess.ParseAndValidateToken
// (k3s-ca-rotation.md §2 "TLS trust", §3 "Tokens after rotation"): parse
// the token, optionally trust the local CA, else GET /cacerts unverified and
// check it serves a certificate it signed, then compare the token's CA hash.
func parseAndValidateToken(ctx context.Context, server, token string, o validateOptions) (*clientInfo, error) {
	t, err := k3s.ParseToken(token)
	if err != nil {
		return nil, err
	}
	info := &clientInfo{caHash: t.CAHash, username: t.Username, password: t.Password, source: o.source}
	if t.Bootstrap != "" {
		return nil, errors.New("bootstrap tokens are not simulated by the lab")
	}
	if o.user != "" {
		info.username = o.user
	}
	if o.localCA != "" {
		if b, err := os.ReadFile(o.localCA); err == nil {
			digest, _ := k3s.HashCA(b)
			if info.caHash == "" || info.caHash == digest {
				info.caHash, info.caCerts = digest, b
			}
		}
	}
	u, err := url.Parse(server)
	if err != nil {
		//nolint:staticcheck // K3s's own message, word for word
		return nil, fmt.Errorf("Invalid server url, failed to parse: %s: %w", server, err)
	}
	if u.Scheme != "https" {
		return nil, errors.New("only https:// URLs are supported, invalid scheme: " + server)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if len(info.caCerts) == 0 {
		cacerts, err := getCACerts(ctx, *u, o.source)
		if err != nil {
			return nil, err
		}
		info.caCerts = cacerts
	}
	info.baseURL = u.String()
	switch {
	case info.caHash == "" && len(info.caCerts) > 0:
		if o.warn != nil {
			o.warn("Cluster CA certificate is not trusted by the host CA bundle, but the token does not include a CA hash. Use the full token from the server's node-token file to enable Cluster CA validation.")
		}
	case info.caHash != "":
		if got, _ := k3s.HashCA(info.caCerts); got != info.caHash {
			return nil, fmt.Errorf("token CA hash does not match the Cluster CA certificate hash: %s != %s", info.caHash, got)
		}
	}
	return info, nil
}

// getCACerts fetches /cacerts without verification, then checks that the
// server's certificate verifies against what it served.
func getCACerts(ctx context.Context, u url.URL, source string) ([]byte, error) {
	u.Path = "/cacerts"
	cacerts, err := httpGet(ctx, clientFor(nil, 10*time.Second, source), u.String(), "", "")
	if err != nil {
		return nil, fmt.Errorf("failed to get CA certs: %w", err)
	}
	if _, err := httpGet(ctx, clientFor(cacerts, 10*time.Second, source), u.String(), "", ""); err != nil {
		return nil, fmt.Errorf("CA cert validation failed: %w", err)
	}
	return cacerts, nil
}

// get fetches path from the supervisor with the info's trust and creds.
func (i *clientInfo) get(ctx context.Context, path string, timeout time.Duration) ([]byte, error) {
	u, err := url.Parse(i.baseURL)
	if err != nil {
		return nil, err
	}
	u.Path = path
	return httpGet(ctx, clientFor(i.caCerts, timeout, i.source), u.String(), i.username, i.password)
}

// put sends body to path with PUT.
func (i *clientInfo) put(ctx context.Context, pathAndQuery string, body []byte) error {
	u, err := url.Parse(i.baseURL + pathAndQuery)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.SetBasicAuth(i.username, i.password)
	resp, err := clientFor(i.caCerts, 30*time.Second, i.source).Do(req)
	if err != nil {
		return err
	}
	_, err = readBody(resp)
	return err
}

func httpGet(ctx context.Context, c *http.Client, u, user, pass string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	return readBody(resp)
}

// readBody returns the body of a 2xx answer; otherwise the message of a
// Kubernetes Status body, or "<url>: <status>" (clientaccess readBody).
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var st struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &st) == nil && st.Kind == "Status" {
			return nil, errors.New(st.Message)
		}
		return nil, fmt.Errorf("%s: %s", resp.Request.URL, resp.Status)
	}
	return b, nil
}

// localURL rewrites a loopback host in u to the node's own address: on a
// lab node 127.0.0.1:6443 is that node's supervisor.
func (n *node) localURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	host, port := p.Hostname(), p.Port()
	if host == "localhost" || (net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback() && !strings.HasPrefix(host, n.lab.opts.Subnet+".")) {
		if port == "" {
			port = "6443"
		}
		p.Host = net.JoinHostPort(n.ip, port)
	}
	return p.String()
}

// localAddr maps a host:port a node dials to where the lab serves it: the
// node's loopback (127.0.0.1, ::1, localhost; not the lab's own subnet) is
// the node's own address, where its supervisor listens. The in-process SSH
// servers dial tunnels through it, so that a tunnel to 127.0.0.1:6443
// reaches that node's :6443 as on a real machine.
func (n *node) localAddr(hostPort string) string {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return hostPort
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback() && !strings.HasPrefix(host, n.lab.opts.Subnet+".")) {
		return net.JoinHostPort(n.ip, port)
	}
	return hostPort
}
