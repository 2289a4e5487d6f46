package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
)

// supervisor is a running server's K3s supervisor on <ip>:6443: real HTTPS
// with a serving certificate signed by the node's server CA as it was when
// the process started (k3s-ca-rotation.md §2 "Other routes"; issue 3).
type supervisor struct {
	n      *node
	sdHost string   // server dir, host path
	sdView string   // server dir as the node sees it
	p      *k3sProc // the K3s process it belongs to (its etcd member)
	ln     net.Listener
	srv    *http.Server
	done   chan struct{}

	cert      atomic.Pointer[tls.Certificate] // served certificate; adopt swaps it
	ready     atomic.Bool                     // the start completed (/readyz)
	readyCh   chan struct{}                   // closed when the start completed
	readyOnce sync.Once
	synced    atomic.Bool // it synced with the k3s-serving secret and follows it since
	closed    atomic.Bool

	// clientCAs is SD/tls/client-ca.crt as loaded at start: the Kubernetes
	// API's client-certificate authentication (authenticate, kubeapi.go).
	clientCAs *x509.CertPool
	// kubeStop ends the API's watches when K3s stops.
	kubeStop     chan struct{}
	kubeStopOnce sync.Once

	connsMu sync.Mutex
	unused  map[net.Conn]bool // connections that have not sent a request yet

	// passphrase is the normalized server token the process runs with
	// (getPassphrase; a token rotation changes it).
	passMu     sync.Mutex
	passphrase string
	passwd     map[string]passwdEntry

	// serverCA and clientCA sign the agents' certificates (the lab's
	// stand-in for the CSR endpoints), loaded at start like K3s's runtime.
	cas map[string][]byte // SD-relative CA files at start

	cacertsOnce sync.Once
	cacerts     []byte
}

type passwdEntry struct {
	pass   string
	groups []string
}

// parsePasswd reads SD/cred/passwd: CSV "pass,user,uid,groups".
func parsePasswd(b []byte) map[string]passwdEntry {
	out := map[string]passwdEntry{}
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return out
	}
	for _, rec := range recs {
		if len(rec) < 2 {
			continue
		}
		e := passwdEntry{pass: rec[0]}
		if len(rec) >= 4 {
			e.groups = strings.Split(rec[3], ",")
		}
		out[rec[1]] = e
	}
	return out
}

// startSupervisor listens on <ip>:6443 and serves the supervisor routes.
func startSupervisor(n *node, p *k3sProc, sdHost, sdView, passphrase string, serving tls.Certificate, cas map[string][]byte) (*supervisor, error) {
	pw, err := os.ReadFile(filepath.Join(sdHost, k3s.PathPasswd))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(sdView, k3s.PathPasswd), err)
	}
	s := &supervisor{n: n, p: p, sdHost: sdHost, sdView: sdView, passphrase: passphrase, passwd: parsePasswd(pw), cas: cas, done: make(chan struct{}),
		kubeStop: make(chan struct{}), readyCh: make(chan struct{})}
	ln, err := net.Listen("tcp", net.JoinHostPort(n.ip, "6443"))
	if err != nil {
		return nil, fmt.Errorf("listen on %s:6443: %w", n.ip, err)
	}
	s.ln = ln
	s.cert.Store(&serving)
	mux := http.NewServeMux()
	mux.HandleFunc("/cacerts", s.handleCACerts)
	mux.HandleFunc("/readyz", s.handleReady)
	mux.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "pong") })
	mux.HandleFunc("/v1-k3s/server-bootstrap", s.handleServerBootstrap)
	mux.HandleFunc("/v1-k3s/server-ca.crt", s.fileHandler(k3s.PathServerCA))
	mux.HandleFunc("/v1-k3s/client-ca.crt", s.fileHandler(k3s.PathClientCA))
	mux.HandleFunc("/v1-k3s/cert/cacerts", s.handleCACertReplace)
	mux.HandleFunc("/v1-k3s/token", s.handleTokenRotate)
	mux.HandleFunc("/v1-k3s/encrypt/status", s.handleEncryptStatus)
	mux.HandleFunc("/version", s.handleVersion)
	installKubeAPI(mux, s)
	s.clientCAs = x509.NewCertPool()
	s.clientCAs.AppendCertsFromPEM(cas[k3s.PathClientCA])
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil },
			MinVersion:     tls.VersionTLS12,
			// Client certificates are the Kubernetes API's authentication,
			// requested but verified per request (authenticate), as K3s's
			// dynamiclistener does (pkg/cluster/https.go); the supervisor's
			// own routes use basic auth.
			ClientAuth: tls.RequestClientCert,
		},
		ErrorLog: nil,
	}
	s.dropUnusedConnsOnShutdown()
	tlsLn := tls.NewListener(ln, s.srv.TLSConfig)
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(tlsLn)
	}()
	return s, nil
}

