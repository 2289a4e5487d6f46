package lab

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha1" //nolint:gosec // dynamiclistener's fingerprint annotation is SHA-1
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// The supervisor's serving certificate on :6443 behaves as K3s's
// dynamiclistener does (rancher/dynamiclistener v0.7.5, the version K3s
// pins; measured on a real 3-server cluster, lab/README.md "Serving
// certificate"):
//
//   - each server caches its certificate in SD/tls/dynamic-cert.json and
//     serves that cached certificate at every start, whatever CA signed it;
//   - it issues a new one, signed by the server CA on its disk at that
//     start, only when the cache is missing, unreadable or near expiry, or
//     when SD/tls/dynamic-cert-regenerate exists (consumed at that start;
//     `k3s certificate rotate` and the rotate-ca handler create it);
//   - the servers share it through the kube-system/k3s-serving secret, but
//     a server syncs with the secret only once its start completed and its
//     secret controller runs (Options.ServingCertSyncDelay after ready; real
//     K3s: 0.3-2.3 s after systemd reports the unit active). Until then it
//     serves its own certificate and ignores the secret;
//   - at that sync, when its certificate differs from the secret's, the two
//     race (storage/kubernetes controller.go saveInK8s: factory.Merge
//     prefers the incoming secret whenever it names every SAN, whatever CA
//     signed it): its own is written, and may be overwritten again by the
//     secret's previous content. Which one stays is timing on K3s (5 of 35
//     measured syncs after a regenerate restart kept the previous one); the
//     simulator keeps the server's own unless LoseServingRace asked
//     otherwise;
//   - every synced running server adopts what the secret holds within
//     milliseconds (servingAdoptDelay), in memory and in its cache file.

// servingAdoptDelay is how long a synced running server takes to adopt a
// write to the secret (real K3s: within 60 ms).
const servingAdoptDelay = 20 * time.Millisecond

// servingSecret is the kube-system/k3s-serving secret of the lab's cluster.
type servingSecret struct {
	l    *Lab
	mu   sync.Mutex
	ver  int             // resourceVersion of the last write; 0: no secret yet
	cur  tls.Certificate // its certificate
	lose map[string]int  // per node: contested syncs still to lose
}

// dynamicCertFile is SD/tls/dynamic-cert.json: a kubernetes.io/tls Secret
// as dynamiclistener's file storage writes it.
type dynamicCertFile struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Metadata   struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		ResourceVersion string            `json:"resourceVersion,omitempty"`
		Annotations     map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
	Data struct {
		Cert []byte `json:"tls.crt"`
		Key  []byte `json:"tls.key"`
	} `json:"data"`
	Type string `json:"type"`
}

// loadServingCert returns the certificate this start serves on :6443 and
// logs as dynamiclistener does.
func (n *node) loadServingCert(sdHost string, cas map[string][]byte) (tls.Certificate, error) {
	path := filepath.Join(sdHost, "tls", "dynamic-cert.json")
	regen := filepath.Join(sdHost, "tls", "dynamic-cert-regenerate")
	_, regenErr := os.Stat(regen)
	if regenErr == nil {
		// K3s deletes the file at start and issues a new certificate.
		if err := os.Remove(regen); err != nil {
			return tls.Certificate{}, fmt.Errorf("remove %s: %w", regen, err)
		}
	} else if b, err := os.ReadFile(path); err == nil {
		var f dynamicCertFile
		if json.Unmarshal(b, &f) == nil {
			if c, err := tls.X509KeyPair(f.Data.Cert, f.Data.Key); err == nil && servingCertUsable(c, n.version) {
				n.logK3s("info", "Active TLS secret / (ver=) (count %d): %s", servingCount(c), servingAnnotations(c))
				return c, nil
			}
		}
	}
	certPEM, keyPEM, err := servingCert(n, cas[k3s.PathServerCA], cas[k3s.PathServerCAKey])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue the supervisor serving certificate: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeDynamicCert(path, c, ""); err != nil {
		return tls.Certificate{}, err
	}
	leaf := c.Leaf
	n.logK3s("info", "certificate %s signed by %s: notBefore=%s notAfter=%s", leaf.Subject, leaf.Issuer, leaf.NotBefore.UTC(), leaf.NotAfter.UTC())
	n.logK3s("info", "Active TLS secret / (ver=) (count %d): %s", servingCount(c), servingAnnotations(c))
	return c, nil
}

