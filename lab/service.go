package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
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

// errStartFailed is returned by start when the service failed.
var errStartFailed = errors.New("start failed")

// start runs the unit's start job: systemd's lines, the simulated K3s
// start-up, and the state change. It returns once the service is active
// or has failed (K3s units are Type=notify). Caller holds opMu.
func (n *node) start(ctx context.Context) error {
	switch n.getState() {
	case stateActive, stateActivating:
		return nil
	}
	n.mu.Lock()
	n.pid = int(n.lab.pidSeq.Add(1)) + 4000
	fault := n.fault
	n.state = stateActivating
	n.mu.Unlock()
	desc := "Lightweight Kubernetes"
	n.logSystemd("Starting %s - %s...", n.unitName(), desc)
	if d := n.lab.opts.StartDelay; d > 0 && n.lab.UpDuration() > 0 {
		// Model K3s's start-up time on restarts (Options.StartDelay).
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	var sup *supervisor
	var err error
	if fault == FaultFailStart {
		err = fatalf("lab: injected fault %s: k3s exits during start-up (clear it with: caretaker lab fault %s clear)", FaultFailStart, n.name)
	} else if n.isServer() {
		sup, err = n.runServer(ctx)
	} else {
		err = n.runAgent(ctx)
	}
	if err != nil {
		var fe *fatalError
		if errors.As(err, &fe) {
			n.logK3s("fatal", "%s", fe.msg)
		} else {
			n.logK3s("fatal", "Error: %v", err)
		}
		n.logSystemd("%s: Main process exited, code=exited, status=1/FAILURE", n.unitName())
		n.logSystemd("%s: Failed with result 'exit-code'.", n.unitName())
		n.logSystemd("Failed to start %s - %s.", n.unitName(), desc)
		n.setState(stateFailed)
		return errStartFailed
	}
	n.mu.Lock()
	n.sup = sup
	n.mu.Unlock()
	n.setState(stateActive)
	n.logSystemd("Started %s - %s.", n.unitName(), desc)
	return nil
}

// stop stops the service (SIGTERM to K3s: the supervisor closes).
func (n *node) stop() {
	st := n.getState()
	if st == stateInactive {
		return
	}
	if st == stateFailed {
		n.setState(stateInactive)
		return
	}
	n.setState(stateDeactivating)
	n.logSystemd("Stopping %s - Lightweight Kubernetes...", n.unitName())
	n.mu.Lock()
	sup := n.sup
	n.sup = nil
	n.mu.Unlock()
	if sup != nil {
		sup.close()
	}
	n.logSystemd("%s: Deactivated successfully.", n.unitName())
	n.logSystemd("Stopped %s - Lightweight Kubernetes.", n.unitName())
	n.setState(stateInactive)
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
// the supervisor and Save.
func (n *node) runServer(ctx context.Context) (*supervisor, error) {
	n.logK3s("info", "Starting k3s %s (%s)", n.version, n.commit)
	cfg, err := n.loadStartConfig()
	if err != nil {
		return nil, err
	}
	sdView := filepath.Join(cfg.dataDir, "server")
	sdHost := n.host(sdView)
	walDir := filepath.Join(sdHost, "db", "etcd", "member", "wal")
	initialized := dirExists(walDir)
	fixed := k3s.ServesBootstrapFromDatastore(n.version)

	// Choosing the driver (§2): etcd when initialized, or cluster-init, or
	// both server and token; otherwise kine, which the lab does not model.
	if !initialized && !cfg.clusterInit && !(cfg.server != "" && cfg.token != "") {
		return nil, fatalf("lab: this start would create a new SQLite (kine) datastore: %s has no etcd data and neither cluster-init nor server+token is configured; the lab simulates embedded etcd only", sdView)
	}
	if settingValue(cfg.eff, "datastore-endpoint") != "" {
		return nil, fatalf("lab: external datastores (datastore-endpoint) are not simulated")
	}

	opts := validateOptions{user: "server", source: n.ip, warn: func(f string, a ...any) { n.logK3s("warning", f, a...) }}
	if fixed {
		opts.localCA = filepath.Join(sdHost, k3s.PathServerCA)
	}
	server := ""
	if cfg.server != "" {
		server = n.localURL(cfg.server)
	}
	var cai *clientInfo
	shouldBootstrap := false
	switch {
	case initialized:
		n.logK3s("info", "Managed etcd cluster bootstrap already complete and initialized")
		if server != "" && cfg.token != "" {
			// Errors are ignored here (§2 shouldBootstrapLoad).
			cai, _ = parseAndValidateToken(ctx, server, cfg.token, opts)
		}
	case server == "":
		n.logK3s("info", "Managed etcd cluster initializing")
	default:
		if cfg.token == "" {
			return nil, fatalf("Error: starting kubernetes: preparing server: failed to check if bootstrap data has been initialized: token is required to join a cluster")
		}
		info, err := parseAndValidateToken(ctx, server, cfg.token, opts)
		if err != nil {
			return nil, fatalf("Error: starting kubernetes: preparing server: failed to check if bootstrap data has been initialized: failed to validate token: %v", err)
		}
		n.logK3s("info", "Managed etcd cluster not yet initialized")
		cai = info
		shouldBootstrap = true
	}

	passphrase, err := n.serverPassphrase(cfg.token, sdHost)
	if err != nil {
		return nil, fatalf("Error: starting kubernetes: preparing server: %v", err)
	}
	rc := reconciler{n: n, sdHost: sdHost, sdView: sdView, passphrase: passphrase}

	if initialized {
		done := false
		if cai != nil {
			if err := rc.httpBootstrap(ctx, cai, fixed); err != nil {
				var fe *fatalError
				if errors.As(err, &fe) {
					return nil, err
				}
				n.logK3s("warning", "Unable to reconcile with %s: %v", remoteWording(n.version), err)
			} else {
				n.logK3s("info", "Successfully reconciled with %s", remoteWording(n.version))
				done = true
			}
		}
		if !done {
			if err := rc.localReconcile(ctx); err != nil {
				var fe *fatalError
				if errors.As(err, &fe) {
					return nil, err
				}
				return nil, fatalf("Failed to reconcile with temporary etcd: %v", err)
			}
		}
	} else if shouldBootstrap {
		if err := rc.httpBootstrap(ctx, cai, fixed); err != nil {
			var fe *fatalError
			if errors.As(err, &fe) {
				return nil, err
			}
			return nil, fatalf("Error: starting kubernetes: preparing server: failed to bootstrap cluster data: %v", err)
		}
	} else {
		// cluster-init on an empty etcd dir: the lab's datastore already
		// holds the cluster, so this start takes the local data.
		if err := rc.localReconcile(ctx); err != nil {
			var fe *fatalError
			if errors.As(err, &fe) {
				return nil, err
			}
			return nil, fatalf("Failed to reconcile with temporary etcd: %v", err)
		}
	}
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, err
	}

	// Derived files: leaf certificates whose CA changed (§4), server/token
	// with the hash of the current server CA (§3 "Token format"),
	// kubeconfig.
	cas, err := readSDFiles(sdHost)
	if err != nil {
		return nil, err
	}
	if err := n.renewLeafCerts(cas, cfg.dataDir, false); err != nil {
		return nil, fatalf("Error: starting kubernetes: preparing server: %v", err)
	}
	if err := n.writeServerToken(sdHost, sdView, cas[k3s.PathServerCA], passphrase); err != nil {
		return nil, err
	}
	if err := n.writeKubeconfig(cfg.dataDir, cas[k3s.PathServerCA]); err != nil {
		return nil, err
	}

	// Supervisor with the dynamiclistener serving certificate.
	serving, err := n.loadServingCert(sdHost, cas)
	if err != nil {
		return nil, fatalf("Error: starting kubernetes: preparing server: %v", err)
	}
	sup, err := startSupervisor(n, sdHost, sdView, passphrase, serving, cas)
	if err != nil {
		return nil, fatalf("Error: starting kubernetes: %v", err)
	}

	// Save with override=false (§2 "Writing back").
	n.logK3s("info", "Saving cluster bootstrap data to datastore")
	d, err := k3s.ReadBootstrapFromDir(sdHost)
	if err == nil {
		var exists bool
		exists, err = n.lab.ds.saveBootstrap(ctx, passphrase, d, false)
		if err == nil && exists {
			n.logK3s("warning", "Bootstrap key already exists")
		}
	}
	if err != nil {
		sup.close()
		return nil, fatalf("Error: starting kubernetes: failed to save bootstrap data: %v", err)
	}
	return sup, nil
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

// reconciler applies bootstrap data to one server's disk (§2 "Reconcile").
type reconciler struct {
	n              *node
	sdHost, sdView string
	passphrase     string
}

// httpBootstrap fetches /v1-k3s/server-bootstrap from the join URL and
// reconciles against it (isHTTP=true). The timeout is 15 s on fixed
// releases and the client default (10 s) before.
func (rc reconciler) httpBootstrap(ctx context.Context, cai *clientInfo, fixed bool) error {
	timeout := 10 * time.Second
	if fixed {
		timeout = 15 * time.Second
	}
	body, err := cai.get(ctx, "/v1-k3s/server-bootstrap", timeout)
	if err != nil {
		return err
	}
	d, err := k3s.UnmarshalBootstrap(body)
	if err != nil {
		return err
	}
	return rc.reconcile(d)
}

// localReconcile reads the datastore (the temporary etcd of the releases
// of interest) and reconciles (isHTTP=false).
func (rc reconciler) localReconcile(ctx context.Context) error {
	n := rc.n
	headWording := n.version.Major == 1 && n.version.Minor >= 35
	if headWording {
		n.logK3s("info", "Reconciling bootstrap data between datastore and disk")
		n.logK3s("info", "Opening etcd MVCC KV backend database at %s", filepath.Join(rc.sdView, "db", "etcd-tmp", "member", "snap", "db"))
		n.logK3s("info", "Opened etcd MVCC KV store")
	} else {
		n.logK3s("info", "Starting temporary etcd to reconcile with datastore")
		n.logK3s("info", "etcd temporary data store connection OK")
	}
	d, _, err := n.lab.ds.getBootstrap(ctx, rc.passphrase)
	if err != nil {
		if errors.Is(err, errNoBootstrapKey) {
			if headWording {
				n.logK3s("info", "Closing etcd MVCC KV store")
			}
			return nil
		}
		return err
	}
	if !headWording {
		n.logK3s("info", "Reconciling bootstrap data between datastore and disk")
	}
	if err := rc.compare(d); err != nil {
		return err
	}
	if headWording {
		n.logK3s("info", "Closing etcd MVCC KV store")
		n.logK3s("info", "Successfully reconciled with local datastore")
	}
	return nil
}

// reconcile is ReconcileBootstrapData for data fetched over HTTP.
func (rc reconciler) reconcile(d k3s.BootstrapData) error {
	rc.n.logK3s("info", "Reconciling bootstrap data between datastore and disk")
	return rc.compare(d)
}

// compare runs the per-file rules (§2 "Reconcile" 1, 3-5): missing cert
// dirs → write everything; identical → skip; disk newer by ≥ 3 s → fatal;
// else update every file and set its mtime to the stored Timestamp.
func (rc reconciler) compare(d k3s.BootstrapData) error {
	n := rc.n
	for _, dir := range []string{"cred", "tls", "tls/etcd"} {
		if empty, err := dirEmpty(filepath.Join(rc.sdHost, dir)); err != nil || empty {
			return k3s.WriteBootstrapToDir(rc.sdHost, d)
		}
	}
	var newer []string
	update := false
	for _, bf := range k3s.BootstrapFiles {
		stored, ok := d[bf.Key]
		if !ok {
			continue
		}
		view := filepath.Join(rc.sdView, bf.Path)
		host := filepath.Join(rc.sdHost, bf.Path)
		disk, err := os.ReadFile(host)
		exists := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to get update status of %s: reconcile failed to open: %w", bf.Key, err)
		}
		var mtime time.Time
		if exists {
			if fi, err := os.Stat(host); err == nil {
				mtime = fi.ModTime()
			}
		}
		switch k3s.ReconcileFile(exists, disk, mtime, stored) {
		case k3s.ReconcileUpdate:
			update = true
			if !exists {
				n.logK3s("warning", "%s doesn't exist. continuing...", view)
			} else {
				n.logK3s("warning", "%s", k3s.WillBeUpdatedMessage(view))
			}
		case k3s.ReconcileNewerOnDisk:
			update = true
			newer = append(newer, view)
		}
	}
	if len(newer) > 0 {
		return fatalf("%s", k3s.NewerThanDatastoreMessage(newer))
	}
	if update {
		n.logK3s("warning", "Updating bootstrap data on disk from datastore")
		return k3s.WriteBootstrapToDir(rc.sdHost, d)
	}
	return nil
}

// readSDFiles reads the bootstrap files of SD keyed by SD-relative path.
func readSDFiles(sdHost string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		b, err := os.ReadFile(filepath.Join(sdHost, bf.Path))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		out[bf.Path] = b
	}
	return out, nil
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
		NodeName: n.name, NodeIPs: []net.IP{net.ParseIP(n.ip)}, Now: time.Now(), Agent: agent,
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

// loadServingCert returns the supervisor's serving certificate, kept in
// SD/tls/dynamic-cert.json: reissued when missing, when
// SD/tls/dynamic-cert-regenerate exists (consumed), or when the current
// server CA did not sign it. (dynamiclistener keeps a valid cert longer;
// the lab reissues as soon as the CA changed.)
func (n *node) loadServingCert(sdHost string, cas map[string][]byte) (tlsCert tls.Certificate, err error) {
	path := filepath.Join(sdHost, "tls", "dynamic-cert.json")
	regen := filepath.Join(sdHost, "tls", "dynamic-cert-regenerate")
	_, regenErr := os.Stat(regen)
	var stored dynamicCert
	if b, err := os.ReadFile(path); err == nil && regenErr != nil {
		if json.Unmarshal(b, &stored) == nil && stored.valid(cas[k3s.PathServerCA]) {
			return tlsPair([]byte(stored.Cert), []byte(stored.Key))
		}
	}
	certPEM, keyPEM, err := servingCert(n, cas[k3s.PathServerCA], cas[k3s.PathServerCAKey])
	if err != nil {
		return tlsCert, fmt.Errorf("issue the supervisor serving certificate: %w", err)
	}
	b, err := json.Marshal(dynamicCert{Cert: string(certPEM), Key: string(keyPEM)})
	if err != nil {
		return tlsCert, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return tlsCert, err
	}
	_ = os.Remove(regen)
	if c, err := k3s.ParseCertsPEM(certPEM); err == nil {
		n.logK3s("info", "certificate %s signed by %s: notBefore=%s notAfter=%s", c[0].Subject, c[0].Issuer, c[0].NotBefore.UTC(), c[0].NotAfter.UTC())
	}
	return tlsPair(certPEM, keyPEM)
}

// dynamicCert is the lab's SD/tls/dynamic-cert.json.
type dynamicCert struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// valid reports whether the stored cert was signed by the first cert of
// the CA bundle and is not near expiry.
func (d dynamicCert) valid(serverCA []byte) bool {
	leaf, err := k3s.ParseCertsPEM([]byte(d.Cert))
	if err != nil {
		return false
	}
	ca, err := k3s.ParseCertsPEM(serverCA)
	if err != nil {
		return false
	}
	if leaf[0].CheckSignatureFrom(ca[0]) != nil {
		return false
	}
	return time.Until(leaf[0].NotAfter) > k3s.CertificateRenewDays*24*time.Hour
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
