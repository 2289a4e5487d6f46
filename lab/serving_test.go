package lab_test

import (
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// waitServed waits until the server at addr serves the certificate with
// serial want, and fails after 10 s.
func waitServed(t *testing.T, node, addr string, want *x509.Certificate) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leaf := servedLeaf(t, addr)
		if leaf.SerialNumber.Cmp(want.SerialNumber) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s serves serial %X issued by %s, want %X issued by %s", node, leaf.SerialNumber, leaf.Issuer.CommonName, want.SerialNumber, want.Issuer.CommonName)
		}
	}
}

// TestServingRaceBringsOldCertBack reproduces what the real engine showed
// (rotate-ca, fixed release, 3 servers): every server restarted with
// SD/tls/dynamic-cert-regenerate serves a certificate of the new CA right
// after its start, but when its sync with the k3s-serving secret loses the
// race, the secret's previous certificate — the one of the OLD CA — comes
// back to it and to every server restarted before it, with one serial.
// A plain restart does not repair it (the cache follows the secret); a
// regenerate restart that wins the race does, on every server.
func TestServingRaceBringsOldCertBack(t *testing.T) {
	t.Parallel()
	// Long enough that each check right after a restart comes before that
	// server's sync, even on a loaded machine.
	const sync = time.Second
	l := startLab(t, lab.Options{Servers: 3, Version: "v1.32.3+k3s1", ServingCertSyncDelay: sync})
	c := connect(t, l)
	st := l.Status()
	addr := func(i int) string { return st.Nodes[i].Address }
	time.Sleep(2 * sync) // the servers of lab up synced: one certificate
	before := servedLeaf(t, addr(0))
	for i, s := range c.servers() {
		waitServed(t, s, addr(i), before)
	}
	oldCA, newCA := rotateCA(t, c)
	oldRoot, _ := k3s.ParseCertsPEM(oldCA)
	newCerts, _ := k3s.ParseCertsPEM(newCA)
	regen := filepath.Join(c.sd("server-1"), "tls", "dynamic-cert-regenerate")
	for _, s := range c.servers() {
		if err := l.LoseServingRace(s, 1); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range c.servers() {
		c.mustRun(s, "touch "+regen+" && systemctl restart k3s")
		// What caretaker's check right after the restart sees.
		if leaf := servedLeaf(t, addr(i)); leaf.Issuer.CommonName != newCerts[0].Subject.CommonName {
			t.Fatalf("%s right after its restart serves a certificate issued by %s, want the new CA %s", s, leaf.Issuer.CommonName, newCerts[0].Subject.CommonName)
		}
		if i < 2 {
			time.Sleep(2 * sync) // its sync happened before the next restart
		}
	}
	// server-3 still serves its own certificate; server-1 and server-2
	// serve the old CA's, the one from before the rotation.
	for i, s := range c.servers()[:2] {
		leaf := servedLeaf(t, addr(i))
		if leaf.SerialNumber.Cmp(before.SerialNumber) != 0 || leaf.Issuer.CommonName != oldRoot[0].Subject.CommonName {
			t.Errorf("%s serves serial %X issued by %s, want the pre-rotation %X issued by the OLD CA %s", s, leaf.SerialNumber, leaf.Issuer.CommonName, before.SerialNumber, oldRoot[0].Subject.CommonName)
		}
	}
	// Once server-3 synced (and lost too), it serves the old one as well.
	waitServed(t, "server-3", addr(2), before)
	j := c.journal("server-3")
	if n := strings.Count(j, "Updating TLS secret for kube-system/k3s-serving"); n < 2 {
		t.Errorf("server-3's journal has %d secret updates, want its own and the previous certificate's:\n%s", n, j)
	}

	// The cache follows the secret: a plain restart keeps the old one.
	var f struct {
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(c.read("server-1", filepath.Join(c.sd("server-1"), "tls", "dynamic-cert.json")), &f); err != nil {
		t.Fatal(err)
	}
	if f.Metadata.ResourceVersion == "" {
		t.Errorf("server-1's dynamic-cert.json has no resourceVersion after the sync")
	}
	c.mustRun("server-1", "systemctl restart k3s")
	time.Sleep(2 * sync)
	waitServed(t, "server-1", addr(0), before)

	// A regenerate restart that wins the race repairs every server.
	c.mustRun("server-2", "touch "+regen+" && systemctl restart k3s")
	fresh := servedLeaf(t, addr(1))
	if fresh.Issuer.CommonName != newCerts[0].Subject.CommonName {
		t.Fatalf("server-2 after a regenerate restart serves a certificate issued by %s", fresh.Issuer.CommonName)
	}
	for i, s := range c.servers() {
		waitServed(t, s, addr(i), fresh)
	}
}

// TestServingSyncWaitsForReady: a server ignores the secret until its
// start completed and its sync ran; until then it serves its own
// certificate even while the others adopt a newer one.
func TestServingSyncWaitsForReady(t *testing.T) {
	t.Parallel()
	const sync = time.Second
	l := startLab(t, lab.Options{Servers: 2, Version: "v1.32.3+k3s1", ServingCertSyncDelay: sync})
	c := connect(t, l)
	st := l.Status()
	time.Sleep(2 * sync)
	shared := servedLeaf(t, st.Nodes[0].Address)
	waitServed(t, "server-2", st.Nodes[1].Address, shared)
	regen := filepath.Join(c.sd("server-1"), "tls", "dynamic-cert-regenerate")
	c.mustRun("server-1", "touch "+regen+" && systemctl restart k3s")
	own := servedLeaf(t, st.Nodes[0].Address)
	if own.SerialNumber.Cmp(shared.SerialNumber) == 0 {
		t.Fatal("server-1 serves the shared certificate right after a regenerate restart")
	}
	// Before server-1's sync, server-2 has not seen it.
	if leaf := servedLeaf(t, st.Nodes[1].Address); leaf.SerialNumber.Cmp(shared.SerialNumber) != 0 {
		t.Errorf("server-2 serves %X before server-1 synced, want the shared %X", leaf.SerialNumber, shared.SerialNumber)
	}
	waitServed(t, "server-2", st.Nodes[1].Address, own)
	if !strings.Contains(c.journal("server-2"), "Active TLS secret kube-system/k3s-serving") {
		t.Errorf("server-2's journal does not say it adopted the certificate")
	}
}