// servingCertUsable: dynamiclistener renews a certificate that expires
// within the release's renewal window (ExpirationDaysCheck is K3s's
// CertificateRenewDays: k3s.RenewDays); the CA that signed it does not
// matter.
func servingCertUsable(c tls.Certificate, v k3s.Version) bool {
	return c.Leaf != nil && time.Until(c.Leaf.NotAfter) > time.Duration(k3s.RenewDays(v))*24*time.Hour
}

// publish schedules the sync of n's start with the secret: once the
// start completed and Options.ServingCertSyncDelay later, as K3s starts
// the secret controller once its apiserver answers. c is what the start
// serves (cached or newly issued).
func (s *servingSecret) publish(n *node, c tls.Certificate) {
	sup := n.runningSupervisor()
	if sup == nil {
		return
	}
	go func() {
		select {
		case <-sup.readyCh:
		case <-sup.done:
			return
		}
		t := time.NewTimer(s.l.opts.ServingCertSyncDelay)
		defer t.Stop()
		select {
		case <-t.C:
			s.sync(n, sup, c)
		case <-sup.done:
		}
	}()
}

// sync is a server's first sync with the secret: it creates the secret,
// finds it equal, or races it (see the top of this file). Then n and every
// other synced running server serve what the secret holds.
func (s *servingSecret) sync(n *node, sup *supervisor, own tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sup.closed.Load() || n.runningSupervisor() != sup {
		return
	}
	switch {
	case s.ver == 0:
		s.write(n, own, "Creating new TLS secret for kube-system/k3s-serving")
	case sameLeaf(s.cur, own):
		n.logK3s("info", "Active TLS secret kube-system/k3s-serving (ver=%d) (count %d): %s", 300+s.ver, servingCount(own), servingAnnotations(own))
	default:
		prev := s.cur
		s.write(n, own, "Updating TLS secret for kube-system/k3s-serving")
		if s.lose[n.name] > 0 {
			s.lose[n.name]--
			s.write(n, prev, "Updating TLS secret for kube-system/k3s-serving")
		}
	}
	sup.synced.Store(true)
	ver := s.ver
	cur := s.cur
	if !sup.adopt(cur, strconv.Itoa(300+ver)) {
		// Its own certificate stayed: the cache now carries the version.
		_ = writeDynamicCert(filepath.Join(sup.sdHost, "tls", "dynamic-cert.json"), cur, strconv.Itoa(300+ver))
	}
	for _, o := range s.l.nodes {
		if o == n || !o.isServer() {
			continue
		}
		osup := o.runningSupervisor()
		if osup == nil || !osup.synced.Load() {
			continue
		}
		time.AfterFunc(servingAdoptDelay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.ver == ver && osup.adopt(cur, strconv.Itoa(300+ver)) {
				o.logK3s("info", "Active TLS secret kube-system/k3s-serving (ver=%d) (count %d): %s", 300+ver, servingCount(cur), servingAnnotations(cur))
			}
		})
	}
}

// write puts c in the secret as n does, logging as K3s does.
func (s *servingSecret) write(n *node, c tls.Certificate, what string) {
	s.ver++
	s.cur = c
	n.logK3s("info", "%s (count: %d): %s", what, servingCount(c), servingAnnotations(c))
	n.logK3s("info", "Active TLS secret kube-system/k3s-serving (ver=%d) (count %d): %s", 300+s.ver, servingCount(c), servingAnnotations(c))
}

