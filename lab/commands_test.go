package lab_test

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// rotate-ca refusals as K3s answers them (golden logs-e): the CLI sees a
// 500 with a certificate error ID and says "see server log for details";
// the server logs the validation error; nothing reaches the datastore.
func TestRotateCARefusesSingleCertBundle(t *testing.T) {
	l := startLab(t, lab.Options{Servers: 1})
	c := connect(t, l)
	before := datastoreFiles(t, l.Status(), c.tokenPassword("server-1"))
	dir, staged := c.stageRotation("server-1")
	certs, err := k3s.ParseCertsPEM(staged[k3s.PathServerCA])
	if err != nil || len(certs) < 2 {
		t.Fatalf("staged bundle: %v", err)
	}
	first := staged[k3s.PathServerCA][:strings.Index(string(staged[k3s.PathServerCA]), "-----END CERTIFICATE-----")+len("-----END CERTIFICATE-----\n")]
	c.write("server-1", filepath.Join(dir, k3s.PathServerCA), first)
	_, errs, code := c.run("server-1", "k3s certificate rotate-ca --path "+dir)
	if code != 1 || !regexp.MustCompile(`level=fatal msg="Error: see server log for details: Internal error occurred: certificate error ID \d+"`).MatchString(errs) {
		t.Fatalf("rotate-ca: exit %d, stderr %q", code, errs)
	}
	j := c.journal("server-1")
	if !regexp.MustCompile(`level=error msg="certificate error ID \d+: failed to validate new CA certificates and keys: ServerCA: new CA bundle contains only a single certificate but should include root or intermediate CA certificates"`).MatchString(j) {
		t.Errorf("server journal lacks the validation error:\n%s", j)
	}
	after := datastoreFiles(t, l.Status(), c.tokenPassword("server-1"))
	if !sameBytes(before[k3s.PathServerCA], after[k3s.PathServerCA]) || !sameBytes(before[k3s.PathClientCA], after[k3s.PathClientCA]) {
		t.Errorf("a refused rotate-ca changed the datastore")
	}
	// --force saves anyway and says so in the server log.
	c.mustRun("server-1", "k3s certificate rotate-ca --force --path "+dir)
	if j := c.journal("server-1"); !strings.Contains(j, "Save of CA certificates and keys forced, ignoring validation errors") {
		t.Errorf("journal lacks the forced-save warning")
	}
	if got := datastoreFiles(t, l.Status(), c.tokenPassword("server-1"))[k3s.PathServerCA]; !sameBytes(got, first) {
		t.Errorf("forced rotate-ca did not save the staged ServerCA")
	}
}

