// Package metrics writes Prometheus text-format metrics files (for the
// node_exporter textfile collector) from caretaker's run and check results.
package metrics
