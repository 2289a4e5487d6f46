package main

// End-to-end tests of `caretaker check` (issue 6 "The check command")
// against the lab: exit 0 healthy, 4 for a stale CA or an expiring
// certificate, 1 for an unreachable node; JSON that names what is wrong;
// a metrics file the Prometheus text parser accepts.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/caretaker/caretaker/lab"
)

// selfSigned returns a PEM certificate for cn valid until notAfter.
func selfSigned(t *testing.T, cn string, isCA bool, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

type checkRun struct {
	cliResult
	rep checkReport
}

func (l *e2eLab) check(t *testing.T, inventory string, args ...string) checkRun {
	t.Helper()
	res := runCaretakerBinary(t, append([]string{"check", "-i", inventory, "-o", "json"}, args...)...)
	var cr checkRun
	cr.cliResult = res
	if err := json.Unmarshal([]byte(res.Stdout), &cr.rep); err != nil {
		t.Fatalf("check -o json: %v\nstdout: %s\nstderr: %s", err, res.Stdout, res.Stderr)
	}
	if cr.rep.ExitCode != res.Code {
		t.Errorf("the report says exit %d, the process exited %d", cr.rep.ExitCode, res.Code)
	}
	return cr
}

// parseMetrics parses a metrics file with the Prometheus text parser and
// returns value by "name{label=value,...}" for the labels asked.
func parseMetrics(t *testing.T, path string) map[string]float64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the Prometheus text parser rejects %s: %v\n%s", path, err, data)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, lp := range m.Label {
				if lp.GetName() == "cluster" {
					continue
				}
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			out[name+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestE2ECheck(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 1})
	inv := l.InventoryPath()
	metrics := filepath.Join(t.TempDir(), "textfile", "caretaker.prom")

	// Healthy.
	ok := l.check(t, inv, "--metrics-file", metrics)
	t.Logf("check of 3 servers + 1 agent took %s", ok.Took.Round(time.Millisecond))
	if ok.Code != exitOK || ok.rep.Status != "healthy" || !ok.rep.CA.Consistent || len(ok.rep.CA.Nodes) != 4 || len(ok.rep.Certificates) < 20 || len(ok.rep.Expiring) != 0 {
		t.Fatalf("healthy lab: exit %d, %s\n%s", ok.Code, ok.rep.Summary, ok.Stderr)
	}
	m := parseMetrics(t, metrics)
	if m["caretaker_ca_consistent{}"] != 1 || m["caretaker_check_success{}"] != 1 || m["caretaker_check_healthy{}"] != 1 || m["caretaker_node_reachable{node=agent-1}"] != 1 {
		t.Errorf("healthy metrics: %v", filterMetrics(m, "caretaker_c", "caretaker_node"))
	}
	adminKey := "caretaker_cert_expiry_seconds{file=client-admin.crt,node=server-1,subject=system:admin}"
	if v, has := m[adminKey]; !has || v < 300*86400 {
		t.Errorf("%s = %v (present %v), want about a year", adminKey, v, has)
	}
	table := runCaretakerBinary(t, "check", "-i", inv)
	if table.Code != 0 || !strings.Contains(table.Stdout, "cluster lab: HEALTHY") || !strings.Contains(table.Stdout, "server-2  server  ok") {
		t.Errorf("table output:\n%s", table.Stdout)
	}

	// One server with a stale CA on disk: drift, named.
	s2 := l.Node("server-2")
	caPath := l.HostPath("server-2", filepath.Join(s2.K3s.DataDir, "server", "tls", "server-ca.crt"))
	orig, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caPath, selfSigned(t, "k3s-server-ca@1000000000", true, time.Now().AddDate(10, 0, 0)), 0o644); err != nil {
		t.Fatal(err)
	}
	stale := l.check(t, inv, "--metrics-file", metrics)
	if stale.Code != exitDrift || stale.rep.Status != "drift" || fmt.Sprint(stale.rep.CA.Stale) != "[server-2]" {
		t.Errorf("stale CA on server-2: exit %d, stale %v: %s", stale.Code, stale.rep.CA.Stale, stale.rep.Summary)
	}
	if !strings.Contains(strings.Join(stale.rep.Problems, "\n"), "server-2: ") || !strings.Contains(stale.rep.Summary, "server-2") {
		t.Errorf("the report does not name server-2: %s %q", stale.rep.Summary, stale.rep.Problems)
	}
	if m := parseMetrics(t, metrics); m["caretaker_ca_consistent{}"] != 0 || m["caretaker_check_success{}"] != 1 || m["caretaker_check_healthy{}"] != 0 {
		t.Errorf("drift metrics: %v", filterMetrics(m, "caretaker_c"))
	}
	if err := os.WriteFile(caPath, orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// A certificate made to expire in 10 days: a finding with --warn-days
	// 30, not with --warn-days 5.
	s1 := l.Node("server-1")
	adminPath := l.HostPath("server-1", filepath.Join(s1.K3s.DataDir, "server", "tls", "client-admin.crt"))
	if err := os.WriteFile(adminPath, selfSigned(t, "system:admin", false, time.Now().Add(10*24*time.Hour)), 0o644); err != nil {
		t.Fatal(err)
	}
	soon := l.check(t, inv, "--warn-days", "30", "--metrics-file", metrics)
	if soon.Code != exitDrift || len(soon.rep.Expiring) != 1 {
		t.Fatalf("a certificate expiring in 10 days, --warn-days 30: exit %d, expiring %+v: %s", soon.Code, soon.rep.Expiring, soon.rep.Summary)
	}
	if e := soon.rep.Expiring[0]; e.Node != "server-1" || e.File != "client-admin.crt" || e.Status != "WARNING" || e.ResidualDays < 9 || e.ResidualDays > 10 {
		t.Errorf("expiring = %+v", e)
	}
	if m := parseMetrics(t, metrics); m[adminKey] > 10*86400 || m[adminKey] < 9*86400 || m["caretaker_certs_expiring{}"] != 1 || m["caretaker_ca_consistent{}"] != 1 {
		t.Errorf("expiry metrics: %s=%v %v", adminKey, m[adminKey], filterMetrics(m, "caretaker_c"))
	}
	if relaxed := l.check(t, inv, "--warn-days", "5"); relaxed.Code != exitOK {
		t.Errorf("the same with --warn-days 5: exit %d: %s", relaxed.Code, relaxed.rep.Summary)
	}

	// An unreachable node: health unknown, exit 1, the others still checked.
	data, err := os.ReadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprintf("port: %d\n", l.Node("agent-1").Port)
	if !bytes.Contains(data, []byte(port)) {
		t.Fatalf("the lab inventory has no %q", port)
	}
	broken := filepath.Join(l.Dir(), "inventory-unreachable.yaml")
	if err := os.WriteFile(broken, bytes.Replace(data, []byte(port), []byte("port: 1\n"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	down := l.check(t, broken, "--metrics-file", metrics)
	if down.Code != exitFailed || down.rep.Status != "unreachable" || len(down.rep.Unreachable) != 1 || down.rep.Unreachable[0].Node != "agent-1" {
		t.Errorf("agent-1 unreachable: exit %d, %+v: %s", down.Code, down.rep.Unreachable, down.rep.Summary)
	}
	if !down.rep.CA.Checked || len(down.rep.CA.Nodes) != 3 {
		t.Errorf("the reachable nodes were not checked: %+v", down.rep.CA)
	}
	if m := parseMetrics(t, metrics); m["caretaker_node_reachable{node=agent-1}"] != 0 || m["caretaker_node_reachable{node=server-1}"] != 1 || m["caretaker_check_success{}"] != 0 {
		t.Errorf("unreachable metrics: %v", filterMetrics(m, "caretaker_node", "caretaker_check"))
	}

	// Read-only: the check changed no file on any node.
	before := map[string]treeSnapshot{}
	for _, n := range l.Nodes("") {
		before[n] = snapshotTree(t, l.NodeRoot(n))
	}
	l.check(t, inv)
	for _, n := range l.Nodes("") {
		if d := diffTrees(before[n], snapshotTree(t, l.NodeRoot(n))); len(d) > 0 {
			t.Errorf("check changed %s: %v", n, d)
		}
	}
}

func filterMetrics(m map[string]float64, prefixes ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out[k] = v
			}
		}
	}
	return out
}
