package lab_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// rotateAndRestartNaively stages a cross-signed CA set on server-1, runs
// `k3s certificate rotate-ca` there and restarts every server the naive way
// (`systemctl restart k3s`, server: left in place). It returns the old and
// the staged server CA.
func rotateAndRestartNaively(t *testing.T, c *cluster) (oldCA, newCA []byte) {
	t.Helper()
	oldCA = c.serverCA("server-1")
	dir, staged := c.stageRotation("server-1")
	newCA = staged[k3s.PathServerCA]
	if sameBytes(oldCA, newCA) {
		t.Fatal("the staged server CA equals the current one")
	}
	out := c.mustRun("server-1", "k3s certificate rotate-ca --path="+dir)
	if strings.TrimSpace(out) != "certificates saved to datastore" {
		t.Fatalf("rotate-ca printed %q, want %q", out, "certificates saved to datastore")
	}
	if j := c.journal("server-1"); !strings.Contains(j, "certificate: Cluster Certificate Authority data has been updated, k3s must be restarted.") {
		t.Fatalf("server-1's journal lacks the rotate-ca handler line:\n%s", j)
	}
	for _, s := range c.servers() {
		c.mustRun(s, "systemctl restart k3s")
		if out := strings.TrimSpace(c.mustRun(s, "systemctl is-active k3s")); out != "active" {
			t.Fatalf("%s is %q after restart", s, out)
		}
	}
	return oldCA, newCA
}

// assertDatastoreCA checks that etcd holds want as ServerCA.
func assertDatastoreCA(t *testing.T, c *cluster, want []byte) {
	t.Helper()
	files := datastoreFiles(t, c.lab.Status(), c.tokenPassword("server-1"))
	if got := files[k3s.PathServerCA]; !sameBytes(got, want) {
		t.Fatalf("datastore ServerCA is %s, want %s", shortHash(got), shortHash(want))
	}
}

func bugScenario(t *testing.T, sshMode string) {
	l := labtest.Start(t, lab.Options{Servers: 3, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced, SSH: sshMode})
	c := connect(t, l)
	oldCA, newCA := rotateAndRestartNaively(t, c)
	assertDatastoreCA(t, c, newCA)
	for _, s := range c.servers() {
		if got := c.serverCA(s); !sameBytes(got, oldCA) {
			t.Errorf("%s: server-ca.crt is %s, want the OLD CA %s (the bug: HTTP bootstrap from a peer's disk)", s, shortHash(got), shortHash(oldCA))
		}
		j := c.journal(s)
		// Pre-fix wording of a successful HTTP reconcile (§2 pre-fix).
		if !strings.Contains(j, "Successfully reconciled with datastore") {
			t.Errorf("%s: journal lacks %q:\n%s", s, "Successfully reconciled with datastore", j)
		}
	}
}

// Acceptance 1: the bug, reproduced on a release before the fix.
func TestBugReproducedOnBuggyRelease(t *testing.T) {
	bugScenario(t, lab.SSHInProcess)
}

// Acceptance 2: the same on a fixed release: every server ends with the
// new CA.
func TestFixedReleaseRotates(t *testing.T) {
	l := labtest.Start(t, lab.Options{Servers: 3, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioInitReplaced})
	c := connect(t, l)
	oldCA, newCA := rotateAndRestartNaively(t, c)
	assertDatastoreCA(t, c, newCA)
	for _, s := range c.servers() {
		if got := c.serverCA(s); !sameBytes(got, newCA) {
			t.Errorf("%s: server-ca.crt is %s, want the NEW CA %s (old %s)", s, shortHash(got), shortHash(newCA), shortHash(oldCA))
		}
		tok := strings.TrimSpace(string(c.read(s, filepath.Join(c.sd(s), "token"))))
		want, _ := k3s.HashCA(newCA)
		if !strings.HasPrefix(tok, "K10"+want+"::server:") {
			t.Errorf("%s: server/token does not carry the new CA hash %s", s, want)
		}
	}
	// A node's own etcd client cert, reissued from the rotated etcd CA,
	// still reaches the datastore, trusting the node's new etcd CA bundle
	// (what caretaker's datastore() does through the node).
	st := l.Status()
	tlsDir := filepath.Join(st.Nodes[1].Root, "var/lib/rancher/k3s/server/tls/etcd")
	cli := etcdClientWith(t, []string{st.Nodes[1].Address + ":2379"}, filepath.Join(tlsDir, "client.crt"), filepath.Join(tlsDir, "client.key"), filepath.Join(tlsDir, "server-ca.crt"))
	if resp, err := cli.Get(ctxT(t), k3s.StorageKey(c.tokenPassword("server-2"))); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("etcd with server-2's rotated client cert: %v", err)
	}
	// server-1 joined through server-2, which was not yet restarted and
	// answered from the datastore (fixed serveBootstrap).
	if j := c.journal("server-2"); !strings.Contains(j, "Serving HTTP bootstrap from datastore for 127.") {
		t.Errorf("server-2's journal lacks %q:\n%s", "Serving HTTP bootstrap from datastore for", j)
	}
	if j := c.journal("server-1"); !strings.Contains(j, "Successfully reconciled with remote datastore") ||
		!strings.Contains(j, filepath.Join(c.sd("server-1"), k3s.PathServerCA)+" will be updated from the datastore.") {
		t.Errorf("server-1's journal lacks the fixed reconcile lines:\n%s", j)
	}
}
