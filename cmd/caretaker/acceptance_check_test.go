package main

// Acceptance scenarios of `caretaker check` (accGroups): its rows against
// `k3s certificate check` on the node, its findings and exit codes, and
// check-certs.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

// k3sCheckRow is one certificate of `k3s certificate check --output json`.
type k3sCheckRow struct {
	Filename, Subject, Issuer, Status string
	ExpiryTime                        time.Time
}

func accCheckMatchesK3s(t *testing.T, l *e2eLab) {
	c := l.check(t, l.InventoryPath())
	if c.Code != exitOK {
		t.Fatalf("caretaker check: exit %d: %s", c.Code, c.rep.Summary)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range l.Nodes("") {
		out, errOut, code, err := l.Exec(ctx, n, "k3s certificate check --output json --data-dir "+l.Node(n).K3s.DataDir)
		if err != nil || code != 0 {
			t.Fatalf("%s: k3s certificate check: exit %d %v: %s", n, code, err, errOut)
		}
		var doc struct{ Certificates []k3sCheckRow }
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%s: k3s certificate check --output json: %v\n%s", n, err, out)
		}
		var want, got []string
		for _, r := range doc.Certificates {
			want = append(want, fmt.Sprintf("%s|%s|%s|%s|%s", r.Filename, r.Subject, r.Issuer, r.ExpiryTime.UTC().Format(time.RFC3339), r.Status))
		}
		for _, r := range c.rep.Certificates {
			if r.Node == n {
				got = append(got, fmt.Sprintf("%s|%s|%s|%s|%s", r.File, r.Subject, r.Issuer, r.Expires.UTC().Format(time.RFC3339), r.K3sStatus))
				if bad := statusMismatch(r); bad != "" {
					t.Errorf("%s: %s (%s): %s", n, r.File, r.Subject, bad)
				}
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		if strings.Join(want, "\n") != strings.Join(got, "\n") {
			t.Errorf("%s: caretaker check lists %d certificates, k3s certificate check %d; they differ:\ncaretaker:\n%s\nk3s:\n%s", n, len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
		} else {
			t.Logf("%s: %d certificates, identical to k3s certificate check", n, len(got))
		}
	}
}

// statusMismatch says how caretaker's status of a row contradicts what
// `k3s certificate check` says of it (k3s_status, the release's window):
// EXPIRED and NOT YET VALID are the same; K3s's WARNING on a leaf is a
// leaf K3s renews at its next start (RENEWS-AT-RESTART, or WARNING within
// --warn-days); K3s's OK is OK (or WARNING within a --warn-days longer
// than the window).
func statusMismatch(r k3sops.CertRow) string {
	switch {
	case r.K3sStatus == "EXPIRED" || r.K3sStatus == "NOT YET VALID":
		if r.Status != r.K3sStatus {
			return fmt.Sprintf("k3s says %s, caretaker %s", r.K3sStatus, r.Status)
		}
	case r.K3sStatus == "WARNING" && !r.CA:
		if !r.RenewsAtRestart || (r.Status != "RENEWS-AT-RESTART" && r.Status != "WARNING") {
			return fmt.Sprintf("k3s says WARNING (renewed at the next start), caretaker %s, renews_at_restart=%t", r.Status, r.RenewsAtRestart)
		}
	case r.K3sStatus == "OK":
		if r.RenewsAtRestart || (r.Status != "OK" && r.Status != "WARNING") {
			return fmt.Sprintf("k3s says OK, caretaker %s, renews_at_restart=%t", r.Status, r.RenewsAtRestart)
		}
	}
	return ""
}

// replaceNodeFile writes data over a node file and returns a func that
// puts the original back.
func (l *e2eLab) replaceNodeFile(t *testing.T, node, p string, data []byte) func() {
	t.Helper()
	host := l.HostPath(node, p)
	orig, err := os.ReadFile(host)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(host)
	if err := os.WriteFile(host, data, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(host, orig, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// The check command's findings: exit 0 healthy, 4 for a stale CA or an
// expiring certificate, 1 for an unreachable node; JSON that names what is
// wrong; a metrics file the Prometheus parser reads; no file changed.
func accCheckFindings(t *testing.T, l *e2eLab) {
	inv := l.InventoryPath()
	metrics := filepath.Join(t.TempDir(), "textfile", "caretaker.prom")
	all := l.Nodes("")
	last := all[len(all)-1]

	ok := l.check(t, inv, "--metrics-file", metrics)
	if ok.Code != exitOK || ok.rep.Status != "healthy" || !ok.rep.CA.Consistent || len(ok.rep.CA.Nodes) != len(all) || len(ok.rep.Expiring) != 0 {
		t.Fatalf("healthy cluster: exit %d, %s\n%s", ok.Code, ok.rep.Summary, ok.Stderr)
	}
	m := parseMetrics(t, metrics)
	if m["caretaker_ca_consistent{}"] != 1 || m["caretaker_check_success{}"] != 1 || m["caretaker_check_healthy{}"] != 1 || m["caretaker_node_reachable{node="+last+"}"] != 1 {
		t.Errorf("healthy metrics: %v", filterMetrics(m, "caretaker_c", "caretaker_node"))
	}

	sd := func(n string) string { return filepath.Join(l.Node(n).K3s.DataDir, "server") }
	restore := l.replaceNodeFile(t, "server-2", filepath.Join(sd("server-2"), "tls", "server-ca.crt"), selfSigned(t, "k3s-server-ca@1000000000", true, time.Now().AddDate(10, 0, 0)))
	stale := l.check(t, inv, "--metrics-file", metrics)
	restore()
	if stale.Code != exitDrift || stale.rep.Status != "drift" || fmt.Sprint(stale.rep.CA.Stale) != "[server-2]" {
		t.Errorf("stale CA on server-2: exit %d, stale %v: %s", stale.Code, stale.rep.CA.Stale, stale.rep.Summary)
	}
	if m := parseMetrics(t, metrics); m["caretaker_ca_consistent{}"] != 0 || m["caretaker_check_healthy{}"] != 0 {
		t.Errorf("drift metrics: %v", filterMetrics(m, "caretaker_c"))
	}

	restore = l.replaceNodeFile(t, "server-1", filepath.Join(sd("server-1"), "tls", "client-admin.crt"), selfSigned(t, "system:admin", false, time.Now().Add(10*24*time.Hour)))
	soon := l.check(t, inv, "--warn-days", "30")
	relaxed := l.check(t, inv, "--warn-days", "5")
	restore()
	if soon.Code != exitDrift || len(soon.rep.Expiring) != 1 || soon.rep.Expiring[0].File != "client-admin.crt" || soon.rep.Expiring[0].Status != "WARNING" {
		t.Errorf("a certificate expiring in 10 days, --warn-days 30: exit %d, expiring %+v: %s", soon.Code, soon.rep.Expiring, soon.rep.Summary)
	}
	if relaxed.Code != exitOK || len(relaxed.rep.RenewAtRestart) != 1 || relaxed.rep.RenewAtRestart[0].File != "client-admin.crt" {
		t.Errorf("the same with --warn-days 5: a leaf K3s renews at its next start, not a finding: exit %d, renew at restart %+v: %s", relaxed.Code, relaxed.rep.RenewAtRestart, relaxed.rep.Summary)
	}

	// A garbled server token: the datastore is read through another
	// server, the report says which, and names server-1's token: it
	// would not come back from a restart (exit 1, not drift).
	tokenPath := filepath.Join(sd("server-1"), "token")
	restore = l.replaceNodeFile(t, "server-1", tokenPath, []byte("K10dead::server:x\n"))
	garbled := l.check(t, inv)
	restore()
	if garbled.Code != exitFailed || garbled.rep.Status != "broken" || garbled.rep.CA.Via == "server-1" || garbled.rep.CA.Via == "" ||
		len(containsAll(strings.Join(garbled.rep.Problems, "\n"), "server-1: "+tokenPath, "cannot open the datastore at its next start", "would not come back from a restart")) > 0 {
		t.Errorf("garbled token on server-1: exit %d, via %q, problems %q: %s", garbled.Code, garbled.rep.CA.Via, garbled.rep.Problems, garbled.rep.Summary)
	}

	// A selector that matches nothing is bad input, not "HEALTHY: 0 nodes".
	if none := runCaretakerBinary(t, "check", "-i", inv, "--limit", "label:zone=nowhere"); none.Code != exitBadInput || !strings.Contains(none.Stderr, "selects no node") {
		t.Errorf("check --limit label:zone=nowhere: exit %d, stderr %q; want exit 2 saying it selects no node", none.Code, none.Stderr)
	}

	down := l.check(t, l.withNodePort(t, last, 1), "--metrics-file", metrics)
	if down.Code != exitFailed || down.rep.Status != "unreachable" || len(down.rep.Unreachable) != 1 || down.rep.Unreachable[0].Node != last {
		t.Errorf("%s unreachable: exit %d, %+v: %s", last, down.Code, down.rep.Unreachable, down.rep.Summary)
	}
	if m := parseMetrics(t, metrics); m["caretaker_node_reachable{node="+last+"}"] != 0 || m["caretaker_node_reachable{node=server-1}"] != 1 {
		t.Errorf("unreachable metrics: %v", filterMetrics(m, "caretaker_node"))
	}

	before := map[string]treeSnapshot{}
	for _, n := range all {
		before[n] = l.snapshotNode(n)
	}
	l.check(t, inv)
	for _, n := range all {
		if d := diffTrees(before[n], l.snapshotNode(n)); len(d) > 0 {
			t.Errorf("check changed %s: %v", n, d)
		}
	}
}

func accCheckCerts(t *testing.T, l *e2eLab) {
	res := l.runCaretaker("run", "check-certs", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("check-certs failed:\n%s", res.Describe())
	}
	// A stale server CA makes it fail and name the node.
	p := filepath.Join(l.Node("server-3").K3s.DataDir, "server", "tls", "server-ca.crt")
	restore := l.replaceNodeFile(t, "server-3", p, selfSigned(t, "k3s-server-ca@1000000000", true, time.Now().AddDate(10, 0, 0)))
	res = l.runCaretaker("run", "check-certs", "-i", l.InventoryPath(), "--yes", "--output", "json")
	restore()
	if res.Code != exitDrift || !strings.Contains(res.StepError("check", "server-1"), "server-3") {
		t.Errorf("check-certs with a stale CA on server-3: want exit 4 (drift) naming server-3: %s", res.Describe())
	}
}
