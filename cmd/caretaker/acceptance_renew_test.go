package main

// Acceptance scenario of renew-leaf-certs and the renewal window (issue 14,
// item 5), run on both backends through accGroups.
//
// A leaf certificate near expiry cannot come from K3s itself without
// faking the clock (it issues leaves for a year from now). The test makes
// one the way a long-running node has it: it re-signs the node's own leaf
// certificates with the cluster's own CA key (from the node's disk), same
// subject, SANs, key and issuer, only the validity moved back (issued 300
// days ago, 65 days left), and writes them over K3s's files. For K3s such
// a certificate differs from its own only by its expiry, so what renews it
// at the next start is the renewal window and nothing else: on the real
// engine that is real K3s's rule (its release's window, 120 days), on the
// simulator the simulator's.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// accRenewLeafCerts: aged leaves on server-2 (and agent-1 on the
// simulator) show as RENEWS-AT-RESTART in caretaker check (exit 0) and as
// WARNING in `k3s certificate check` on the node; renew-leaf-certs --check
// names exactly those nodes; renew-leaf-certs restarts them and no other,
// and every aged leaf then has a new serial and expires beyond the window.
func accRenewLeafCerts(t *testing.T, l *e2eLab) {
	due := map[string][]string{"server-2": l.clientLeaves(t, "server-2")}
	if len(l.Nodes(inventory.RoleAgent)) > 0 {
		due["agent-1"] = []string{filepath.Join(l.Node("agent-1").K3s.DataDir, "agent", "client-kubelet.crt")}
	}
	serials := map[string]string{}
	for node, files := range due {
		for _, f := range files {
			serials[node+" "+f] = l.ageLeaf(t, node, f, 300)
		}
	}
	invocations := map[string]string{}
	for _, n := range l.Nodes("") {
		invocations[n] = l.invocationID(n)
	}
	c := l.check(t, l.InventoryPath())
	renewOn := append([]string{}, c.rep.RenewNodes...)
	sort.Strings(renewOn)
	if c.Code != exitOK || strings.Join(renewOn, ",") != strings.Join(sortedKeys(due), ",") {
		t.Fatalf("caretaker check with aged leaves: exit %d, renew on %v, want exit 0 and %v: %s", c.Code, c.rep.RenewNodes, sortedKeys(due), c.rep.Summary)
	}
	l.assertK3sSaysWarning(t, "server-2", due["server-2"], c.rep.Certificates)

	plan := l.runCaretaker("run", "renew-leaf-certs", "-i", l.InventoryPath(), "--check", "--yes", "--output", "json")
	if plan.Code != 0 {
		t.Fatalf("renew-leaf-certs --check:\n%s", plan.Describe())
	}
	for _, n := range l.Nodes("") {
		says := strings.Contains(strings.Join(plan.Output(l.Nodes(inventory.RoleServer)[0]), "\n"), n+" restarts:")
		if _, want := due[n]; says != want {
			t.Errorf("renew-leaf-certs --check: %s restarts: %t, want %t", n, says, want)
		}
	}
	res := l.runCaretaker("run", "renew-leaf-certs", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("renew-leaf-certs:\n%s", res.Describe())
	}
	for _, n := range l.Nodes("") {
		_, restarted := due[n]
		if got := l.invocationID(n) != invocations[n]; got != restarted {
			t.Errorf("%s restarted: %t, want %t", n, got, restarted)
		}
	}
	window := time.Duration(c.rep.Certificates[0].RenewDays) * 24 * time.Hour
	for node, files := range due {
		for _, f := range files {
			cert := l.leafCert(t, node, f)
			if serialHex(cert) == serials[node+" "+f] {
				t.Errorf("%s %s: serial unchanged after renew-leaf-certs", node, f)
			}
			if time.Until(cert.NotAfter) <= window {
				t.Errorf("%s %s: expires %s, still within the %s window", node, f, cert.NotAfter, window)
			}
		}
	}
	l.mustCheck(t)
}

