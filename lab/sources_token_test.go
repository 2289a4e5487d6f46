package lab_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// Acceptance 5: `server` given by config.yaml, by a drop-in, by a unit
// arg, or by K3S_URL in the env file: each one alone makes the node
// bootstrap over HTTP (§7 sources). server-1 (cluster-init, no server) is
// the control that reconciles locally; it is a fixed release, so it logs
// every HTTP bootstrap it serves with the caller's address.
func TestConfigSourcesEachMakeHTTPBootstrap(t *testing.T) {
	sources := map[string]string{"server-2": lab.SourceConfig, "server-3": lab.SourceDropIn, "server-4": lab.SourceUnit, "server-5": lab.SourceEnv}
	l := labtest.Start(t, lab.Options{Servers: 5, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioClusterInit, ServerSource: sources})
	c := connect(t, l)
	s1 := l.Status().Nodes[0]
	for node, src := range sources {
		eff, err := k3s.Effective(c.sources(node))
		if err != nil {
			t.Fatal(err)
		}
		set := eff["server"]
		wantKind := map[string]string{lab.SourceConfig: k3s.KindConfig, lab.SourceDropIn: k3s.KindDropIn, lab.SourceUnit: k3s.KindUnitArg, lab.SourceEnv: k3s.KindEnv}[src]
		if set.Value != "https://"+s1.Address+":6443" || set.Kind != wantKind {
			t.Errorf("%s: server = %q from %s (%s), want https://%s:6443 from a %s source", node, set.Value, set.Source, set.Kind, s1.Address, wantKind)
		}
		if len(set.Shadowed) != 0 {
			t.Errorf("%s: server is also set in %v; each node must have exactly one source", node, set.Shadowed)
		}
	}
	for _, node := range []string{"server-1", "server-2", "server-3", "server-4", "server-5"} {
		c.mustRun(node, "systemctl restart k3s")
	}
	served := c.journal("server-1")
	for _, st := range l.Status().Nodes[1:] {
		node := st.Name
		j := c.journal(node)
		// The restart's part of the node's journal.
		last := j[strings.LastIndex(j, "Starting k3s v"):]
		if !strings.Contains(last, "Successfully reconciled with remote datastore") || strings.Contains(last, "temporary etcd") {
			t.Errorf("%s (server from %s): restart did not bootstrap over HTTP:\n%s", node, sources[node], last)
		}
		if !regexp.MustCompile(`Serving HTTP bootstrap from datastore for ` + regexp.QuoteMeta(st.Address) + `:\d+`).MatchString(served) {
			t.Errorf("server-1 never served the HTTP bootstrap to %s (%s)", node, st.Address)
		}
	}
	last := served[strings.LastIndex(served, "Starting k3s v"):]
	if !strings.Contains(last, "Starting temporary etcd to reconcile with datastore") || strings.Contains(last, "remote datastore") {
		t.Errorf("server-1 (no server) should reconcile with its local datastore:\n%s", last)
	}
}

// An empty `server: ""` drop-in overrides config and env but not a unit
// arg (§7 "Precedence").
func TestDropInEmptyServerPrecedence(t *testing.T) {
	sources := map[string]string{"server-2": lab.SourceEnv, "server-3": lab.SourceUnit}
	l := labtest.Start(t, lab.Options{Servers: 3, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioClusterInit, ServerSource: sources})
	c := connect(t, l)
	for _, node := range []string{"server-2", "server-3"} {
		cfg := c.nodes[node].K3s.ConfigFile
		c.mustRun(node, "mkdir -p "+cfg+".d")
		c.write(node, filepath.Join(cfg+".d", "zz-no-server.yaml"), []byte("server: \"\"\n"))
		c.mustRun(node, "systemctl restart k3s")
	}
	j2, j3 := c.journal("server-2"), c.journal("server-3")
	if last := j2[strings.LastIndex(j2, "Starting k3s v"):]; !strings.Contains(last, "Starting temporary etcd") {
		t.Errorf("server-2: K3S_URL should be overridden by the empty drop-in:\n%s", last)
	}
	if last := j3[strings.LastIndex(j3, "Starting k3s v"):]; !strings.Contains(last, "Successfully reconciled with remote datastore") {
		t.Errorf("server-3: a unit --server arg must win over the drop-in:\n%s", last)
	}
}

// Acceptance 6: after a rotation to a new root, an agent still configured
// with the old K10<hash> token fails to start with K3s's hash-mismatch
// message; with the new token from server/token it starts.
func TestSecureTokenAfterNewRoot(t *testing.T) {
	// Three servers: with two, either restart loses the etcd quorum and
	// the peer serves its stale disk (as on real K3s).
	l := labtest.Start(t, lab.Options{Servers: 3, Agents: 1, Version: "v1.32.3+k3s1", SecureToken: true})
	c := connect(t, l)
	oldTok, err := k3s.ParseToken(strings.TrimSpace(string(c.read("server-1", filepath.Join(c.sd("server-1"), "token")))))
	if err != nil || !oldTok.Secure() {
		t.Fatalf("server/token is not a secure token: %v", err)
	}
	envFile := c.nodes["agent-1"].K3s.EnvFiles[len(c.nodes["agent-1"].K3s.EnvFiles)-1]
	if env := string(c.read("agent-1", envFile)); !strings.Contains(env, "K3S_TOKEN='K10"+oldTok.CAHash+"::server:") {
		t.Fatalf("agent-1's env file does not carry the secure token:\n%s", envFile)
	}
	_, newCA := rotateCA(t, c)
	for _, s := range c.servers() {
		c.mustRun(s, "systemctl restart k3s")
	}
	newTok := strings.TrimSpace(string(c.read("server-1", filepath.Join(c.sd("server-1"), "token"))))
	nt, _ := k3s.ParseToken(newTok)
	wantHash, _ := k3s.HashCA(newCA)
	if nt.CAHash != wantHash || nt.CAHash == oldTok.CAHash {
		t.Fatalf("server/token hash = %s, want the new root's %s (old %s)", nt.CAHash, wantHash, oldTok.CAHash)
	}

	out, errs, code := c.run("agent-1", "systemctl restart k3s-agent")
	if code == 0 {
		t.Fatalf("the agent started with the old secure token\n%s%s", out, errs)
	}
	want := fmt.Sprintf("token CA hash does not match the Cluster CA certificate hash: %s != %s", oldTok.CAHash, nt.CAHash)
	if j := c.journal("agent-1"); !strings.Contains(j, want) {
		t.Fatalf("agent journal lacks %q:\n%s", want, j)
	}
	if st, _, _ := c.run("agent-1", "systemctl is-active k3s-agent"); strings.TrimSpace(st) != "activating" {
		t.Errorf("agent state %q, want activating (auto-restart)", st)
	}

	edits, err := k3s.ReplaceToken(c.sources("agent-1"), newTok)
	if err != nil || len(edits) == 0 {
		t.Fatalf("replace the agent's token: %v (%d edits)", err, len(edits))
	}
	c.applyEdits("agent-1", edits, false)
	c.mustRun("agent-1", "systemctl restart k3s-agent")
	dd := c.nodes["agent-1"].K3s.DataDir
	if got := c.read("agent-1", filepath.Join(dd, "agent", "server-ca.crt")); !sameBytes(got, newCA) {
		t.Errorf("agent/server-ca.crt is %s, want the new CA %s", shortHash(got), shortHash(newCA))
	}
}
