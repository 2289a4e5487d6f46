package metrics_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/caretaker/caretaker/runner/metrics"
)

func TestMetricsFileParses(t *testing.T) {
	fams := []metrics.Family{
		{Name: "caretaker_cert_expiry_seconds", Help: "Seconds until the certificate expires.\nNegative: expired.", Samples: []metrics.Sample{
			{Labels: map[string]string{"cluster": "lab", "node": "server-2", "file": "/var/lib/rancher/k3s/server/tls/client-ca.crt", "subject": `CN=k3s-client-ca@1700000000, O="quoted\path"`}, Value: 86400 * 3650},
			{Labels: map[string]string{"cluster": "lab", "node": "server-1", "file": "a.crt", "subject": "CN=x\nnewline"}, Value: -5},
		}},
		{Name: "caretaker_ca_consistent", Help: "1 when every node, the datastore and the live endpoints carry the same CA.", Samples: []metrics.Sample{{Labels: map[string]string{"cluster": "lab"}, Value: 1}}},
		{Name: "caretaker_check_success", Help: "1 when the check could reach every node.", Samples: []metrics.Sample{{Value: 0}}},
		{Name: "caretaker_inf", Samples: []metrics.Sample{{Value: math.Inf(1)}}},
	}
	path := filepath.Join(t.TempDir(), "textfile", "caretaker.prom")
	if err := metrics.WriteFile(path, fams); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the Prometheus parser rejects the file: %v\n%s", err, data)
	}
	exp := parsed["caretaker_cert_expiry_seconds"]
	if exp == nil || len(exp.Metric) != 2 || exp.GetType().String() != "GAUGE" || !strings.Contains(exp.GetHelp(), "Negative") {
		t.Fatalf("expiry family = %v", exp)
	}
	found := false
	for _, m := range exp.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["node"] == "server-2" {
			found = true
			if labels["subject"] != `CN=k3s-client-ca@1700000000, O="quoted\path"` || m.GetGauge().GetValue() != 86400*3650 {
				t.Errorf("server-2 sample = %v", m)
			}
		}
		if labels["node"] == "server-1" && (labels["subject"] != "CN=x\nnewline" || m.GetGauge().GetValue() != -5) {
			t.Errorf("server-1 sample = %v", m)
		}
	}
	if !found {
		t.Error("server-2 sample missing")
	}
	if v := parsed["caretaker_check_success"].Metric[0].GetGauge().GetValue(); v != 0 {
		t.Errorf("check_success = %v", v)
	}
	if v := parsed["caretaker_inf"].Metric[0].GetGauge().GetValue(); !math.IsInf(v, 1) {
		t.Errorf("inf = %v", v)
	}
	// Stable output: the same families give the same bytes.
	again, _ := metrics.Format(fams)
	if !bytes.Equal(again, data) {
		t.Error("FormatMetrics is not stable")
	}
	// No temporary file is left beside the target.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the metrics file", len(entries))
	}
}

func TestMetricsRejectsBadNames(t *testing.T) {
	for _, f := range []metrics.Family{
		{Name: "bad-name"},
		{Name: "ok", Samples: []metrics.Sample{{Labels: map[string]string{"bad-label": "x"}}}},
		{Name: "ok", Samples: []metrics.Sample{{Labels: map[string]string{"__reserved": "x"}}}},
		{Name: "ok", Type: "histogram"},
	} {
		if _, err := metrics.Format([]metrics.Family{f}); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	if _, err := metrics.Format([]metrics.Family{{Name: "a"}, {Name: "a"}}); err == nil {
		t.Error("a family given twice was accepted")
	}
}