// clientLeaves are a server's certificates in SD/tls/client-*.crt that
// its client CA signed (client-auth-proxy is the request-header CA's).
func (l *e2eLab) clientLeaves(t *testing.T, node string) []string {
	t.Helper()
	tlsDir := filepath.Join(l.Node(node).K3s.DataDir, "server", "tls")
	ca, _ := l.clientCA(t)
	ms, _ := filepath.Glob(l.HostPath(node, filepath.Join(tlsDir, "client-*.crt")))
	var out []string
	for _, m := range ms {
		p := filepath.Join(tlsDir, filepath.Base(m))
		if c := l.leafCert(t, node, p); !c.IsCA && bytes.Equal(c.AuthorityKeyId, ca.SubjectKeyId) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no client certificates of the client CA in %s", node, tlsDir)
	}
	return out
}

// leafCert parses the first certificate of a node file.
func (l *e2eLab) leafCert(t *testing.T, node, p string) *x509.Certificate {
	t.Helper()
	certs, err := k3s.ParseCertsPEM(l.ReadNodeFile(node, p))
	if err != nil {
		t.Fatalf("%s %s: %v", node, p, err)
	}
	return certs[0]
}

// ageLeaf re-signs the first certificate of a node's leaf file with the
// cluster's client CA (key from server-1's disk) as if issued days ago,
// keeping everything else (subject, SANs, key, usages, the chain after
// it), and returns its old serial.
func (l *e2eLab) ageLeaf(t *testing.T, node, p string, days int) string {
	t.Helper()
	data := l.ReadNodeFile(node, p)
	block, rest := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s %s: no PEM", node, p)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, key := l.clientCA(t)
	if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) {
		t.Fatalf("%s %s is not signed by the client CA", node, p)
	}
	tmpl := *leaf
	tmpl.SerialNumber = new(big.Int).Add(leaf.SerialNumber, big.NewInt(1))
	tmpl.NotBefore = time.Now().Add(-time.Duration(days) * 24 * time.Hour)
	tmpl.NotAfter = tmpl.NotBefore.Add(k3s.LeafValidity)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, leaf.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	out := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), rest...)
	l.replaceNodeFile(t, node, p, out)
	return serialHex(leaf)
}

// clientCA is the cluster's client CA and its key, from server-1's disk.
func (l *e2eLab) clientCA(t *testing.T) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	sd := filepath.Join(l.Node("server-1").K3s.DataDir, "server")
	certs, err := k3s.ParseCertsPEM(l.ReadNodeFile("server-1", filepath.Join(sd, k3s.PathClientCA)))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(l.ReadNodeFile("server-1", filepath.Join(sd, k3s.PathClientCAKey)))
	if block == nil {
		t.Fatal("client-ca.key: no PEM")
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			t.Fatalf("client-ca.key: %v", err)
		}
	}
	return certs[0], key.(crypto.Signer)
}

// assertK3sSaysWarning: `k3s certificate check` on the node calls the aged
// files WARNING (K3s's own renewal window) and caretaker's rows agree.
func (l *e2eLab) assertK3sSaysWarning(t *testing.T, node string, files []string, rows []k3sops.CertRow) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut, code, err := l.Exec(ctx, node, "k3s certificate check --output json --data-dir "+l.Node(node).K3s.DataDir)
	if err != nil || code != 0 {
		t.Fatalf("%s: k3s certificate check: exit %d %v: %s", node, code, err, errOut)
	}
	var doc struct{ Certificates []k3sCheckRow }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base, cn := filepath.Base(f), l.leafCert(t, node, f).Subject.CommonName
		for _, r := range doc.Certificates {
			if r.Filename == base && r.Subject == cn && r.Status != "WARNING" {
				t.Errorf("%s %s: k3s certificate check says %s for a certificate expiring in 65 days", node, base, r.Status)
			}
		}
		for _, r := range rows {
			if r.Node == node && r.File == base && r.Subject == cn && (r.Status != "RENEWS-AT-RESTART" || r.K3sStatus != "WARNING" || !r.RenewsAtRestart) {
				t.Errorf("%s %s: caretaker says %s (k3s_status %s, renews_at_restart %t), want RENEWS-AT-RESTART (WARNING, true)", node, base, r.Status, r.K3sStatus, r.RenewsAtRestart)
			}
		}
	}
}

func serialHex(c *x509.Certificate) string { return strings.ToUpper(c.SerialNumber.Text(16)) }

func sortedKeys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
