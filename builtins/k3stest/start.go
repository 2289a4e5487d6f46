package k3stest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// start runs K3s's start-up on the node (k3s-ca-rotation.md §2, §7).
func (c *Cluster) start(sn *simNode) error {
	c.stopSupervisor(sn)
	sn.restarts++
	sn.state = "activating"
	fail := func(format string, args ...any) error {
		sn.state = "failed"
		sn.log("level=fatal msg=\""+format+"\"", args...)
		sn.journal = append(sn.journal, fmt.Sprintf("systemd[1]: %s.service: Failed with result 'exit-code'.", sn.n.K3s.Service))
		return fmt.Errorf(format, args...)
	}
	if sn.fault == "fail-start" {
		return fail("injected fault fail-start: k3s exits during start-up")
	}
	if sn.fault == "hang-start" {
		// As a K3s that never reports ready under the installer's
		// Type=notify unit: activating until stopped.
		sn.log(`level=error msg="injected fault hang-start: Failed to validate connection to cluster at https://127.0.0.1:6443"`)
		return nil
	}
	eff, err := k3s.Effective(sn.sources())
	if err != nil {
		return fail("config: %v", err)
	}
	get := func(k string) string { return strings.TrimSpace(eff[k].Value) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := k3s.LeafOptions{NodeName: sn.n.Name, NodeIPs: []net.IP{net.ParseIP(sn.ip)}, Now: time.Now(), RenewDays: k3s.RenewDays(sn.version)}
	token := sn.startToken(get)
	if sn.n.Role == inventory.RoleAgent {
		opts.Agent = true
		return c.startAgent(sn, get("server"), token, opts, fail)
	}

	// Servers: the token must open the datastore.
	pass, err := k3s.NormalizeToken(token)
	if err != nil {
		return fail("starting kubernetes: preparing server: %v", err)
	}
	if pass != c.password {
		return fail("starting kubernetes: preparing server: bootstrap data already found and encrypted with different token")
	}
	// Where the bootstrap data comes from (§2).
	data, from := c.remoteBootstrap(sn, get, pass)
	if data == nil {
		if data, err = c.Datastore(ctx); err != nil {
			return fail("read the datastore: %v", err)
		}
	}
	updated := sn.reconcileBootstrap(data)
	sn.log("level=info msg=\"Successfully reconciled with %s (%d files updated)\"", from, len(updated))
	cas := sn.caSet()
	hash, err := k3s.HashCA(cas[k3s.PathServerCA])
	if err != nil {
		return fail("server CA: %v", err)
	}
	sn.ex.SetFile(sn.sd()+"/token", []byte(k3s.FormatToken(hash, "server", pass)+"\n"), 0o600)
	sn.auth = map[string]string{}
	if entries, err := k3s.ParsePasswd(sn.file(sn.sd() + "/" + k3s.PathPasswd)); err == nil {
		for _, e := range entries {
			sn.auth[e.User] = e.Password
		}
	}
	return c.finishStart(sn, cas, opts, nil)
}

// remoteBootstrap is the bootstrap data a joining server gets from the
// server it joins (§2), and where it came from: nil data (from the local
// datastore) unless the peer is up, its CA matches the token's hash and it
// accepts the token, and the peer serves it from its disk (nil too when
// it serves the datastore's: the caller reads it).
func (c *Cluster) remoteBootstrap(sn *simNode, get func(string) string, pass string) (k3s.BootstrapData, string) {
	from := "local datastore"
	join := get("server")
	if join == "" || get("token") == "" {
		return nil, from
	}
	peer := c.serverByURL(join)
	ok := peer != nil && peer.state == "active"
	if ok {
		if tok, err := k3s.ParseToken(get("token")); err == nil && tok.Secure() {
			h, _ := k3s.HashCA(peer.cacerts)
			ok = h == tok.CAHash
		}
	}
	if ok && peer.auth["server"] != pass {
		// The peer still runs with another token (a rotation in
		// progress): 401, and K3s reconciles with its local datastore.
		sn.log("level=warning msg=\"Unable to reconcile with remote datastore: %s/v1-k3s/server-bootstrap: 401 Unauthorized\"", join)
		ok = false
	}
	if !ok {
		return nil, from
	}
	if !c.opts.BootstrapBug && k3s.ServesBootstrapFromDatastore(peer.version) {
		return nil, "remote datastore via " + peer.n.Name
	}
	data := k3s.BootstrapData{}
	for _, bf := range k3s.BootstrapFiles {
		if b, has := peer.ex.File(peer.sd() + "/" + bf.Path); has {
			data[bf.Key] = k3s.File{Content: b}
		}
	}
	return data, "remote disk of " + peer.n.Name
}

// reconcileBootstrap writes the bootstrap files of data that differ from
// the node's disk and returns their paths.
func (sn *simNode) reconcileBootstrap(data k3s.BootstrapData) []string {
	var updated []string
	for _, bf := range k3s.BootstrapFiles {
		f, ok := data[bf.Key]
		if !ok {
			continue
		}
		p := sn.sd() + "/" + bf.Path
		if !bytes.Equal(sn.file(p), f.Content) {
			sn.ex.SetFile(p, f.Content, 0o600)
			updated = append(updated, bf.Path)
		}
	}
	return updated
}

// finishStart renews the leaf certificates and brings the service up.
func (c *Cluster) finishStart(sn *simNode, cas map[string][]byte, opts k3s.LeafOptions, extra map[string][]byte) error {
	existing := map[string][]byte{}
	for _, p := range k3s.LeafFiles(opts) {
		if b, ok := sn.ex.File(sn.dd() + "/" + p); ok && !sn.rotateLeafs {
			existing[p] = b
		}
	}
	renewed, _, err := k3s.RenewLeafCerts(cas, existing, opts)
	if err != nil {
		sn.state = "failed"
		return fmt.Errorf("renew leaf certificates: %w", err)
	}
	sn.rotateLeafs = false
	for p, b := range renewed {
		sn.ex.SetFile(sn.dd()+"/"+p, b, 0o600)
	}
	for p, b := range extra {
		sn.ex.SetFile(p, b, 0o644)
	}
	if sn.n.Role == inventory.RoleServer {
		pair, err := tls.X509KeyPair(sn.file(sn.sd()+"/tls/serving-kube-apiserver.crt"), sn.file(sn.sd()+"/tls/serving-kube-apiserver.key"))
		if err != nil {
			sn.state = "failed"
			return fmt.Errorf("serving certificate: %w", err)
		}
		sn.cacerts = sn.file(sn.sd() + "/" + k3s.PathServerCA)
		if sn.sup, err = startSupervisor(sn, pair, sn.cacerts, sn.file(sn.sd()+"/"+k3s.PathClientCA), c.kube); err != nil {
			sn.state = "failed"
			return err
		}
	}
	sn.state = "active"
	sn.log("level=info msg=\"k3s is up and running\"")
	return nil
}

// startToken is the token a node's K3s starts with: the configured token,
// else a token file's content, else (servers) SD/token, K3s's fallback.
func (sn *simNode) startToken(get func(string) string) string {
	if t := get("token"); t != "" {
		return t
	}
	if f := get("token-file"); f != "" {
		return strings.TrimSpace(string(sn.file(f)))
	}
	if sn.n.Role == inventory.RoleServer {
		return strings.TrimSpace(string(sn.file(sn.sd() + "/token")))
	}
	return ""
}

// startAgent is an agent's start-up: the server it joins must run, its
// CA must match a secure token's hash, and it must accept the token's
// password for the node user.
func (c *Cluster) startAgent(sn *simNode, server, token string, opts k3s.LeafOptions, fail func(string, ...any) error) error {
	peer := c.serverByURL(server)
	if peer == nil || peer.state != "active" {
		return fail("failed to get CA certs: %s: connection refused", server)
	}
	if tok, err := k3s.ParseToken(token); err == nil && tok.Secure() {
		h, _ := k3s.HashCA(peer.cacerts)
		if h != tok.CAHash {
			return fail("token CA hash does not match the Cluster CA certificate hash: %s != %s", tok.CAHash, h)
		}
	}
	// The server checks the agent's password against the passwd file
	// it read at its own start (the "node" user).
	if pass, err := k3s.NormalizeToken(token); err != nil || pass != peer.auth["node"] {
		return fail("Failed to validate connection to cluster at %s: token is not valid: 401 Unauthorized", server)
	}
	return c.finishStart(sn, peer.caSet(), opts, map[string][]byte{
		sn.dd() + "/agent/server-ca.crt": peer.file(peer.sd() + "/" + k3s.PathServerCA),
		sn.dd() + "/agent/client-ca.crt": peer.file(peer.sd() + "/" + k3s.PathClientCA),
	})
}
