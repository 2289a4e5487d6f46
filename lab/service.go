package lab

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// fatalError ends a simulated K3s process: logged as level=fatal, the
// process exits 1 and the unit fails.
type fatalError struct{ msg string }

func (f *fatalError) Error() string { return f.msg }

func fatalf(format string, args ...any) error {
	return &fatalError{msg: fmt.Sprintf(format, args...)}
}

// runK3s is the K3s process of one start attempt up to the point where
// it tells systemd it is ready (Type=notify): the start-up delay, the
// injected faults, then a server's or an agent's start-up. With the
// hang-start fault the start never becomes ready while the fault lasts.
func (n *node) runK3s(p *k3sProc) error {
	if d := n.lab.opts.StartDelay; d > 0 && n.lab.UpDuration() > 0 {
		// Model K3s's start-up time on restarts (Options.StartDelay).
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return p.ctx.Err()
		}
	}
	if n.getFault() == FaultFailStart {
		return fatalf("lab: injected fault %s: k3s exits during start-up (clear it with: caretaker lab fault %s clear)", FaultFailStart, n.name)
	}
	var err error
	if n.isServer() {
		err = n.runServer(p)
	} else {
		err = n.runAgent(p.ctx)
	}
	if err != nil {
		return err
	}
	return n.hangWhileFaulted(p)
}

// hangWhileFaulted models a start that never becomes ready (fault
// hang-start; the real case: K3s cannot validate its own supervisor's
// certificate): an error line every few seconds until the fault is
// cleared or the unit is stopped.
func (n *node) hangWhileFaulted(p *k3sProc) error {
	const every = 5 * time.Second
	var last time.Time
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for n.getFault() == FaultHangStart {
		if time.Since(last) >= every {
			last = time.Now()
			n.logK3s("error", "Failed to validate connection to cluster at %s: CA cert validation failed: Get \"%s/cacerts\": tls: failed to verify certificate: x509: certificate signed by unknown authority", n.validateURL(), n.validateURL())
		}
		select {
		case <-poll.C:
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
	}
	return nil
}

// validateURL is the URL the node's K3s agent validates its connection
// against: the local supervisor on servers, the server URL on agents.
func (n *node) validateURL() string {
	if n.isServer() {
		return "https://127.0.0.1:6443"
	}
	if cfg, err := n.loadStartConfig(); err == nil && cfg.server != "" {
		return strings.TrimRight(cfg.server, "/")
	}
	return "https://127.0.0.1:6443"
}

func (n *node) getFault() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fault
}

// startConfig is what a K3s start derives from the node's config sources.
type startConfig struct {
	server      string // join URL
	token       string // configured token (may be empty)
	clusterInit bool
	dataDir     string // as the node sees it
	eff         map[string]k3s.Setting
}

func (n *node) loadStartConfig() (startConfig, error) {
	eff, err := n.effective()
	if err != nil {
		return startConfig{}, err
	}
	c := startConfig{eff: eff, server: settingValue(eff, "server"), token: settingValue(eff, "token"), clusterInit: settingBool(eff, "cluster-init"), dataDir: settingValue(eff, "data-dir")}
	if c.token == "" {
		if tf := settingValue(eff, "token-file"); tf != "" {
			b, err := os.ReadFile(n.host(tf))
			if err != nil {
				return c, fmt.Errorf("failed to read token file %s: %w", tf, err)
			}
			c.token = strings.TrimSpace(string(b))
		}
	}
	if c.dataDir == "" {
		c.dataDir = n.dataDir
	}
	return c, nil
}

// successWording returns the reconcile log words of a version: releases
// before the fix say "with datastore", fixed ones "with remote datastore"
// (k3s-ca-rotation.md §2 "Bootstrap(), post-fix").
func remoteWording(v k3s.Version) string {
	if k3s.ServesBootstrapFromDatastore(v) {
		return "remote datastore"
	}
	return "datastore"
}

