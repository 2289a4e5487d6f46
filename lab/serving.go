package lab

import (
	"crypto/sha1" //nolint:gosec // dynamiclistener's fingerprint annotation is SHA-1
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// The supervisor's serving certificate on :6443 behaves as K3s's
// dynamiclistener does (measured on a real 3-server cluster, issue 10):
//
//   - each server caches its certificate in SD/tls/dynamic-cert.json and
//     serves that cached certificate at every start, whatever CA signed it;
//   - it issues a new one, signed by the server CA on its disk at that
//     start, only when the cache is missing, unreadable or near expiry, or
//     when SD/tls/dynamic-cert-regenerate exists (consumed at that start;
//     `k3s certificate rotate` and the rotate-ca handler create it);
//   - the servers share it through the kube-system/k3s-serving secret:
//     every start writes its certificate there (last writer wins) and the
//     other running servers adopt it after a short delay
//     (Options.ServingCertSyncDelay), in memory only.

// servingSecret is the kube-system/k3s-serving secret of the lab's cluster.
type servingSecret struct {
	l   *Lab
	mu  sync.Mutex
	ver int // resourceVersion of the last write
}

// dynamicCertFile is SD/tls/dynamic-cert.json: a kubernetes.io/tls Secret
// as dynamiclistener's file storage writes it.
type dynamicCertFile struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Annotations map[string]string `json:"annotations,omitempty"`
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
	var f dynamicCertFile
	f.Kind, f.APIVersion, f.Type = "Secret", "v1", "kubernetes.io/tls"
	f.Metadata.Name, f.Metadata.Namespace = "k3s-serving", "kube-system"
	f.Metadata.Annotations = servingAnnotationMap(c)
	f.Data.Cert, f.Data.Key = certPEM, keyPEM
	b, err := json.Marshal(f)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFile(path, b, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	leaf := c.Leaf
	n.logK3s("info", "certificate %s signed by %s: notBefore=%s notAfter=%s", leaf.Subject, leaf.Issuer, leaf.NotBefore.UTC(), leaf.NotAfter.UTC())
	return c, nil
}

// servingCertUsable: dynamiclistener renews a certificate that expires
// within the release's renewal window (ExpirationDaysCheck is K3s's
// CertificateRenewDays: k3s.RenewDays); the CA that signed it does not
// matter.
func servingCertUsable(c tls.Certificate, v k3s.Version) bool {
	return c.Leaf != nil && time.Until(c.Leaf.NotAfter) > time.Duration(k3s.RenewDays(v))*24*time.Hour
}

// publish writes c to the secret as n's start does, and has every other
// running server adopt it after the sync delay unless a later write came
// first (last writer wins).
func (s *servingSecret) publish(n *node, c tls.Certificate) {
	s.mu.Lock()
	s.ver++
	ver := s.ver
	s.mu.Unlock()
	n.logK3s("info", "Updating TLS secret for kube-system/k3s-serving (count: %d): %s", servingCount(c), servingAnnotations(c))
	n.logK3s("info", "Active TLS secret kube-system/k3s-serving (ver=%d) (count %d): %s", 300+ver, servingCount(c), servingAnnotations(c))
	for _, o := range s.l.nodes {
		if o == n || !o.isServer() {
			continue
		}
		sup := o.runningSupervisor()
		if sup == nil {
			continue
		}
		time.AfterFunc(s.l.opts.ServingCertSyncDelay, func() {
			s.mu.Lock()
			latest := s.ver == ver
			s.mu.Unlock()
			if latest && sup.adopt(c) {
				o.logK3s("info", "Active TLS secret kube-system/k3s-serving (ver=%d) (count %d): %s", 300+ver, servingCount(c), servingAnnotations(c))
			}
		})
	}
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
