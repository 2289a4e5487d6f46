package lab_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// rotateCA stages a new CA set on server-1 and saves it to the datastore.
func rotateCA(t *testing.T, c *cluster) (oldCA, newCA []byte) {
	t.Helper()
	oldCA = c.serverCA("server-1")
	dir, staged := c.stageRotation("server-1")
	c.mustRun("server-1", "k3s certificate rotate-ca --path="+dir)
	return oldCA, staged[k3s.PathServerCA]
}

// Acceptance 3: the workaround by hand on the buggy release (§9 "Pre-fix
// workaround"): strip `server` on each restarting server, restart one by
// one, restore only when every server holds the new CA.
func TestWorkaroundByHandOnBuggyRelease(t *testing.T) {
	l := labtest.Start(t, lab.Options{Servers: 3, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced})
	c := connect(t, l)
	_, newCA := rotateCA(t, c)
	undo := map[string][]k3s.Edit{}
	for _, s := range c.servers() {
		undo[s] = c.stripServer(s)
		if got := c.effectiveServer(s); got != "" {
			t.Fatalf("%s: server is still %q after stripping", s, got)
		}
		c.mustRun(s, "systemctl restart k3s")
		if got := c.serverCA(s); !sameBytes(got, newCA) {
			t.Fatalf("%s: after a restart without server, server-ca.crt is %s, want the new CA %s\n%s", s, shortHash(got), shortHash(newCA), c.journal(s))
		}
		if j := c.journal(s); !strings.Contains(j, "Starting temporary etcd to reconcile with datastore") {
			t.Errorf("%s: a restart without server should reconcile with the local datastore:\n%s", s, j)
		}
	}
	for _, s := range c.servers() {
		c.applyEdits(s, undo[s], true)
		if c.effectiveServer(s) == "" {
			t.Fatalf("%s: server not restored", s)
		}
	}
	// With server restored everywhere, restarts reconcile over HTTP against
	// peers that now hold the new CA: nothing changes.
	for _, s := range c.servers() {
		c.mustRun(s, "systemctl restart k3s")
		if got := c.serverCA(s); !sameBytes(got, newCA) {
			t.Errorf("%s: server-ca.crt is %s after the final restart, want the new CA", s, shortHash(got))
		}
	}
}

// Acceptance 4: the trap: once server-1 holds the new CA, restoring its
// server: while its peer still has the old disk makes the restart fail
// with "newer than datastore"; Restart=always then retries the start.
func TestTrapNewerThanDatastore(t *testing.T) {
	l := labtest.Start(t, lab.Options{Servers: 3, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced})
	c := connect(t, l)
	_, newCA := rotateCA(t, c)
	undo := c.stripServer("server-1")
	c.mustRun("server-1", "systemctl restart k3s")
	if got := c.serverCA("server-1"); !sameBytes(got, newCA) {
		t.Fatalf("server-1 did not take the new CA: %s", shortHash(got))
	}
	c.applyEdits("server-1", undo, true) // server-1 → server-2, still on the old CA
	out, errs, code := c.run("server-1", "systemctl restart k3s")
	if code == 0 {
		t.Fatalf("systemctl restart k3s succeeded, want a failure\n%s%s", out, errs)
	}
	if !strings.Contains(errs, "Job for k3s.service failed because the control process exited with error code.") {
		t.Errorf("systemctl stderr = %q", errs)
	}
	st, _, code := c.run("server-1", "systemctl is-active k3s")
	if strings.TrimSpace(st) != "activating" || code != 3 {
		t.Errorf("is-active = %q (exit %d), want activating (exit 3: waiting for the automatic restart)", st, code)
	}
	if out := c.mustRun("server-1", "systemctl show k3s -p SubState,Result"); out != "Result=exit-code\nSubState=auto-restart\n" {
		t.Errorf("systemctl show:\n%s", out)
	}
	j := c.journal("server-1")
	want := filepath.Join(c.sd("server-1"), k3s.PathServerCA)
	if !strings.Contains(j, `level=fatal msg="`) || !strings.Contains(j, "newer than datastore and could cause a cluster outage. Remove the file(s) from disk and restart to be recreated from datastore.") || !strings.Contains(j, want) {
		t.Errorf("journal lacks the fatal newer-than-datastore line naming %s:\n%s", want, j)
	}
	// The disk keeps the new CA: the fatal exit writes nothing.
	if got := c.serverCA("server-1"); !sameBytes(got, newCA) {
		t.Errorf("server-1's server-ca.crt changed after the failed start")
	}
}