// systemctl loads unit files on daemon-reload only (and warns when they
// changed on disk); journalctl filters by unit, lines and time.
func TestSystemctlAndJournalctl(t *testing.T) {
	l := startLab(t, lab.Options{Servers: 1, Agents: 1, ServerSource: map[string]string{}})
	c := connect(t, l)
	unit := c.nodes["server-1"].K3s.UnitFile
	orig := c.read("server-1", unit)
	c.write("server-1", unit, append(append([]byte{}, orig...), []byte("# edited\n")...))
	_, errs, _ := c.run("server-1", "systemctl restart k3s")
	if !strings.Contains(errs, "Warning: The unit file, source configuration file or drop-ins of k3s.service changed on disk. Run 'systemctl daemon-reload' to reload units.") {
		t.Errorf("no daemon-reload warning: %q", errs)
	}
	c.mustRun("server-1", "systemctl daemon-reload")
	if _, errs, _ := c.run("server-1", "systemctl restart k3s"); strings.Contains(errs, "Warning") {
		t.Errorf("warning after daemon-reload: %q", errs)
	}
	if out := c.mustRun("server-1", "systemctl show -p ActiveState --value k3s"); out != "active\n" {
		t.Errorf("show ActiveState = %q", out)
	}
	if _, _, code := c.run("server-1", "systemctl restart k3s-agent"); code != 5 {
		t.Errorf("restarting a unit the node does not have: exit %d, want 5", code)
	}
	if out, _, code := c.run("agent-1", "systemctl is-active k3s"); strings.TrimSpace(out) != "inactive" || code != 3 {
		t.Errorf("is-active of a missing unit: %q %d", out, code)
	}
	c.mustRun("server-1", "systemctl stop k3s")
	if out, _, code := c.run("server-1", "systemctl is-active k3s"); strings.TrimSpace(out) != "inactive" || code != 3 {
		t.Errorf("after stop: %q %d", out, code)
	}
	// A second passes between the stop and the time taken, so --since
	// that time must show the start and not the stop.
	since := strings.TrimSpace(c.mustRun("server-1", "sleep 1.1; date '+%Y-%m-%d %H:%M:%S'"))
	c.mustRun("server-1", "systemctl start k3s")

	out := c.mustRun("server-1", "journalctl -u k3s --no-pager -n 3")
	if n := strings.Count(out, "\n"); n != 3 || !strings.Contains(out, "server-1 systemd[1]: Started k3s.service - Lightweight Kubernetes.") {
		t.Errorf("journalctl -n 3:\n%s", out)
	}
	out = c.mustRun("server-1", "journalctl -u k3s -o cat --since '"+since+"'")
	if !strings.Contains(out, `level=info msg="Starting k3s `) || strings.Contains(out, "Stopped k3s.service") {
		t.Errorf("journalctl --since %s:\n%s", since, out)
	}
	if out := c.mustRun("server-1", "journalctl -u k3s --since '2099-01-01 00:00:00'"); out != "-- No entries --\n" {
		t.Errorf("journalctl with a future --since: %q", out)
	}
	if out := c.mustRun("agent-1", "journalctl -u k3s -q"); out != "" {
		t.Errorf("agent has k3s.service entries: %q", out)
	}
}

// k3s certificate check lists every cert of the node's files; rotate
// deletes leaf certs that the next start reissues.
func TestCertificateCheckAndRotate(t *testing.T) {
	l := startLab(t, lab.Options{Servers: 1, Agents: 1})
	c := connect(t, l)
	out, errs, code := c.run("server-1", "k3s certificate check --output json")
	if code != 0 || !strings.Contains(errs, "Server detected, checking agent and server certificates") {
		t.Fatalf("check: exit %d, stderr %q", code, errs)
	}
	var doc struct {
		Certificates []struct{ Filename, Subject, Status string }
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Certificates) < 20 {
		t.Fatalf("check json: %v, %d certs\n%s", err, len(doc.Certificates), out)
	}
	seen := map[string]bool{}
	for _, cs := range doc.Certificates {
		seen[cs.Filename] = true
		if cs.Status != "OK" {
			t.Errorf("%s %s: %s", cs.Filename, cs.Subject, cs.Status)
		}
	}
	for _, f := range []string{"client-admin.crt", "serving-kube-apiserver.crt", "server-client.crt", "client-kubelet.crt"} {
		if !seen[f] {
			t.Errorf("check does not list %s", f)
		}
	}
	if _, errs, _ := c.run("agent-1", "k3s certificate check"); !strings.Contains(errs, "Agent detected") || !strings.Contains(errs, "client-kubelet.crt: certificate system:node:agent-1") {
		t.Errorf("agent check:\n%s", errs)
	}

	admin := filepath.Join(c.sd("server-1"), "tls", "client-admin.crt")
	old := c.read("server-1", admin)
	c.mustRun("server-1", "systemctl stop k3s")
	_, errs, _ = c.run("server-1", "k3s certificate rotate -s admin")
	if !regexp.MustCompile(`Successfully backed up certificates to .*/server/tls-\d+, please restart k3s server or agent to rotate certificates`).MatchString(errs) {
		t.Fatalf("rotate: %q", errs)
	}
	if _, _, code := c.run("server-1", "test -e "+admin); code == 0 {
		t.Fatalf("rotate did not delete %s", admin)
	}
	c.mustRun("server-1", "systemctl start k3s")
	if now := c.read("server-1", admin); sameBytes(now, old) {
		t.Errorf("client-admin.crt was not reissued")
	}
	if j := c.journal("server-1"); !strings.Contains(j, "certificate CN=system:admin,O=system:masters signed by CN=k3s-client-ca@") {
		t.Errorf("journal lacks the reissue line")
	}
}
