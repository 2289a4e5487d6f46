package k3s

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	fixtureOnce sync.Once
	fixtureCAs  map[string][]byte
	fixtureErr  error
	// fixtureNow is shortly before the real clock: K3s verifies chains at
	// the current time, so generated CAs must already be valid.
	fixtureNow = time.Now().Add(-10 * time.Minute).Truncate(time.Second).UTC()
)

// clusterCAs is one CA set shared by the tests (RSA generation is slow).
func clusterCAs(t *testing.T) map[string][]byte {
	t.Helper()
	fixtureOnce.Do(func() { fixtureCAs, fixtureErr = GenerateClusterCAs(fixtureNow, "secret") })
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	out := map[string][]byte{}
	for k, v := range fixtureCAs {
		out[k] = v
	}
	return out
}

func mustCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	c, err := ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerateClusterCAs(t *testing.T) {
	// golden files.txt: first start 2026-11-27T14:30:38Z.
	cas, err := GenerateClusterCAs(time.Date(2026, 11, 27, 14, 30, 38, 0, time.UTC), "K10"+hash64+"::server:secret")
	if err != nil {
		t.Fatal(err)
	}
	wantCN := map[string]string{
		PathServerCA:        "k3s-server-ca@1795789838",
		PathClientCA:        "k3s-client-ca@1795789838",
		PathRequestHeaderCA: "k3s-request-header-ca@1795789838",
		PathETCDServerCA:    "etcd-server-ca@1795789838",
		PathETCDPeerCA:      "etcd-peer-ca@1795789838",
	}
	for p, cn := range wantCN {
		certs := mustCerts(t, cas[p])
		c := certs[0]
		if len(certs) != 1 || c.Subject.CommonName != cn || c.Issuer.CommonName != cn {
			t.Errorf("%s: %d certs, subject %q issuer %q; want one self-signed %q", p, len(certs), c.Subject.CommonName, c.Issuer.CommonName, cn)
		}
		// golden files.txt: notBefore 13:30:38 (1 h backdated), notAfter 2036-11-24 13:30:38.
		if !c.NotBefore.Equal(time.Date(2026, 11, 27, 13, 30, 38, 0, time.UTC)) || !c.NotAfter.Equal(time.Date(2036, 11, 24, 13, 30, 38, 0, time.UTC)) {
			t.Errorf("%s: validity %v - %v", p, c.NotBefore, c.NotAfter)
		}
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || len(c.AuthorityKeyId) != 0 || len(c.SubjectKeyId) == 0 {
			t.Errorf("%s: IsCA %v usage %v AKI %x SKI %x", p, c.IsCA, c.KeyUsage, c.AuthorityKeyId, c.SubjectKeyId)
		}
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: want EC P-256 key", p)
		}
		keyPath := strings.TrimSuffix(p, ".crt") + ".key"
		if !bytes.HasPrefix(cas[keyPath], []byte("-----BEGIN EC PRIVATE KEY-----")) || len(cas[keyPath]) != 227 {
			t.Errorf("%s: key is %d bytes, want a 227-byte EC PRIVATE KEY", keyPath, len(cas[keyPath]))
		}
		if _, err := loadCA(cas, p, keyPath); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	keys, err := parsePrivateKeys(cas[PathServiceKey])
	if err != nil || !bytes.HasPrefix(cas[PathServiceKey], []byte("-----BEGIN RSA PRIVATE KEY-----")) {
		t.Fatalf("service.key: %v", err)
	}
	if rk, ok := keys[0].(*rsa.PrivateKey); !ok || rk.N.BitLen() != 2048 {
		t.Errorf("service.key: want RSA 2048")
	}
	// golden files.txt: passwd 59 bytes for password "secret"; ipsec.psk 97.
	if got := string(cas[PathPasswd]); got != "secret,node,node,k3s:agent\nsecret,server,server,k3s:server\n" || len(got) != 59 {
		t.Errorf("passwd = %q", got)
	}
	if len(cas[PathIPSECKey]) != 97 || cas[PathIPSECKey][96] != '\n' {
		t.Errorf("ipsec.psk is %d bytes", len(cas[PathIPSECKey]))
	}
	ents, err := ParsePasswd(cas[PathPasswd])
	if err != nil || len(ents) != 2 || ents[1].User != "server" || ents[1].Role != "k3s:server" || ents[1].Password != "secret" {
		t.Errorf("ParsePasswd = %+v %v", ents, err)
	}
}