// LoseServingRace makes the next times syncs of node with the
// kube-system/k3s-serving secret that find a certificate other than the
// node's own end with the secret's previous certificate: the node and every
// running server then serve that one, whatever CA signed it. On real K3s
// this is timing (5 of 35 measured syncs); a test uses it to
// make the outcome certain. times <= 0 clears it.
func (l *Lab) LoseServingRace(nodeName string, times int) error {
	n, ok := l.byName[nodeName]
	if !ok || !n.isServer() {
		return fmt.Errorf("lab: no server %q (nodes: %s)", nodeName, strings.Join(l.nodeNames(), ", "))
	}
	s := l.serving
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose == nil {
		s.lose = map[string]int{}
	}
	s.lose[nodeName] = max(times, 0)
	return nil
}

// sameLeaf reports whether a and b are the same certificate.
func sameLeaf(a, b tls.Certificate) bool {
	return len(a.Certificate) > 0 && len(b.Certificate) > 0 && bytes.Equal(a.Certificate[0], b.Certificate[0])
}

// writeDynamicCert writes c to path as dynamiclistener's file storage
// does, with the secret's resourceVersion ver ("" before the first sync).
func writeDynamicCert(path string, c tls.Certificate, ver string) error {
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("serving certificate: private key %T, want ECDSA", c.PrivateKey)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	var f dynamicCertFile
	f.Kind, f.APIVersion, f.Type = "Secret", "v1", "kubernetes.io/tls"
	f.Metadata.Name, f.Metadata.Namespace, f.Metadata.ResourceVersion = "k3s-serving", "kube-system", ver
	f.Metadata.Annotations = servingAnnotationMap(c)
	f.Data.Cert, f.Data.Key = chain, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return writeFile(path, b, 0o600)
}

// runningSupervisor is the supervisor of the node's current K3s process.
func (n *node) runningSupervisor() *supervisor {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return nil
	}
	return p.sup
}

// servingAnnotationMap is dynamiclistener's annotations of a certificate:
// one listener.cattle.io/cn-<name> per SAN and the SHA-1 fingerprint.
func servingAnnotationMap(c tls.Certificate) map[string]string {
	m := map[string]string{}
	leaf := c.Leaf
	if leaf == nil {
		return m
	}
	add := func(v string) {
		k := strings.ReplaceAll(v, ":", "_")
		if v == "::1" {
			k = "__1-f16284"
		}
		m["listener.cattle.io/cn-"+k] = v
	}
	for _, ip := range leaf.IPAddresses {
		add(ip.String())
	}
	for _, d := range leaf.DNSNames {
		add(d)
	}
	sum := sha1.Sum(leaf.Raw) //nolint:gosec // fingerprint, as dynamiclistener computes it
	m["listener.cattle.io/fingerprint"] = "SHA1=" + strings.ToUpper(hex.EncodeToString(sum[:]))
	return m
}

func servingCount(c tls.Certificate) int {
	if c.Leaf == nil {
		return 0
	}
	return len(c.Leaf.IPAddresses) + len(c.Leaf.DNSNames)
}

// servingAnnotations renders the annotations as Go prints the map.
func servingAnnotations(c tls.Certificate) string {
	m := servingAnnotationMap(c)
	keys := sortedKeys(m)
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+":"+m[k])
	}
	return "map[" + strings.Join(parts, " ") + "]"
}

// servingCert issues the supervisor's serving certificate (CN k3s, O k3s)
// from the server CA. Its SANs are those the k3s-serving secret
// accumulates in a cluster: every server's address and name, so that the
// certificate one server wrote serves on every server.
func servingCert(n *node, serverCA, serverCAKey []byte) (certPEM, keyPEM []byte, err error) {
	ca, err := loadCAPair(serverCA, serverCAKey)
	if err != nil {
		return nil, nil, err
	}
	ips := []net.IP{net.ParseIP("10.43.0.1"), net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	dns := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	for _, s := range n.lab.nodes {
		if s.isServer() {
			ips = append(ips, net.ParseIP(s.ip))
			dns = append(dns, s.name)
		}
	}
	return ca.issueServing("k3s", []string{"k3s"}, ips, dns, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, serverCA)
}
