package metrics

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/google/renameio/v2"
)

// Family is one metric of a Prometheus text-format file: a gauge
// with its help text and samples. caretaker writes such files for
// node_exporter's textfile collector (`caretaker check --metrics-file`).
type Family struct {
	Name    string
	Help    string
	Type    string // "gauge" (default) or "counter"
	Samples []Sample
}

// Sample is one value of a metric with its labels.
type Sample struct {
	Labels map[string]string
	Value  float64
}

var (
	metricNameRe = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRe  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Format renders families in the Prometheus text exposition format
// (version 0.0.4), families and samples in a stable order.
func Format(families []Family) ([]byte, error) {
	var b bytes.Buffer
	seen := map[string]bool{}
	for _, f := range families {
		if !metricNameRe.MatchString(f.Name) {
			return nil, fmt.Errorf("metric name %q is not valid", f.Name)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("metric %s given twice", f.Name)
		}
		seen[f.Name] = true
		typ := f.Type
		if typ == "" {
			typ = "gauge"
		}
		if typ != "gauge" && typ != "counter" {
			return nil, fmt.Errorf("metric %s: type %q is not supported", f.Name, typ)
		}
		fmt.Fprintf(&b, "# HELP %s %s\n", f.Name, escapeHelp(f.Help))
		fmt.Fprintf(&b, "# TYPE %s %s\n", f.Name, typ)
		lines := make([]string, 0, len(f.Samples))
		for _, s := range f.Samples {
			keys := make([]string, 0, len(s.Labels))
			for k := range s.Labels {
				if !labelNameRe.MatchString(k) || strings.HasPrefix(k, "__") {
					return nil, fmt.Errorf("metric %s: label name %q is not valid", f.Name, k)
				}
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var l strings.Builder
			l.WriteString(f.Name)
			if len(keys) > 0 {
				l.WriteByte('{')
				for i, k := range keys {
					if i > 0 {
						l.WriteByte(',')
					}
					fmt.Fprintf(&l, "%s=\"%s\"", k, escapeLabel(s.Labels[k]))
				}
				l.WriteByte('}')
			}
			l.WriteByte(' ')
			l.WriteString(formatFloat(s.Value))
			lines = append(lines, l.String())
		}
		sort.Strings(lines)
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

// WriteFile writes families to path atomically (a temporary file in
// the same directory renamed over path), so the textfile collector never
// reads a half-written file. The file is 0644.
func WriteFile(path string, families []Family) error {
	data, err := Format(families)
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	if err := renameio.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write metrics file %s: %w", path, err)
	}
	return nil
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64) // whole numbers (timestamps, seconds) without an exponent
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