func TestGenerateClusterCAsPasswordForms(t *testing.T) {
	if testing.Short() {
		t.Log("short mode still runs this: it only checks the passwd file")
	}
	// A full token in --token gives its password part (passwd.EnsureUser).
	if got := string(PasswdFile("a,b", "n")); got != "n,node,node,k3s:agent\n\"a,b\",server,server,k3s:server\n" {
		t.Errorf("csv quoting: %q", got)
	}
}

func TestIssueLeafCerts(t *testing.T) {
	cas := clusterCAs(t)
	now := fixtureNow.Add(13 * time.Second)
	files, err := IssueLeafCerts(cas, LeafOptions{NodeName: "n2", NodeIPs: []net.IP{net.ParseIP("127.1.0.2")}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range LeafFiles(LeafOptions{NodeName: "n2"}) {
		if len(files[p]) == 0 {
			t.Errorf("missing %s", p)
		}
	}
	type want struct {
		cn, org, ca string
		usages      []string
	}
	cases := map[string]want{
		"server/tls/client-admin.crt":                                    {"system:admin", "system:masters", PathClientCA, []string{"ClientAuth"}},
		"server/tls/client-supervisor.crt":                               {"system:k3s-supervisor", "system:masters", PathClientCA, []string{"ClientAuth"}},
		"server/tls/serving-kube-apiserver.crt":                          {"kube-apiserver", "", PathServerCA, []string{"ServerAuth"}},
		"server/tls/kube-controller-manager/kube-controller-manager.crt": {"kube-controller-manager", "", PathServerCA, []string{"ServerAuth"}},
		"server/tls/client-auth-proxy.crt":                               {"system:auth-proxy", "", PathRequestHeaderCA, []string{"ClientAuth"}},
		"server/tls/etcd/client.crt":                                     {"etcd-client", "", PathETCDServerCA, []string{"ClientAuth"}},
		"server/tls/etcd/server-client.crt":                              {"etcd-server", "", PathETCDServerCA, []string{"ServerAuth", "ClientAuth"}},
		"server/tls/etcd/peer-server-client.crt":                         {"etcd-peer", "", PathETCDPeerCA, []string{"ServerAuth", "ClientAuth"}},
		"agent/client-kubelet.crt":                                       {"system:node:n2", "system:nodes", PathClientCA, []string{"ClientAuth"}},
		"agent/serving-kubelet.crt":                                      {"n2", "", PathServerCA, []string{"ServerAuth"}},
		"agent/client-kube-proxy.crt":                                    {"system:kube-proxy", "", PathClientCA, []string{"ClientAuth"}},
		"agent/client-k3s-controller.crt":                                {"system:k3s-controller", "", PathClientCA, []string{"ClientAuth"}},
	}
	for p, w := range cases {
		certs := mustCerts(t, files[p])
		ca := mustCerts(t, cas[w.ca])
		leaf := certs[0]
		if len(certs) != 2 || !certs[1].Equal(ca[0]) {
			t.Errorf("%s: want leaf + CA bundle, got %d certs", p, len(certs))
		}
		if leaf.Subject.CommonName != w.cn || strings.Join(leaf.Subject.Organization, ",") != w.org {
			t.Errorf("%s: subject %v", p, leaf.Subject)
		}
		if got := strings.Join(certUsages(leaf), ","); got != strings.Join(w.usages, ",") {
			t.Errorf("%s: usages %s", p, got)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca[0])
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: does not verify against its CA: %v", p, err)
		}
		// golden files.txt n2: notBefore = start - 1 h, one year.
		if !leaf.NotBefore.Equal(now.Add(-time.Hour)) || !leaf.NotAfter.Equal(now.Add(-time.Hour).Add(365*24*time.Hour)) {
			t.Errorf("%s: validity %v - %v", p, leaf.NotBefore, leaf.NotAfter)
		}
		keyPath := strings.TrimSuffix(p, ".crt") + ".key"
		if _, err := loadCA(map[string][]byte{"c": files[p], "k": files[keyPath]}, "c", "k"); err != nil {
			t.Errorf("%s: key pair: %v", p, err)
		}
	}
	api := mustCerts(t, files["server/tls/serving-kube-apiserver.crt"])[0]
	for _, d := range []string{"kubernetes", "kubernetes.default.svc.cluster.local", "localhost", "n2"} {
		if !containsStr(api.DNSNames, d) {
			t.Errorf("apiserver SANs %v lack %s", api.DNSNames, d)
		}
	}
	if !containsIP(api.IPAddresses, "127.1.0.2") || !containsIP(api.IPAddresses, "127.0.0.1") {
		t.Errorf("apiserver IP SANs %v", api.IPAddresses)
	}
	kubelet := mustCerts(t, files["agent/serving-kubelet.crt"])[0]
	if !containsIP(kubelet.IPAddresses, "127.1.0.2") || !containsStr(kubelet.DNSNames, "n2") {
		t.Errorf("kubelet SANs %v %v", kubelet.DNSNames, kubelet.IPAddresses)
	}
	if !bytes.Equal(files["agent/server-ca.crt"], cas[PathServerCA]) || !bytes.Equal(files["server/tls/server-ca.nochain.crt"], cas[PathServerCA]) {
		t.Error("agent/server-ca.crt and server-ca.nochain.crt must equal the 1-cert server CA")
	}
	if !bytes.Equal(files["server/tls/service.current.key"], cas[PathServiceKey]) {
		t.Error("service.current.key must be the (only) service key")
	}
	agentOnly, err := IssueLeafCerts(cas, LeafOptions{NodeName: "a1", Agent: true, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for p := range agentOnly {
		if !strings.HasPrefix(p, "agent/") {
			t.Errorf("agent set has %s", p)
		}
	}
	if _, err := IssueLeafCerts(map[string][]byte{}, LeafOptions{NodeName: "x"}); err == nil {
		t.Error("want error without CAs")
	}
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func containsIP(l []net.IP, s string) bool {
	for _, x := range l {
		if x.Equal(net.ParseIP(s)) {
			return true
		}
	}
	return false
}

func TestRenewLeafCertsAfterRotation(t *testing.T) {
	cas := clusterCAs(t)
	opts := LeafOptions{NodeName: "n1", Now: fixtureNow}
	first, err := IssueLeafCerts(cas, opts)
	if err != nil {
		t.Fatal(err)
	}
	// A restart with nothing changed rewrites nothing.
	opts.Now = fixtureNow.Add(time.Hour)
	again, issued, err := RenewLeafCerts(cas, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 || len(issued) != 0 {
		t.Errorf("unchanged restart rewrote %d files, reissued %v", len(again), issued)
	}
	// After a rotation every leaf is reissued (AKI changed), keys are kept,
	// and notBefore is the new CA's notBefore (golden logs-b-rotate-ca.txt).
	rotAt := fixtureNow.Add(107 * time.Second)
	staged, err := GenerateRotation(cas, rotAt)
	if err != nil {
		t.Fatal(err)
	}
	newCAs := map[string][]byte{}
	for k, v := range cas {
		newCAs[k] = v
	}
	for k, v := range StagedFiles(staged) {
		newCAs[k] = v
	}
	opts.Now = rotAt.Add(2 * time.Minute)
	renewed, issued, err := RenewLeafCerts(newCAs, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != len(leafSpecs(opts)) {
		t.Errorf("reissued %d certs, want all %d", len(issued), len(leafSpecs(opts)))
	}
	admin := mustCerts(t, renewed["server/tls/client-admin.crt"])
	if len(admin) != 5 || admin[0].Issuer.CommonName != fmt.Sprintf("k3s-client-ca@%d", rotAt.Unix()) {
		t.Errorf("client-admin after rotation: %d certs, issuer %s", len(admin), admin[0].Issuer.CommonName)
	}
	if !admin[0].NotBefore.Equal(rotAt) {
		t.Errorf("notBefore %v, want the CA's %v", admin[0].NotBefore, rotAt)
	}
	if _, ok := renewed["server/tls/client-admin.key"]; ok {
		t.Error("existing key must be kept")
	}
	if cn := cnOf(renewed["server/tls/server-ca.nochain.crt"]); cn != fmt.Sprintf("k3s-server-ca@%d", rotAt.Unix()) {
		t.Errorf("nochain CN %s", cn)
	}
	// Near expiry (<= 120 days) renews one cert even with the same CA.
	withRenewed := map[string][]byte{}
	for k, v := range first {
		withRenewed[k] = v
	}
	opts.Now = mustCerts(t, first["server/tls/etcd/client.crt"])[0].NotAfter.Add(-119 * 24 * time.Hour)
	_, issued, err = RenewLeafCerts(cas, withRenewed, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) == 0 {
		t.Error("certs within 120 days of expiry must be renewed")
	}
	// The window is the release's: 100 days before expiry a release
	// with the 90-day window keeps them, one with 120 days renews them.
	opts.Now = mustCerts(t, first["server/tls/etcd/client.crt"])[0].NotAfter.Add(-100 * 24 * time.Hour)
	opts.RenewDays = LegacyCertificateRenewDays
	if _, issued, _ = RenewLeafCerts(cas, withRenewed, opts); len(issued) != 0 {
		t.Errorf("a 90-day release renewed %d certs 100 days before expiry", len(issued))
	}
	opts.RenewDays = CertificateRenewDays
	if _, issued, _ = RenewLeafCerts(cas, withRenewed, opts); len(issued) == 0 {
		t.Error("a 120-day release must renew certs 100 days before expiry")
	}
}

func TestGenerateRotationValidatesAndHashesNewRoot(t *testing.T) {
	cas := clusterCAs(t)
	rotAt := fixtureNow.Add(107 * time.Second)
	stamp := fmt.Sprint(rotAt.Unix())
	staged, err := GenerateRotation(cas, rotAt)
	if err != nil {
		t.Fatal(err)
	}
	if errs := ValidateCARotation(cas, staged); len(errs) != 0 {
		t.Fatalf("rotation must validate against the current CAs: %v", errors.Join(errs...))
	}
	for _, ct := range CATypes {
		certs := mustCerts(t, staged[ct.CertPath])
		slug := strings.ReplaceAll(ct.Name, "/", "-")
		want := []string{
			"k3s-" + slug + "-ca@" + stamp, "k3s-" + slug + "-root@" + stamp,
			"k3s-" + slug + "-root@" + stamp, cnOf(cas[ct.CertPath]),
		}
		wantIssuer := []string{want[1], want[1], cnOf(cas[ct.CertPath]), cnOf(cas[ct.CertPath])}
		if len(certs) != 4 {
			t.Fatalf("%s: %d certs", ct.CertPath, len(certs))
		}
		for i, c := range certs {
			if c.Subject.CommonName != want[i] || c.Issuer.CommonName != wantIssuer[i] {
				t.Errorf("%s cert %d: %s by %s", ct.CertPath, i, c.Subject.CommonName, c.Issuer.CommonName)
			}
		}
		if !certs[0].NotBefore.Equal(rotAt) || !certs[0].NotAfter.Equal(rotAt.Add(RotationCAValidity)) {
			t.Errorf("%s: notAfter %v", ct.CertPath, certs[0].NotAfter)
		}
		keys, err := parsePrivateKeys(staged[ct.KeyPath])
		if err != nil || len(keys) != 2 || !samePublicKey(keys[0].Public(), certs[0].PublicKey) || !samePublicKey(keys[1].Public(), certs[1].PublicKey) {
			t.Errorf("%s: want intermediate key then root key", ct.KeyPath)
		}
		if !bytes.Equal(staged["tls/"+ct.Name+"-root-old.pem"], cas[ct.CertPath]) {
			t.Errorf("%s: root-old.pem is not the current 1-cert CA", ct.Name)
		}
	}
	// golden files.txt section 3: generated 2026-11-27 14:32:25, notAfter 2046-11-22.
	if got := time.Date(2026, 11, 27, 14, 32, 25, 0, time.UTC).Add(RotationCAValidity); !got.Equal(time.Date(2046, 11, 22, 14, 32, 25, 0, time.UTC)) {
		t.Errorf("7300 days = %v", got)
	}
	// golden token.txt: the token hash is the DER of the new self-signed root.
	h, err := HashCA(staged[PathServerCA])
	if err != nil {
		t.Fatal(err)
	}
	root := mustCerts(t, staged[PathServerCA])[1]
	sum := sha256.Sum256(root.Raw)
	if h != hex.EncodeToString(sum[:]) {
		t.Errorf("HashCA(rotated) = %s, want DER hash of the new root %x", h, sum)
	}
	svc, err := parsePublicKeys(staged[PathServiceKey])
	old, _ := parsePublicKeys(cas[PathServiceKey])
	if err != nil || len(svc) != 2 || !samePublicKey(svc[1], old[0]) || samePublicKey(svc[0], old[0]) {
		t.Error("service.key must be a new key followed by the old one")
	}

	// A second rotation takes the 2nd cert and 2nd key as the old root.
	cur2 := map[string][]byte{}
	for k, v := range cas {
		cur2[k] = v
	}
	for k, v := range StagedFiles(staged) {
		cur2[k] = v
	}
	staged2, err := GenerateRotation(cur2, rotAt.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if errs := ValidateCARotationAt(cur2, staged2, rotAt.Add(2*time.Minute)); len(errs) != 0 {
		t.Fatalf("second rotation: %v", errors.Join(errs...))
	}
	c2 := mustCerts(t, staged2[PathServerCA])
	if !c2[3].Equal(root) {
		t.Errorf("second rotation's old root is %s, want the first rotation's root", c2[3].Subject.CommonName)
	}
	if _, err := GenerateRotation(map[string][]byte{}, rotAt); err == nil || !strings.Contains(err.Error(), "does not exist; cannot continue") {
		t.Errorf("missing current CA: %v", err)
	}
}

// golden logs-e-rotate-ca-refusals.txt e3: a complete unrelated set.
const e3Message = "ETCDServerCA: new CA cert cannot be verified using old CA chain: x509: certificate signed by unknown authority\n" +
	"ETCDPeerCA: new CA cert cannot be verified using old CA chain: x509: certificate signed by unknown authority\n" +
	"ServerCA: new CA cert cannot be verified using old CA chain: x509: certificate signed by unknown authority\n" +
	"ClientCA: new CA cert cannot be verified using old CA chain: x509: certificate signed by unknown authority\n" +
	"ServiceKey: old ServiceAccount signing key not in new ServiceAccount key list\n" +
	"RequestHeaderCA: new CA cert cannot be verified using old CA chain: x509: certificate signed by unknown authority"

func TestValidateCARotationRefusals(t *testing.T) {
	cas := clusterCAs(t)
	now := fixtureNow.Add(2 * time.Minute)
	good, err := GenerateRotation(cas, now)
	if err != nil {
		t.Fatal(err)
	}
	// e1: server-ca.crt cut to its first certificate.
	e1 := copyMap(good)
	e1[PathServerCA] = encodeCert(mustCerts(t, good[PathServerCA])[0])
	got := errors.Join(ValidateCARotationAt(cas, e1, now)...)
	if got == nil || got.Error() != "ServerCA: new CA bundle contains only a single certificate but should include root or intermediate CA certificates" {
		t.Errorf("e1: %v", got)
	}
	// e3: a custom set under an unrelated root, and a service.key without
	// the old key.
	custom, err := GenerateCustomRotation(map[string][]byte{}, nil, nil, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	got = errors.Join(ValidateCARotationAt(cas, custom, now)...)
	if got == nil || got.Error() != e3Message {
		t.Errorf("e3:\n got %v\nwant %s", got, e3Message)
	}
	// e2: only ServerCA unrelated (cert and its key replaced together).
	e2 := copyMap(good)
	e2[PathServerCA], e2[PathServerCAKey] = custom[PathServerCA], custom[PathServerCAKey]
	got = errors.Join(ValidateCARotationAt(cas, e2, now)...)
	if got == nil || got.Error() != "ServerCA: new CA cert cannot be verified using old CA chain: x509: certificate signed by unknown authority" {
		t.Errorf("e2: %v", got)
	}
	// A key that does not match its cert.
	bad := copyMap(good)
	bad[PathServerCAKey] = good[PathClientCAKey]
	got = errors.Join(ValidateCARotationAt(cas, bad, now)...)
	if got == nil || got.Error() != "ServerCAKey: new CA cert and key cannot be loaded as X590KeyPair: tls: private key does not match public key" {
		t.Errorf("key mismatch: %v", got)
	}
	// Only service.key staged: nothing else is validated; a fresh CA set
	// as staged files fails on the single certificate.
	fresh, err := GenerateClusterCAs(now, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if errs := ValidateCARotationAt(cas, map[string][]byte{PathServiceKey: good[PathServiceKey]}, now); len(errs) != 0 {
		t.Errorf("service key only: %v", errs)
	}
	errs := ValidateCARotationAt(cas, fresh, now)
	if len(errs) != 6 || !strings.HasPrefix(errs[0].Error(), "ETCDServerCA: new CA bundle contains only a single certificate") || errs[4].Error() != "ServiceKey: old ServiceAccount signing key not in new ServiceAccount key list" {
		t.Errorf("fresh set: %v", errors.Join(errs...))
	}
}

func TestGenerateCustomRotationSameRootKeepsHash(t *testing.T) {
	now := fixtureNow.Add(-time.Hour)
	a, err := GenerateCustomRotation(map[string][]byte{}, nil, nil, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	cur := map[string][]byte{}
	for k, v := range StagedFiles(a) {
		cur[k] = v
	}
	// Renew the leaf CAs under the same root and intermediate.
	b, err := GenerateCustomRotation(cur, a["tls/root-ca.pem"], a["tls/root-ca.key"], a["tls/intermediate-ca.pem"], a["tls/intermediate-ca.key"], now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if errs := ValidateCARotationAt(cur, b, now.Add(2*time.Hour)); len(errs) != 0 {
		t.Fatalf("same root must validate: %v", errors.Join(errs...))
	}
	ha, _ := HashCA(a[PathServerCA])
	hb, _ := HashCA(b[PathServerCA])
	rootSum := sha256.Sum256(mustCerts(t, a["tls/root-ca.pem"])[0].Raw)
	if ha != hb || ha != hex.EncodeToString(rootSum[:]) {
		t.Errorf("hash %s vs %s, want the root's DER hash", ha, hb)
	}
	certs := mustCerts(t, b[PathETCDPeerCA])
	if len(certs) != 3 || !strings.HasPrefix(certs[0].Subject.CommonName, "k3s-etcd-peer-ca@") || !strings.HasPrefix(certs[1].Subject.CommonName, "k3s-intermediate-ca@") {
		t.Errorf("etcd peer bundle: %d certs, %s", len(certs), certs[0].Subject.CommonName)
	}
	if _, ok := b["tls/root-ca.key"]; ok {
		t.Error("a supplied root key must not be copied into the staged set")
	}
	if _, err := GenerateCustomRotation(cur, a["tls/root-ca.pem"], nil, nil, nil, now); err == nil {
		t.Error("want error: intermediate needs the root key")
	}
}

func TestMergeRotation(t *testing.T) {
	ts := fixtureNow
	cur := BootstrapData{}
	for _, f := range BootstrapFiles {
		if !f.Optional {
			cur[f.Key] = File{Timestamp: ts, Content: []byte("old " + f.Key)}
		}
	}
	staged := BootstrapData{
		KeyServerCA:   {Timestamp: ts.Add(time.Minute), Content: []byte("new")},
		KeyPasswdFile: {Timestamp: ts.Add(time.Minute), Content: []byte{}},
		KeyClientCA:   {Timestamp: ts.Add(time.Minute), Content: []byte{}},
	}
	merged, logs := MergeRotation(cur, staged)
	if string(merged[KeyServerCA].Content) != "new" || string(merged[KeyClientCA].Content) != "old ClientCA" || string(merged[KeyPasswdFile].Content) != "old PasswdFile" {
		t.Errorf("merged = %v", merged)
	}
	if _, ok := merged[KeyEncryptionConfig]; ok {
		t.Error("absent optional key must stay absent")
	}
	joined := strings.Join(logs, "\n")
	for _, want := range []string{"Using current data for PasswdFile: cred/passwd", "Using current data for EncryptionConfig: ", "Using current data for ClientCA: tls/client-ca.crt"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs lack %q:\n%s", want, joined)
		}
	}
}

func copyMap(m map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestCAFingerprints(t *testing.T) {
	cas := clusterCAs(t)
	fp, err := CAFingerprints(cas[PathServerCA])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cas[PathServerCA])
	if fp.SHA256 != hex.EncodeToString(sum[:]) || fp.Subject != fmt.Sprintf("k3s-server-ca@%d", fixtureNow.Unix()) || fp.Certs != 1 {
		t.Errorf("fingerprint %+v", fp)
	}
	if _, err := CAFingerprints([]byte("junk")); err == nil {
		t.Error("want error")
	}
}

func BenchmarkGenerateClusterCAs(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateClusterCAs(time.Now(), "secret"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueLeafCerts(b *testing.B) {
	cas, err := GenerateClusterCAs(time.Now(), "secret")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := IssueLeafCerts(cas, LeafOptions{NodeName: "n1", Now: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerateRotation(b *testing.B) {
	cas, err := GenerateClusterCAs(time.Now(), "secret")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := GenerateRotation(cas, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLeafRenewalReasons(t *testing.T) {
	cas := clusterCAs(t)
	opts := LeafOptions{NodeName: "n1", NodeIPs: []net.IP{net.ParseIP("10.0.0.1")}, Now: fixtureNow}
	first, err := IssueLeafCerts(cas, opts)
	if err != nil {
		t.Fatal(err)
	}
	// A new node IP changes the SANs of the serving certs only.
	opts.NodeIPs = []net.IP{net.ParseIP("10.0.0.2")}
	_, issued, err := RenewLeafCerts(cas, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"server/tls/serving-kube-apiserver.crt", "server/tls/etcd/peer-server-client.crt", "server/tls/etcd/server-client.crt", "agent/serving-kubelet.crt"}
	if strings.Join(issued, ",") != strings.Join(want, ",") {
		t.Errorf("reissued %v, want %v", issued, want)
	}
	// A renamed node changes the kubelet certs' CN.
	opts.NodeIPs = []net.IP{net.ParseIP("10.0.0.1")}
	opts.NodeName = "n9"
	_, issued, err = RenewLeafCerts(cas, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !containsStr(issued, "agent/client-kubelet.crt") || containsStr(issued, "server/tls/client-admin.crt") {
		t.Errorf("rename reissued %v", issued)
	}
	// A corrupt key is replaced.
	broken := copyMap(first)
	broken["server/tls/client-admin.key"] = []byte("junk")
	files, issued, err := RenewLeafCerts(cas, broken, LeafOptions{NodeName: "n1", NodeIPs: []net.IP{net.ParseIP("10.0.0.1")}, Now: fixtureNow})
	if err != nil || !containsStr(issued, "server/tls/client-admin.crt") || len(files["server/tls/client-admin.key"]) == 0 {
		t.Errorf("corrupt key: %v %v", issued, err)
	}
}

func TestServiceKeyWithPublicKeyBlock(t *testing.T) {
	cas := clusterCAs(t)
	keys, _ := parsePrivateKeys(cas[PathServiceKey])
	der, err := x509.MarshalPKIXPublicKey(keys[0].Public())
	if err != nil {
		t.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	other, _ := newRSAKeyPEM()
	// The old key may appear as a public key in the new file.
	if err := validateServiceKey(cas[PathServiceKey], append(append([]byte{}, other...), pub...)); err != nil {
		t.Errorf("public key block: %v", err)
	}
	if err := validateServiceKey(cas[PathServiceKey], other); err == nil {
		t.Error("want refusal without the old key")
	}
	k, _ := parsePrivateKeys(other)
	if b, err := marshalPrivateKey(k[0]); err != nil || string(b) != string(other) {
		t.Error("marshalPrivateKey must round-trip a PKCS#1 key")
	}
}