func (s *supervisor) close() {
	s.closed.Store(true)
	s.kubeStopOnce.Do(func() { close(s.kubeStop) })
	s.n.lab.kube.ServerStopped(s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// dropUnusedConnsOnShutdown closes, when the server shuts down, the
// connections that never sent a request (an HTTP client's spare dials):
// Shutdown would wait 5 s for them, where K3s's exit drops them at once.
func (s *supervisor) dropUnusedConnsOnShutdown() {
	s.unused = map[net.Conn]bool{}
	s.srv.ConnState = func(c net.Conn, st http.ConnState) {
		s.connsMu.Lock()
		defer s.connsMu.Unlock()
		if st == http.StateNew {
			s.unused[c] = true
		} else {
			delete(s.unused, c)
		}
	}
	s.srv.RegisterOnShutdown(func() {
		s.connsMu.Lock()
		defer s.connsMu.Unlock()
		for c := range s.unused {
			_ = c.Close()
		}
	})
}

// handleVersion answers the Kubernetes API's GET /version as K3s's
// kube-apiserver does with anonymous auth off: 401 without a client
// certificate of the cluster's client CA, else the version info. The
// rest of the simulated API is internal/kubesim (kubeapi.go).
func (s *supervisor) handleVersion(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(r); !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
		return
	}
	v := s.n.version
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"major":"%d","minor":"%d","gitVersion":%q,"gitCommit":%q,"gitTreeState":"clean","goVersion":%q,"compiler":"gc","platform":"linux/amd64"}`,
		v.Major, v.Minor, v.String(), s.n.commit, goVersionOf(v))
}

// handleCACerts serves SD/tls/server-ca.crt, read once per process and
// cached (pkg/server/handlers/handlers.go:CACerts; §2 "Other routes").
func (s *supervisor) handleCACerts(w http.ResponseWriter, r *http.Request) {
	s.cacertsOnce.Do(func() {
		s.cacerts, _ = os.ReadFile(filepath.Join(s.sdHost, k3s.PathServerCA))
	})
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(s.cacerts)))
	_, _ = w.Write(s.cacerts)
}

// handleReady answers /readyz: ok once the K3s start completed.
func (s *supervisor) handleReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.ready.Load() {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "[-]etcd failed: reason withheld\nreadyz check failed")
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// setReady marks the start complete: the sync with the k3s-serving
// secret waits for it (servingSecret.publish), and the server's controller
// manager may then take the lease (kubesim.Store.ServerReady).
func (s *supervisor) setReady() {
	s.ready.Store(true)
	s.readyOnce.Do(func() { close(s.readyCh) })
	s.n.lab.kube.ServerReady(s)
}

// adopt serves c from now on and caches it in SD/tls/dynamic-cert.json
// with the secret's resourceVersion, as K3s's secret controller does when
// the k3s-serving secret changed; false if the supervisor is closed or
// already serves c. The CA that signed c does not matter.
func (s *supervisor) adopt(c tls.Certificate, ver string) bool {
	if s.closed.Load() {
		return false
	}
	if cur := s.cert.Load(); cur != nil && sameLeaf(*cur, c) {
		return false
	}
	s.cert.Store(&c)
	// A cache that cannot be written (the lab is being torn down) only
	// costs the next start its copy, as on K3s.
	_ = writeDynamicCert(filepath.Join(s.sdHost, "tls", "dynamic-cert.json"), c, ver)
	return true
}

// datastore is the client of the process's own etcd member (nil while it
// has none).
func (s *supervisor) datastore() *clientv3.Client {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if s.p.member == nil || s.p.released {
		return nil
	}
	return s.p.member.cli
}

// statusBody renders a Kubernetes Status object as K3s's auth middleware
// sends it: pretty-printed with a Content-Length (golden
// server-bootstrap-endpoint.txt 2-4).
func sendStatus(w http.ResponseWriter, code int, reason, message string) {
	body, _ := json.MarshalIndent(struct {
		Kind     string   `json:"kind"`
		Metadata struct{} `json:"metadata"`
		Status   string   `json:"status"`
		Message  string   `json:"message"`
		Reason   string   `json:"reason"`
		Code     int      `json:"code"`
	}{Kind: "Status", Status: "Failure", Message: message, Reason: reason, Code: code}, "", "  ")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// authorize checks basic auth against SD/cred/passwd and the groups a route
// needs: a wrong password is 401 "not authorized", no credentials or a
// user without the group is 403 "forbidden" (pkg/server/auth; golden
// server-bootstrap-endpoint.txt "Authentication logic").
func (s *supervisor) authorize(w http.ResponseWriter, r *http.Request, groups ...string) (user, pass string, ok bool) {
	user, pass, has := r.BasicAuth()
	if !has {
		sendStatus(w, http.StatusForbidden, "Forbidden", "forbidden")
		return "", "", false
	}
	e, known := s.passwd[user]
	if !known || e.pass != pass {
		sendStatus(w, http.StatusUnauthorized, "Unauthorized", "not authorized")
		return "", "", false
	}
	for _, g := range e.groups {
		for _, want := range groups {
			if g == want {
				return user, pass, true
			}
		}
	}
	sendStatus(w, http.StatusForbidden, "Forbidden", "forbidden")
	return "", "", false
}

// handleServerBootstrap serves the bootstrap data. Releases with the bug
// serve the files on this server's disk; fixed releases serve the
// datastore copy and fall back to disk on error (k3s-ca-rotation.md §1
// "What the fix changed", §2 "HTTP fetch"). The route is not
// method-restricted (golden server-bootstrap-endpoint.txt 5).
func (s *supervisor) handleServerBootstrap(w http.ResponseWriter, r *http.Request) {
	_, pass, ok := s.authorize(w, r, "k3s:server")
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	// Options.BootstrapBug is the real engine's K3S_SERVE_BOOTSTRAP_FROM_DISK
	// toggle: a fixed version that serves from disk (k3s#11233).
	if k3s.ServesBootstrapFromDatastore(s.n.version) && !s.n.lab.opts.BootstrapBug {
		var data []byte
		err := errors.New("etcd is not running")
		if cli := s.datastore(); cli != nil {
			data, err = getBootstrapRaw(r.Context(), cli, pass)
		}
		if err == nil {
			s.n.logK3s("info", "Serving HTTP bootstrap from datastore for %s", r.RemoteAddr)
			_, _ = w.Write(data)
			return
		}
		s.n.logK3s("warning", "Failed to retrieve HTTP bootstrap data from datastore; falling back to disk for %s: %v", r.RemoteAddr, err)
	}
	data, err := readBootstrapFromDisk(s.sdHost)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(data)
}

// readBootstrapFromDisk is K3s's bootstrap.ReadFromDisk: the JSON of the
// bootstrap files with their mtimes.
func readBootstrapFromDisk(sdHost string) ([]byte, error) {
	d, err := k3s.ReadBootstrapFromDir(sdHost)
	if err != nil {
		return nil, err
	}
	return k3s.MarshalBootstrap(d)
}

// fileHandler serves one file of SD to authenticated nodes and servers.
func (s *supervisor) fileHandler(rel string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := s.authorize(w, r, "k3s:agent", "k3s:server"); !ok {
			return
		}
		b, err := os.ReadFile(filepath.Join(s.sdHost, rel))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	}
}

// handleCACertReplace is PUT /v1-k3s/cert/cacerts, the rotate-ca handler
// (k3s-ca-rotation.md §5 "Handler"; golden logs-b b2 and logs-e): it
// defaults the fields not being rotated to the current data, validates the
// new CAs unless forced, saves the datastore key with override and leaves
// SD/tls/dynamic-cert-regenerate on releases with PR #12978.
func (s *supervisor) handleCACertReplace(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authorize(w, r, "k3s:server"); !ok {
		return
	}
	if r.Method != http.MethodPut {
		sendStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed")
		return
	}
	force, _ := strconv.ParseBool(r.FormValue("force"))
	if err := s.caCertReplace(r.Context(), r.Body, force); err != nil {
		id := rand.IntN(100000)
		s.n.logK3s("error", "certificate error ID %d: %v", id, err)
		s.n.logK3s("error", "Sending HTTP/%d.%d %d response to %s: certificate error ID %d", r.ProtoMajor, r.ProtoMinor, http.StatusInternalServerError, r.RemoteAddr, id)
		sendStatus(w, http.StatusInternalServerError, "InternalError", fmt.Sprintf("Internal error occurred: certificate error ID %d", id))
		return
	}
	s.n.logK3s("info", "certificate: Cluster Certificate Authority data has been updated, k3s must be restarted.")
	w.WriteHeader(http.StatusNoContent)
}

func (s *supervisor) caCertReplace(ctx context.Context, body io.Reader, force bool) error {
	raw, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	staged, err := k3s.UnmarshalBootstrap(raw)
	if err != nil {
		return err
	}
	current, err := k3s.ReadBootstrapFromDir(s.sdHost)
	if err != nil {
		return err
	}
	// defaultBootstrap: keep the current data of every field that is not
	// tagged for rotation or whose new file is missing or empty.
	merged := k3s.BootstrapData{}
	stagedFiles := map[string][]byte{}
	currentFiles := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if f, ok := current[bf.Key]; ok {
			currentFiles[bf.Path] = f.Content
		}
		nf, ok := staged[bf.Key]
		if !bf.Rotate || !ok || len(nf.Content) == 0 {
			path := filepath.Join(s.sdView, bf.Path)
			if bf.Optional {
				if _, has := current[bf.Key]; !has {
					path = ""
				}
			}
			s.n.logK3s("info", "Using current data for %s: %s", bf.Key, path)
			if cf, has := current[bf.Key]; has {
				merged[bf.Key] = cf
			}
			continue
		}
		merged[bf.Key] = nf
		stagedFiles[bf.Path] = nf.Content
	}
	if errs := k3s.ValidateCARotation(currentFiles, stagedFiles); len(errs) > 0 {
		err := errors.Join(errs...)
		if !force {
			return fmt.Errorf("failed to validate new CA certificates and keys: %w", err)
		}
		s.n.logK3s("warning", "Save of CA certificates and keys forced, ignoring validation errors: %v", err)
	}
	s.n.logK3s("info", "Saving cluster bootstrap data to datastore")
	cli := s.datastore()
	if cli == nil {
		return errors.New("etcd is not running on this server")
	}
	if _, err := saveBootstrap(ctx, cli, s.getPassphrase(), merged, true); err != nil {
		return err
	}
	if hasDynamicCertRegenerate(s.n.version) {
		p := filepath.Join(s.sdHost, "tls", "dynamic-cert-regenerate")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			s.n.logK3s("warning", "Failed to create dynamic-cert-regenerate file: %v", err)
		}
	}
	return nil
}

// hasDynamicCertRegenerate reports whether the rotate-ca handler of
// version v leaves SD/tls/dynamic-cert-regenerate: PR #12978, in the
// October 2025 patch releases (k3s-ca-rotation.md §1 "Related fixes";
// the exact first patch of each minor is [inferred]).
func hasDynamicCertRegenerate(v k3s.Version) bool {
	first := map[int]int{31: 14, 32: 10, 33: 6, 34: 2}
	if v.Major != 1 {
		return v.Major > 1
	}
	if v.Minor >= 35 {
		return true
	}
	p, ok := first[v.Minor]
	return ok && v.Patch >= p
}

// signingCAs returns the CA files the process loaded at start, for the
// agents' certificates.
func (s *supervisor) signingCAs() map[string][]byte { return s.cas }

// clientFor builds an HTTPS client that trusts bundle (nil: no
// verification) and dials from the node address source, so that servers
// log the peer's own address as real K3s does.
func clientFor(bundle []byte, timeout time.Duration, source string) *http.Client {
	var tlsCfg *tls.Config
	if bundle == nil {
		tlsCfg = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // K3s fetches /cacerts unverified, then checks the hash (§2 "TLS trust").
	} else {
		tlsCfg = &tls.Config{RootCAs: poolOf(bundle)}
	}
	d := &net.Dialer{Timeout: timeout}
	if ip := net.ParseIP(source); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true, DialContext: d.DialContext},
	}
}
