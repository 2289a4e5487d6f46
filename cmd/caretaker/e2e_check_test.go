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
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