// runServer is the start-up of a K3s server, following
// k3s-ca-rotation.md §2 (driver, shouldBootstrapLoad, Bootstrap, reconcile)
// and §9 "Restart rule", then leaf certificates, server/token, kubeconfig,
// the supervisor, the etcd member and Save. What it starts is recorded in
// p, so that a stop or a failed start releases it.
func (n *node) runServer(p *k3sProc) error {
	ctx := p.ctx
	n.logK3s("info", "Starting k3s %s (%s)", n.version, n.commit)
	cfg, err := n.loadStartConfig()
	if err != nil {
		return err
	}
	sdView := filepath.Join(cfg.dataDir, "server")
	sdHost := n.host(sdView)
	passphrase, err := n.bootstrapServer(ctx, cfg, sdHost, sdView)
	if err != nil {
		return err
	}

	// Derived files: leaf certificates whose CA changed (§4), server/token
	// with the hash of the current server CA (§3 "Token format"),
	// kubeconfig.
	cas, err := readSDFiles(sdHost)
	if err != nil {
		return err
	}
	if err := n.renewLeafCerts(cas, cfg.dataDir, false); err != nil {
		return fatalf("Error: starting kubernetes: preparing server: %v", err)
	}
	if err := n.writeServerToken(sdHost, sdView, cas[k3s.PathServerCA], passphrase); err != nil {
		return err
	}
	if err := n.writeKubeconfig(cfg.dataDir, cas[k3s.PathServerCA]); err != nil {
		return err
	}

	// Supervisor with the dynamiclistener serving certificate.
	serving, err := n.loadServingCert(sdHost, cas)
	if err != nil {
		return fatalf("Error: starting kubernetes: preparing server: %v", err)
	}
	sup, err := startSupervisor(n, p, sdHost, sdView, passphrase, serving, cas)
	if err != nil {
		return fatalf("Error: starting kubernetes: %v", err)
	}
	p.setSupervisor(sup)
	n.lab.serving.publish(n, serving)

	// The etcd member, with the certificates on disk now; without quorum
	// it does not become ready and neither does K3s.
	m := n.takeInitMember()
	if m == nil {
		if m, err = n.startMember(sdHost); err != nil {
			return fatalf("Error: starting kubernetes: preparing server: start managed database: %v", err)
		}
	}
	p.setMember(m)
	if err := m.waitReady(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fatalf("Error: starting kubernetes: preparing server: start managed database: %v", err)
	}
	n.logK3s("info", "Connected to etcd %s - datastore using %d of %d bytes", etcdVersion, m.e.Server.Backend().SizeInUse(), m.e.Server.Backend().Size())

	// Save with override=false (§2 "Writing back").
	n.logK3s("info", "Saving cluster bootstrap data to datastore")
	d, err := k3s.ReadBootstrapFromDir(sdHost)
	if err == nil {
		var exists bool
		exists, err = saveBootstrap(ctx, m.cli, passphrase, d, false)
		if err == nil && exists {
			n.logK3s("warning", "Bootstrap key already exists")
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fatalf("Error: starting kubernetes: failed to save bootstrap data: %v", err)
	}
	sup.setReady()
	return nil
}

// bootstrapServer chooses the driver, runs shouldBootstrapLoad and the
// HTTP or local reconcile (§2), and returns the server's passphrase.
func (n *node) bootstrapServer(ctx context.Context, cfg startConfig, sdHost, sdView string) (string, error) {
	walDir := filepath.Join(sdHost, "db", "etcd", "member", "wal")
	initialized := dirExists(walDir)
	fixed := k3s.ServesBootstrapFromDatastore(n.version)

	// Choosing the driver (§2): etcd when initialized, or cluster-init, or
	// both server and token; otherwise kine, which the lab does not model.
	if !initialized && !cfg.clusterInit && !(cfg.server != "" && cfg.token != "") {
		return "", fatalf("lab: this start would create a new SQLite (kine) datastore: %s has no etcd data and neither cluster-init nor server+token is configured; the lab simulates embedded etcd only", sdView)
	}
	if settingValue(cfg.eff, "datastore-endpoint") != "" {
		return "", fatalf("lab: external datastores (datastore-endpoint) are not simulated")
	}
	if !initialized {
		return "", fatalf("lab: %s has no etcd data: joining a new member to the lab's etcd cluster is not simulated (every lab server is an initialized member)", filepath.Join(sdView, "db", "etcd"))
	}

	opts := validateOptions{user: "server", source: n.ip, warn: func(f string, a ...any) { n.logK3s("warning", f, a...) }}
	if fixed {
		opts.localCA = filepath.Join(sdHost, k3s.PathServerCA)
	}
	var cai *clientInfo
	n.logK3s("info", "Managed etcd cluster bootstrap already complete and initialized")
	if cfg.server != "" && cfg.token != "" {
		// Errors are ignored here (§2 shouldBootstrapLoad).
		cai, _ = parseAndValidateToken(ctx, n.localURL(cfg.server), cfg.token, opts)
	}
	passphrase, err := n.serverPassphrase(cfg.token, sdHost)
	if err != nil {
		return "", fatalf("Error: starting kubernetes: preparing server: %v", err)
	}
	rc := reconciler{n: n, sdHost: sdHost, sdView: sdView, passphrase: passphrase}
	if cai != nil {
		err := rc.httpBootstrap(ctx, cai, fixed)
		if err == nil {
			n.logK3s("info", "Successfully reconciled with %s", remoteWording(n.version))
			return passphrase, nil
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			return "", err
		}
		n.logK3s("warning", "Unable to reconcile with %s: %v", remoteWording(n.version), err)
	}
	if err := rc.localReconcile(ctx); err != nil {
		var fe *fatalError
		if errors.As(err, &fe) {
			return "", err
		}
		return "", fatalf("Failed to reconcile with temporary etcd: %v", err)
	}
	return passphrase, nil
}

// serverPassphrase is the normalized server token (§3 "Passphrase"): the
// configured token, else SD/token, else the passwd "server" entry.
func (n *node) serverPassphrase(configured, sdHost string) (string, error) {
	if configured != "" {
		return k3s.NormalizeToken(configured)
	}
	if b, err := os.ReadFile(filepath.Join(sdHost, "token")); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return k3s.NormalizeToken(strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(filepath.Join(sdHost, k3s.PathPasswd))
	if err != nil {
		return "", fmt.Errorf("no token configured and no server token file: %w", err)
	}
	if e, ok := parsePasswd(b)["server"]; ok {
		return e.pass, nil
	}
	return "", errors.New("no token configured and no server entry in the passwd file")
}

// renewLeafCerts regenerates the node's leaf certificates whose CA changed
// or that are missing or due (§4 "Each server regenerates its own leaf
// certs at start") and logs each as K3s does.
func (n *node) renewLeafCerts(cas map[string][]byte, dataDirView string, agent bool) error {
	ddHost := n.host(dataDirView)
	existing := map[string][]byte{}
	for _, sub := range []string{filepath.Join("server", "tls"), "agent"} {
		root := filepath.Join(ddHost, sub)
		_ = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if rel, err := filepath.Rel(ddHost, p); err == nil {
				if b, err := os.ReadFile(p); err == nil {
					existing[rel] = b
				}
			}
			return nil
		})
	}
	files, reissued, err := k3s.RenewLeafCerts(cas, existing, k3s.LeafOptions{
		NodeName: n.name, NodeIPs: []net.IP{net.ParseIP(n.ip)}, Now: time.Now(), Agent: agent, RenewDays: k3s.RenewDays(n.version),
	})
	if err != nil {
		return err
	}
	paths := sortedKeys(files)
	for _, rel := range paths {
		mode := os.FileMode(0o600)
		if strings.HasSuffix(rel, ".crt") {
			mode = 0o644
		}
		p := filepath.Join(ddHost, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[rel], mode); err != nil {
			return err
		}
	}
	sort.Strings(reissued)
	for _, rel := range reissued {
		certs, err := k3s.ParseCertsPEM(files[rel])
		if err != nil || len(certs) == 0 {
			continue
		}
		c := certs[0]
		n.logK3s("info", "certificate %s signed by %s: notBefore=%s notAfter=%s", c.Subject, c.Issuer, c.NotBefore.UTC(), c.NotAfter.UTC())
	}
	return nil
}

