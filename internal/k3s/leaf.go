package k3s

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"path"
	"slices"
	"sort"
	"time"
)

// leafSpec is one leaf certificate K3s issues at start
// (deps.go genClientCerts/genServerCerts/genETCDCerts/genRequestHeaderCerts,
// and the agent's certs; golden files.txt).
type leafSpec struct {
	cert, key string // relative to DD
	caCert    string // CA cert path relative to SD
	caKey     string
	cn        string
	org       []string
	usages    []x509.ExtKeyUsage
	dns       []string
	ips       []net.IP
	agent     bool // lives under agent/
}

var (
	clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	bothAuth   = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// keyOnlyFiles are keys K3s creates on a server without a cert next to them.
var keyOnlyFiles = []string{
	"server/tls/client-kube-proxy.key",
	"server/tls/client-k3s-controller.key",
	"server/tls/client-kubelet.key",
	"server/tls/serving-kubelet.key",
}

// leafSpecs returns the leaf set for a node.
func leafSpecs(opts LeafOptions) []leafSpec {
	domain := opts.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	var sanDNS []string
	var sanIPs []net.IP
	addSAN := func(s string) {
		if ip := net.ParseIP(s); ip != nil {
			if !slices.ContainsFunc(sanIPs, ip.Equal) {
				sanIPs = append(sanIPs, ip)
			}
		} else if s != "" && !slices.Contains(sanDNS, s) {
			sanDNS = append(sanDNS, s)
		}
	}
	// K3s's config.SANs: --tls-san plus the node's own names and addresses.
	for _, s := range opts.SANs {
		addSAN(s)
	}
	for _, ip := range opts.NodeIPs {
		addSAN(ip.String())
	}
	for _, s := range []string{"127.0.0.1", "::1", "localhost", opts.NodeName, "10.43.0.1"} {
		addSAN(s)
	}
	local := []string{"localhost"}
	localIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	apiDNS := append([]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + domain}, sanDNS...)
	etcdDNS := append([]string{"kine.sock"}, sanDNS...)

	srv := func(name string) string { return "server/tls/" + name }
	specs := []leafSpec{
		{cert: srv("client-admin.crt"), key: srv("client-admin.key"), caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:admin", org: []string{"system:masters"}, usages: clientAuth},
		{cert: srv("client-supervisor.crt"), key: srv("client-supervisor.key"), caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:k3s-supervisor", org: []string{"system:masters"}, usages: clientAuth},
		{cert: srv("client-controller.crt"), key: srv("client-controller.key"), caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:kube-controller-manager", usages: clientAuth},
		{cert: srv("client-scheduler.crt"), key: srv("client-scheduler.key"), caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:kube-scheduler", usages: clientAuth},
		{cert: srv("client-kube-apiserver.crt"), key: srv("client-kube-apiserver.key"), caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:apiserver", org: []string{"system:masters"}, usages: clientAuth},
		{cert: srv("client-k3s-cloud-controller.crt"), key: srv("client-k3s-cloud-controller.key"), caCert: PathClientCA, caKey: PathClientCAKey, cn: "k3s-cloud-controller-manager", usages: clientAuth},
		{cert: srv("serving-kube-apiserver.crt"), key: srv("serving-kube-apiserver.key"), caCert: PathServerCA, caKey: PathServerCAKey, cn: "kube-apiserver", usages: serverAuth, dns: apiDNS, ips: sanIPs},
		{cert: srv("kube-scheduler/kube-scheduler.crt"), key: srv("kube-scheduler/kube-scheduler.key"), caCert: PathServerCA, caKey: PathServerCAKey, cn: "kube-scheduler", usages: serverAuth, dns: local, ips: localIPs},
		{cert: srv("kube-controller-manager/kube-controller-manager.crt"), key: srv("kube-controller-manager/kube-controller-manager.key"), caCert: PathServerCA, caKey: PathServerCAKey, cn: "kube-controller-manager", usages: serverAuth, dns: local, ips: localIPs},
		{cert: srv("client-auth-proxy.crt"), key: srv("client-auth-proxy.key"), caCert: PathRequestHeaderCA, caKey: PathRequestHeaderCAKey, cn: "system:auth-proxy", usages: clientAuth},
		{cert: srv("etcd/client.crt"), key: srv("etcd/client.key"), caCert: PathETCDServerCA, caKey: PathETCDServerCAKey, cn: "etcd-client", usages: clientAuth},
		{cert: srv("etcd/peer-server-client.crt"), key: srv("etcd/peer-server-client.key"), caCert: PathETCDPeerCA, caKey: PathETCDPeerCAKey, cn: "etcd-peer", usages: bothAuth, dns: etcdDNS, ips: sanIPs},
		{cert: srv("etcd/server-client.crt"), key: srv("etcd/server-client.key"), caCert: PathETCDServerCA, caKey: PathETCDServerCAKey, cn: "etcd-server", usages: bothAuth, dns: etcdDNS, ips: sanIPs},
	}
	kubeletIPs := append([]net.IP{}, opts.NodeIPs...)
	if !slices.ContainsFunc(kubeletIPs, net.ParseIP("127.0.0.1").Equal) {
		kubeletIPs = append(kubeletIPs, net.ParseIP("127.0.0.1"))
	}
	agent := []leafSpec{
		{cert: "agent/client-kubelet.crt", key: "agent/client-kubelet.key", caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:node:" + opts.NodeName, org: []string{"system:nodes"}, usages: clientAuth, agent: true},
		{cert: "agent/serving-kubelet.crt", key: "agent/serving-kubelet.key", caCert: PathServerCA, caKey: PathServerCAKey, cn: opts.NodeName, usages: serverAuth, dns: []string{opts.NodeName, "localhost"}, ips: kubeletIPs, agent: true},
		{cert: "agent/client-kube-proxy.crt", key: "agent/client-kube-proxy.key", caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:kube-proxy", usages: clientAuth, agent: true},
		{cert: "agent/client-k3s-controller.crt", key: "agent/client-k3s-controller.key", caCert: PathClientCA, caKey: PathClientCAKey, cn: "system:k3s-controller", usages: clientAuth, agent: true},
	}
	if opts.Agent {
		return agent
	}
	return append(specs, agent...)
}

// LeafFiles lists the DD-relative paths of the leaf certs and keys a node of
// this kind holds (opts.Agent selects the agent set), in K3s's issue order.
func LeafFiles(opts LeafOptions) []string {
	var out []string
	for _, s := range leafSpecs(opts) {
		out = append(out, s.cert, s.key)
	}
	if !opts.Agent {
		out = append(out, keyOnlyFiles...)
	}
	return out
}

// IssueLeafCerts issues every leaf certificate and key of a server (or,
// with opts.Agent, of an agent) from the CA set cas (keyed relative to SD,
// as GenerateClusterCAs returns). The result is keyed relative to the data
// dir DD ("server/tls/client-admin.crt", "agent/client-kubelet.crt", ...)
// and includes the derived files K3s writes at each start:
// server/tls/{server,client}-ca.nochain.crt, server/tls/service.current.key,
// agent/server-ca.crt and agent/client-ca.crt. Each cert file holds the
// leaf followed by the whole CA bundle (golden files.txt). Leaves are valid
// from max(Now-1h, CA notBefore) for 365 days (golden logs-b-rotate-ca.txt).
func IssueLeafCerts(cas map[string][]byte, opts LeafOptions) (map[string][]byte, error) {
	files, _, err := RenewLeafCerts(cas, nil, opts)
	return files, err
}

// RenewLeafCerts is what a node does at each start
// (k3s-ca-rotation.md §4 "Each server regenerates its own leaf certs";
// deps.go createClientCertKey): for every leaf it reissues the cert when
// the cert or key is missing, the cert is within 120 days of expiry, its
// CN/O/SANs changed, or its AKI differs from the current CA[0] SKI; existing
// keys are kept. cas is keyed relative to SD, existing relative to DD. It
// returns the files to write (new or changed content only, derived files
// included) and the DD-relative paths of the certs it (re)issued, in issue
// order.
func RenewLeafCerts(cas, existing map[string][]byte, opts LeafOptions) (map[string][]byte, []string, error) {
	if opts.NodeName == "" {
		return nil, nil, fmt.Errorf("issue leaf certificates: node name is empty")
	}
	r := &leafRenewal{cas: cas, existing: existing, opts: opts, now: opts.Now, out: map[string][]byte{}, loaded: map[string]caPair{}}
	if r.now.IsZero() {
		r.now = time.Now()
	}
	var issued []string
	for _, s := range leafSpecs(opts) {
		done, err := r.leaf(s)
		if err != nil {
			return nil, nil, err
		}
		if done {
			issued = append(issued, s.cert)
		}
	}
	if !opts.Agent {
		if err := r.serverFiles(); err != nil {
			return nil, nil, err
		}
	}
	// The agent fetches the bundles from /v1-k3s/{server,client}-ca.crt
	// (k3s-ca-rotation.md §7 "Agents").
	r.put("agent/server-ca.crt", cas[PathServerCA])
	r.put("agent/client-ca.crt", cas[PathClientCA])
	return r.out, issued, nil
}

// leafRenewal is one RenewLeafCerts: its inputs, the CAs loaded so far
// and the files to write.
type leafRenewal struct {
	cas, existing map[string][]byte
	opts          LeafOptions
	now           time.Time
	out           map[string][]byte
	loaded        map[string]caPair
}

// ca loads a CA pair of cas once.
func (r *leafRenewal) ca(certPath, keyPath string) (caPair, error) {
	if ca, ok := r.loaded[certPath]; ok {
		return ca, nil
	}
	ca, err := loadCA(r.cas, certPath, keyPath)
	if err != nil {
		return caPair{}, fmt.Errorf("issue leaf certificates: %w", err)
	}
	r.loaded[certPath] = ca
	return ca, nil
}

// put writes p unless it exists with that content already.
func (r *leafRenewal) put(p string, data []byte) {
	if old, ok := r.existing[p]; !ok || !bytes.Equal(old, data) {
		r.out[p] = data
	}
}

// leaf reissues one leaf certificate when it needs it (and its key when
// missing or unreadable), reporting whether it did.
func (r *leafRenewal) leaf(s leafSpec) (bool, error) {
	ca, err := r.ca(s.caCert, s.caKey)
	if err != nil {
		return false, err
	}
	keyPEM, haveKey := r.existing[s.key]
	var key crypto.Signer
	if haveKey {
		if ks, err := parsePrivateKeys(keyPEM); err == nil {
			key = ks[0]
		} else {
			haveKey = false
		}
	}
	if haveKey && !leafNeedsRenewal(r.existing[s.cert], s, ca.certs[0], r.now, r.opts.RenewDays) {
		return false, nil
	}
	if !haveKey {
		k, kp, err := newECKey()
		if err != nil {
			return false, err
		}
		key = k
		r.out[s.key] = kp
	}
	cert, err := signLeaf(s, key, ca, r.now, r.opts.Age)
	if err != nil {
		return false, err
	}
	r.put(s.cert, append(encodeCert(cert), ca.bundlePEM...))
	return true, nil
}

// serverFiles are a server's key-only files (made once) and the files
// derived from the CAs that K3s rewrites at each start (deps.go).
func (r *leafRenewal) serverFiles() error {
	for _, k := range keyOnlyFiles {
		if _, ok := r.existing[k]; ok {
			continue
		}
		_, kp, err := newECKey()
		if err != nil {
			return err
		}
		r.out[k] = kp
	}
	// Derived files rewritten at each start (deps.go).
	for _, d := range []struct{ src, dst string }{{PathServerCA, PathServerCANoChain}, {PathClientCA, PathClientCANoChain}} {
		certs, err := ParseCertsPEM(r.cas[d.src])
		if err != nil {
			return fmt.Errorf("issue leaf certificates: %s: %w", d.src, err)
		}
		r.put(path.Join(ServerDir, d.dst), encodeCert(certs[0]))
	}
	keys, err := parsePrivateKeys(r.cas[PathServiceKey])
	if err != nil {
		return fmt.Errorf("issue leaf certificates: %s: %w", PathServiceKey, err)
	}
	cur, err := marshalPrivateKey(keys[0])
	if err != nil {
		return err
	}
	r.put(path.Join(ServerDir, PathServiceCurrent), cur)
	return nil
}

// signLeaf issues one leaf for key, signed by ca.certs[0].
func signLeaf(s leafSpec, key crypto.Signer, ca caPair, now time.Time, age time.Duration) (*x509.Certificate, error) {
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	nb := now.Add(-Backdate)
	if nb.Before(ca.certs[0].NotBefore) {
		nb = ca.certs[0].NotBefore
	}
	if age > 0 {
		nb = now.Add(-age) // LeafOptions.Age: as issued that long ago
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.org},
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
		NotBefore:    nb.UTC(),
		NotAfter:     nb.Add(LeafValidity).UTC(),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  s.usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.certs[0], key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue leaf certificate %s (%s): %w", s.cert, s.cn, err)
	}
	return x509.ParseCertificate(der)
}

// leafNeedsRenewal applies K3s's reasons to reissue an existing leaf:
// missing or unparsable, within the release's renewal window of expiry
// (RenewDays), CN or O changed, SANs missing, or AKI != the CA's current
// SKI.
func leafNeedsRenewal(certPEM []byte, s leafSpec, ca *x509.Certificate, now time.Time, renewDays int) bool {
	if len(certPEM) == 0 {
		return true
	}
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return true
	}
	c := certs[0]
	if renewDays == 0 {
		renewDays = CertificateRenewDays
	}
	if c.NotAfter.Sub(now) <= time.Duration(renewDays)*24*time.Hour {
		return true
	}
	if c.Subject.CommonName != s.cn {
		return true
	}
	a, b := slices.Clone(c.Subject.Organization), slices.Clone(s.org)
	sort.Strings(a)
	sort.Strings(b)
	if !slices.Equal(slices.Compact(a), slices.Compact(b)) {
		return true
	}
	for _, d := range s.dns {
		if !slices.Contains(c.DNSNames, d) {
			return true
		}
	}
	for _, ip := range s.ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return true
		}
	}
	return !bytes.Equal(c.AuthorityKeyId, ca.SubjectKeyId)
}
