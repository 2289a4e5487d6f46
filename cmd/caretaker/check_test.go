package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner/metrics"
)

func baseReport() *checkReport {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	return &checkReport{
		Cluster: "lab", CheckedAt: now, WarnDays: 30, Nodes: []string{"s1", "s2", "a1"},
		CA: caReport{Checked: true, Consistent: true, Stale: []string{}, Nodes: []k3sops.Row{{Node: "s1", OK: true}, {Node: "s2", OK: true}, {Node: "a1", OK: true}}},
		Certificates: []k3sops.CertRow{
			{Node: "s2", File: "b.crt", Subject: "x", Expires: now.Add(400 * 24 * time.Hour), ResidualDays: 400, Status: "OK"},
			{Node: "s1", File: "a.crt", Subject: "y", Expires: now.Add(400 * 24 * time.Hour), ResidualDays: 400, Status: "OK"},
		},
		Expiring: []k3sops.CertRow{},
	}
}

func TestCheckReportExitCodes(t *testing.T) {
	rep := baseReport()
	finishReport(rep, 3)
	if rep.ExitCode != exitOK || rep.Status != "healthy" || rep.Certificates[0].Node != "s1" {
		t.Errorf("healthy: %d %s, first cert on %s", rep.ExitCode, rep.Summary, rep.Certificates[0].Node)
	}

	rep = baseReport()
	rep.CA.Consistent, rep.CA.Stale = false, []string{"s2"}
	rep.CA.Nodes[1] = k3sops.Row{Node: "s2", OK: false, Disk: "OLD k3s-server-ca@1", Problems: []string{"disk tls/server-ca.crt holds k3s-server-ca@1 (old)"}}
	finishReport(rep, 3)
	if rep.ExitCode != exitDrift || !strings.Contains(rep.Summary, "1 node(s) without the datastore's CA: s2") || rep.Problems[0] != "s2: disk tls/server-ca.crt holds k3s-server-ca@1 (old)" {
		t.Errorf("drift: %d %s %q", rep.ExitCode, rep.Summary, rep.Problems)
	}

	// A server whose CA is right but whose token does not open the
	// datastore would not come back from a restart: exit 1, not drift.
	rep = baseReport()
	rep.CA.Consistent, rep.CA.Stale = false, []string{"s1"}
	rep.CA.Nodes[0] = k3sops.Row{Node: "s1", OK: false, Datastore: "token", Disk: "ok", Live: "ok", Cacerts: "ok", Agent: "-", Problems: []string{"/var/lib/rancher/k3s/server/token is not the token the datastore is encrypted with"}}
	finishReport(rep, 3)
	if rep.ExitCode != exitFailed || rep.Status != "broken" || !strings.Contains(rep.Summary, "s1 would not come back from a restart: its token does not open the datastore") || strings.Contains(rep.Summary, "without the datastore's CA") {
		t.Errorf("token problem: %d %s", rep.ExitCode, rep.Summary)
	}

	// A server the datastore cannot be read through (its etcd endpoint):
	// what it sees cannot be told, exit 1; so is a stopped K3s, even with
	// drift elsewhere.
	rep = baseReport()
	rep.CA.Consistent, rep.CA.Stale = false, []string{"s2"}
	rep.CA.Nodes[1] = k3sops.Row{Node: "s2", OK: false, Datastore: "unreadable", Disk: "ok", Live: "ok", Cacerts: "ok", Agent: "-", Problems: []string{"s2 cannot read the datastore itself"}}
	finishReport(rep, 3)
	if rep.ExitCode != exitFailed || rep.Status != "unreachable" || !strings.Contains(rep.Summary, "the datastore could not be read through s2") {
		t.Errorf("unreadable through s2: %d %s %s", rep.ExitCode, rep.Status, rep.Summary)
	}
	rep = baseReport()
	rep.CA.Consistent, rep.CA.Stale = false, []string{"s1", "s2"}
	rep.CA.Nodes[0] = k3sops.Row{Node: "s1", OK: false, Disk: "OLD x", Live: "ok", Cacerts: "ok", Agent: "-"}
	rep.CA.Nodes[1] = k3sops.Row{Node: "s2", OK: false, Service: "inactive (dead)", Datastore: "unreadable", Disk: "ok", Live: "down: inactive (dead)", Cacerts: "down", Agent: "-"}
	finishReport(rep, 3)
	if rep.ExitCode != exitFailed || rep.Status != "down" || !strings.Contains(rep.Summary, "K3s is not running on s2 (inactive (dead))") || !strings.Contains(rep.Summary, "1 node(s) without the datastore's CA: s1") {
		t.Errorf("down s2 and stale s1: %d %s %s", rep.ExitCode, rep.Status, rep.Summary)
	}

	rep = baseReport()
	rep.Certificates[0].Status, rep.Certificates[0].ResidualDays = "WARNING", 10
	finishReport(rep, 3)
	if rep.ExitCode != exitDrift || len(rep.Expiring) != 1 || !strings.Contains(rep.Summary, "1 certificate(s) expired or expiring within 30 days") {
		t.Errorf("expiring: %d %s", rep.ExitCode, rep.Summary)
	}

	// A leaf K3s renews at its next start, expiring beyond --warn-days:
	// reported, not a finding (exit 0), in its own list and metric.
	rep = baseReport()
	rep.Certificates[0].Status, rep.Certificates[0].ResidualDays, rep.Certificates[0].RenewsAtRestart = "RENEWS-AT-RESTART", 100, true
	finishReport(rep, 3)
	if rep.ExitCode != exitOK || len(rep.Expiring) != 0 || len(rep.RenewAtRestart) != 1 || strings.Join(rep.RenewNodes, ",") != "s2" ||
		!strings.Contains(rep.Summary, "1 leaf certificate(s) renew at the next restart of K3s on s2") {
		t.Errorf("renews at restart: %d %s %v", rep.ExitCode, rep.Summary, rep.RenewNodes)
	}
	if text, _ := metrics.Format(checkMetrics(rep)); !strings.Contains(string(text), `caretaker_certs_renew_at_restart{cluster="lab"} 1`) {
		t.Errorf("metrics:\n%s", text)
	}
	var out strings.Builder
	printCheck(&out, rep)
	if !strings.Contains(out.String(), "renew at the next restart: 1 leaf certificate(s) on s2") {
		t.Errorf("text output:\n%s", out.String())
	}

	// Unreachable wins over drift: the findings are incomplete.
	rep = baseReport()
	rep.CA.Consistent, rep.CA.Stale = false, []string{"s2"}
	rep.CA.Nodes[1] = k3sops.Row{Node: "s2", OK: false, Disk: "OLD k3s-server-ca@1"}
	rep.Unreachable = []nodeProblem{{Node: "a1", Error: "node unreachable: connection refused"}}
	finishReport(rep, 3)
	if rep.ExitCode != exitFailed || rep.Status != "unreachable" || !strings.Contains(rep.Summary, "1 of 3 node(s) could not be checked (a1)") || !strings.Contains(rep.Summary, "s2") {
		t.Errorf("unreachable: %d %s", rep.ExitCode, rep.Summary)
	}
	rep = baseReport()
	rep.CA = caReport{Error: "etcd unreachable", Stale: []string{}}
	finishReport(rep, 3)
	if rep.ExitCode != exitFailed || !strings.Contains(rep.Summary, "CA consistency not checked") {
		t.Errorf("datastore unreachable: %d %s", rep.ExitCode, rep.Summary)
	}
}

func TestCheckMetrics(t *testing.T) {
	rep := baseReport()
	rep.Certificates = append(rep.Certificates, rep.Certificates[0]) // a bundle repeating a subject
	rep.Unreachable = []nodeProblem{{Node: "a1", Error: "down"}}
	finishReport(rep, 3)
	fams := checkMetrics(rep)
	data, err := metrics.Format(fams)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{
		`caretaker_cert_expiry_seconds{cluster="lab",file="a.crt",node="s1",subject="y"} 34560000`,
		`caretaker_node_reachable{cluster="lab",node="a1"} 0`,
		`caretaker_node_reachable{cluster="lab",node="s1"} 1`,
		`caretaker_check_success{cluster="lab"} 0`,
		`caretaker_ca_consistent{cluster="lab"} 1`,
		`caretaker_check_timestamp_seconds{cluster="lab"} ` + strconv.FormatInt(rep.CheckedAt.Unix(), 10) + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, `caretaker_cert_expiry_seconds{cluster="lab",file="b.crt"`); n != 1 {
		t.Errorf("the repeated subject gives %d series, want 1", n)
	}
}