// writeServerToken rewrites SD/token as K10<hashCA(server-ca.crt)>::server:<pass>
// with node-token and agent-token symlinks (§3 "Token format").
func (n *node) writeServerToken(sdHost, sdView string, serverCA []byte, passphrase string) error {
	hash, err := k3s.HashCA(serverCA)
	if err != nil {
		return fmt.Errorf("hash %s: %w", filepath.Join(sdView, k3s.PathServerCA), err)
	}
	tok := k3s.FormatToken(hash, "server", passphrase) + "\n"
	if err := os.WriteFile(filepath.Join(sdHost, "token"), []byte(tok), 0o600); err != nil {
		return err
	}
	for _, l := range []string{"node-token", "agent-token"} {
		p := filepath.Join(sdHost, l)
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			continue // an explicit --agent-token file
		}
		_ = os.Remove(p)
		if err := os.Symlink(filepath.Join(sdView, "token"), p); err != nil {
			return err
		}
	}
	n.logK3s("info", "Server node token is available at %s", filepath.Join(sdView, "token"))
	n.logK3s("info", "To join server node to cluster: k3s server -s https://127.0.0.1:6443 -t ${SERVER_NODE_TOKEN}")
	n.logK3s("info", "Agent node token is available at %s", filepath.Join(sdView, "agent-token"))
	n.logK3s("info", "To join agent node to cluster: k3s agent -s https://127.0.0.1:6443 -t ${AGENT_NODE_TOKEN}")
	return nil
}

// writeKubeconfig rewrites /etc/rancher/k3s/k3s.yaml with the current
// server CA bundle and admin certificate (§4, writeKubeConfig).
func (n *node) writeKubeconfig(dataDirView string, serverCA []byte) error {
	tlsDir := filepath.Join(n.host(dataDirView), "server", "tls")
	cert, err1 := os.ReadFile(filepath.Join(tlsDir, "client-admin.crt"))
	key, err2 := os.ReadFile(filepath.Join(tlsDir, "client-admin.key"))
	if err1 != nil || err2 != nil {
		return nil // no admin cert (yet): nothing to write
	}
	b64 := base64.StdEncoding.EncodeToString
	kc := fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: %s
    client-key-data: %s
`, b64(serverCA), b64(cert), b64(key))
	return writeFile(n.host(n.kubeconfig), []byte(kc), 0o600)
}

// runAgent is the start-up of a K3s agent (k3s-ca-rotation.md §7
// "Agents"): validate the token against /cacerts of the server URL (a
// secure token whose CA hash does not match fails), fetch the server and
// client CA bundles, and get the agent's certificates signed. Real agents
// retry the token validation every 2 s forever (TimeoutStartSec=0); the
// lab fails the start instead so that a playbook sees the error.
func (n *node) runAgent(ctx context.Context) error {
	n.logK3s("info", "Starting k3s agent %s (%s)", n.version, n.commit)
	cfg, err := n.loadStartConfig()
	if err != nil {
		return err
	}
	if cfg.server == "" {
		return fatalf("Error: --server is required")
	}
	if cfg.token == "" {
		return fatalf("Error: --token is required")
	}
	server := n.localURL(cfg.server)
	info, err := parseAndValidateToken(ctx, server, cfg.token, validateOptions{user: "node", source: n.ip, warn: func(f string, a ...any) { n.logK3s("warning", f, a...) }})
	if err != nil {
		n.logK3s("error", "%v", err)
		return fatalf("lab: the agent cannot validate its token against %s (real K3s keeps retrying every 2s): %v", cfg.server, err)
	}
	ddHost := n.host(cfg.dataDir)
	agentDir := filepath.Join(ddHost, "agent")
	if err := os.MkdirAll(agentDir, 0o755); err != nil {
		return err
	}
	serverCA, err := info.get(ctx, "/v1-k3s/server-ca.crt", 10*time.Second)
	if err != nil {
		return fatalf("Error: failed to retrieve agent configuration: %v", err)
	}
	clientCA, err := info.get(ctx, "/v1-k3s/client-ca.crt", 10*time.Second)
	if err != nil {
		return fatalf("Error: failed to retrieve agent configuration: %v", err)
	}
	for name, b := range map[string][]byte{"server-ca.crt": serverCA, "client-ca.crt": clientCA} {
		if err := os.WriteFile(filepath.Join(agentDir, name), b, 0o644); err != nil {
			return err
		}
	}
	// The CSRs K3s posts to its server: the lab signs with the CAs the
	// answering server process loaded.
	sup := n.lab.supervisorAt(info.baseURL)
	if sup == nil {
		return fatalf("Error: failed to retrieve agent configuration: no supervisor at %s", info.baseURL)
	}
	cas := map[string][]byte{}
	for k, v := range sup.signingCAs() {
		cas[k] = v
	}
	if err := n.renewLeafCerts(cas, cfg.dataDir, true); err != nil {
		return fatalf("Error: failed to retrieve agent configuration: %v", err)
	}
	return nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// dirEmpty reports whether p is missing or has no entries.
func dirEmpty(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) == 0 {
		return true, nil
	}
	return false, err
}
