package main

// End-to-end tests of the rotate-ca playbook against the lab (issue 4,
// acceptance 1-7): the caretaker binary, real SSH, a real etcd. Each test
// brings up its own lab on a subnet of its own and checks the outcome
// independently of caretaker: straight from etcd, the node files and the
// live supervisor ports.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// rotateArgs are the arguments of an unattended rotate-ca run.
func (l *e2eLab) rotateArgs(extra ...string) []string {
	return append([]string{"run", "rotate-ca", "-i", l.InventoryPath(), "--yes", "--output", "json"}, extra...)
}

// assertNoSecret fails when the cluster token's password shows anywhere in
// a run's output.
func (l *e2eLab) assertNoSecret(res cliResult) {
	l.t.Helper()
	pass, err := k3s.NormalizeToken(l.Token())
	if err != nil {
		l.t.Fatal(err)
	}
	if strings.Contains(res.Stdout, pass) || strings.Contains(res.Stderr, pass) {
		l.t.Errorf("the cluster token's password appears in caretaker's output")
	}
}

// Acceptance 1: the bug report's cluster (3 servers on a buggy release, the
// init node replaced, 2 agents) ends with the new CA everywhere and every
// config source byte-identical; check-certs then agrees.
func TestE2ERotateCABugScenario(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 2, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced})
	before := l.allConfigSources()
	oldCA := l.serverCA("server-1")

	res := l.runCaretaker(l.rotateArgs()...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca failed:\n%s", res.Describe())
	}
	t.Logf("rotate-ca on 3 servers + 2 agents took %s", res.Took)
	newCA := l.datastore()[k3s.KeyServerCA].Content
	if string(newCA) == string(oldCA) {
		t.Fatalf("the datastore still holds the old CA %s", caName(oldCA))
	}
	l.assertClusterHoldsCA(newCA)
	if d := sameSources(before, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources differ after the rotation: %s", strings.Join(d, "; "))
	}
	for _, s := range l.Nodes("server") {
		if st := res.StepStatus("servers", s); st != "changed" {
			t.Errorf("step servers on %s: %q, want changed", s, st)
		}
		if !strings.Contains(strings.Join(res.Output(s), "\n"), "removed") {
			t.Errorf("%s: no strip edit in the output:\n%s", s, strings.Join(res.Output(s), "\n"))
		}
	}
	l.assertNoSecret(res)
	var tokenFile string
	for _, n := range res.Notes() {
		if i := strings.Index(n, " is in "); i > 0 {
			tokenFile = strings.Fields(n[i+len(" is in "):])[0]
		}
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the new token file %q: %v, mode %v; want 0600", tokenFile, err, fi)
	}
	if b, _ := os.ReadFile(tokenFile); !strings.HasPrefix(string(b), "K10") {
		t.Errorf("the token file does not hold a K10 token")
	}

	// Backups on the controller: one per node, files 0600, dirs 0700.
	backups := 0
	err := filepath.WalkDir(filepath.Join(l.StateDir, "backups"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		switch {
		case d.IsDir() && fi.Mode().Perm() != 0o700:
			t.Errorf("backup dir %s has mode %v, want 0700", p, fi.Mode().Perm())
		case !d.IsDir() && fi.Mode().Perm() != 0o600:
			t.Errorf("backup file %s has mode %v, want 0600", p, fi.Mode().Perm())
		case d.Name() == "backup.tar.gz":
			backups++
		}
		return nil
	})
	if err != nil || backups != 5 {
		t.Errorf("%d node backups on the controller (%v), want 5", backups, err)
	}

	chk := l.runCaretaker("run", "check-certs", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if chk.Code != 0 {
		t.Errorf("check-certs after the rotation failed:\n%s", chk.Describe())
	}
}

// Acceptance 2 and 6, and resuming: without the workaround the rotation
// fails and names every stale node; with a server that does not come back
// the run stops before the next server and says how to go on; once fixed,
// running rotate-ca again finishes the rotation and every source is back.
func TestE2ERotateCANoWorkaroundFailingServerAndResume(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 2, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced})
	original := l.allConfigSources()
	oldCA := l.serverCA("server-1")

	// workaround=never: server-1 takes its CA from server-2's disk.
	res := l.runCaretaker(l.rotateArgs("-p", "workaround=never")...)
	if res.Code == 0 {
		t.Fatalf("rotate-ca with workaround=never succeeded on a buggy release:\n%s", res.Describe())
	}
	if st := res.StepStatus("servers", "server-1"); st != "failed" {
		t.Fatalf("step servers on server-1: %q, want failed:\n%s", st, res.Describe())
	}
	msg := res.StepError("servers", "server-1")
	if m := containsAll(msg, "server-1", "server-2", "server-3", "agent-1", "agent-2"); len(m) > 0 {
		t.Errorf("the failure does not name every stale node (missing %v):\n%s", m, msg)
	}
	if res.Started("servers", "server-2") {
		t.Errorf("server-2 was touched after server-1 failed")
	}
	if d := sameSources(original, l.allConfigSources()); len(d) > 0 {
		t.Errorf("workaround=never changed config sources: %v", d)
	}

	// A server that does not come back stops the run before the next one.
	if err := l.SetFault("server-2", lab.FaultFailStart); err != nil {
		t.Fatal(err)
	}
	s3Sources := l.configSources("server-3")
	res = l.runCaretaker(l.rotateArgs()...)
	if res.Code == 0 {
		t.Fatalf("rotate-ca succeeded with server-2 failing to start:\n%s", res.Describe())
	}
	if st := res.StepStatus("servers", "server-2"); st != "failed" {
		t.Fatalf("step servers on server-2: %q, want failed:\n%s", st, res.Describe())
	}
	if st := res.StepStatus("servers", "server-1"); st != "changed" {
		t.Errorf("step servers on server-1: %q, want changed (resumed rotation)", st)
	}
	if res.Started("servers", "server-3") {
		t.Errorf("server-3 was touched after server-2 failed to come back")
	}
	errText := res.StepError("servers", "server-2")
	if m := containsAll(errText, "server-2", "injected fault"); len(m) > 0 {
		t.Errorf("the failure does not carry the node and its journal (missing %v):\n%s", m, errText)
	}
	notes := strings.Join(res.Notes(), "\n")
	if m := containsAll(notes, "caretaker run rotate-ca", "caretaker run restore-server", "caretaker run restore -p backup="); len(m) > 0 {
		t.Errorf("the notes do not say how to resume or restore (missing %v):\n%s", m, notes)
	}
	if d := sameSources(prefixed("server-3", s3Sources), prefixed("server-3", l.configSources("server-3"))); len(d) > 0 {
		t.Errorf("server-3 was not restarted but its sources changed: %v", d)
	}
	if got := l.serverCA("server-3"); string(got) != string(oldCA) {
		t.Errorf("server-3 was not restarted but holds %s", caName(got))
	}

	// Fixed: running rotate-ca again finishes the rotation.
	if err := l.SetFault("server-2", lab.FaultClear); err != nil {
		t.Fatal(err)
	}
	res = l.runCaretaker(l.rotateArgs()...)
	if res.Code != 0 {
		t.Fatalf("resuming rotate-ca failed:\n%s", res.Describe())
	}
	for _, step := range []string{"generate", "rotate-ca"} {
		if st := res.StepStatus(step, "server-1"); st != "skipped" {
			t.Errorf("resumed run: step %s %q, want skipped (the datastore already holds the new CA)", step, st)
		}
	}
	newCA := l.datastore()[k3s.KeyServerCA].Content
	if string(newCA) == string(oldCA) {
		t.Fatal("the datastore holds the old CA")
	}
	l.assertClusterHoldsCA(newCA)
	if d := sameSources(original, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources are not back to the original after the resumed rotation: %v", d)
	}
}

func prefixed(node string, m map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range m {
		out[node+" "+k] = v
	}
	return out
}

// Acceptance 3 and 7: on a fixed release workaround=auto strips nothing;
// nodes configured with secure K10 tokens get the new CA hash where their
// token is set, and the agents come back.
func TestE2ERotateCAFixedReleaseSecureTokens(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 2, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioInitReplaced, SecureToken: true})
	before := l.allConfigSources()

	res := l.runCaretaker(l.rotateArgs()...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca failed:\n%s", res.Describe())
	}
	newCA := l.datastore()[k3s.KeyServerCA].Content
	l.assertClusterHoldsCA(newCA)
	for _, s := range l.Nodes("server") {
		if _, err := os.Stat(l.HostPath(s, filepath.Join(l.Node(s).K3s.DataDir, "caretaker", "strip"))); err == nil {
			t.Errorf("%s: strip records exist: workaround=auto stripped on a fixed release", s)
		}
		if !strings.Contains(strings.Join(res.Output(s), "\n"), "keeping server=") {
			t.Errorf("%s: the output does not say server was kept", s)
		}
	}
	newHash, err := k3s.HashCA(newCA)
	if err != nil {
		t.Fatal(err)
	}
	after := l.allConfigSources()
	for _, n := range l.Nodes("") {
		changed := 0
		for k, b := range after {
			if !strings.HasPrefix(k, n+" ") {
				continue
			}
			if string(b) != string(before[k]) {
				changed++
				if !strings.Contains(string(b), "K10"+newHash+"::") {
					t.Errorf("%s: %s changed but does not carry the new CA hash", n, k)
				}
			}
		}
		if changed != 1 {
			t.Errorf("%s: %d config sources changed, want 1 (the one holding the token)", n, changed)
		}
		if st := res.StepStatus("tokens", n); st != "changed" {
			t.Errorf("step tokens on %s: %q, want changed", n, st)
		}
	}
	for _, ns := range l.Status().Nodes {
		if ns.State != "active" {
			t.Errorf("%s is %s after the rotation", ns.Name, ns.State)
		}
	}
	l.assertNoSecret(res)
}

// Acceptance 4 and 5: `server` set by a config drop-in, a unit argument and
// K3S_URL in the env file on different servers; --check changes nothing and
// prints the whole plan; the real run strips and restores every source
// exactly.
func TestE2ERotateCAServerSourcesAndCheckMode(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 2, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced,
		ServerSource: map[string]string{"server-1": lab.SourceDropIn, "server-2": lab.SourceUnit, "server-3": lab.SourceEnv}})
	trees := map[string]treeSnapshot{}
	for _, n := range l.Nodes("") {
		trees[n] = snapshotTree(t, l.NodeRoot(n), "journal.log")
	}
	before := l.allConfigSources()

	res := l.runCaretaker(l.rotateArgs("--check")...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca --check failed:\n%s", res.Describe())
	}
	for _, n := range l.Nodes("") {
		if d := diffTrees(trees[n], snapshotTree(t, l.NodeRoot(n), "journal.log")); len(d) > 0 {
			t.Errorf("--check changed %s: %s", n, strings.Join(d, "; "))
		}
	}
	var steps []string
	for _, e := range res.Events {
		if e.Type == "run_started" {
			for _, s := range e.Raw["steps"].([]any) {
				steps = append(steps, s.(map[string]any)["name"].(string))
			}
		}
	}
	if got := strings.Join(steps, ","); got != "facts,preflight,backup,generate,rotate-ca,servers,restore-server,tokens,agents,verify,summary" {
		t.Errorf("the plan's steps are %s", got)
	}
	out := strings.Join(res.Output(""), "\n")
	for _, want := range []string{"would back up", "would stage a new self-signed CA set", "would run on server-1: k3s certificate rotate-ca",
		"would strip server on server-1", "would strip server on server-2", "would strip server on server-3",
		"would restart k3s on server-2", "would restart k3s-agent on agent-1", "would put `server` back byte for byte"} {
		if !strings.Contains(out, want) {
			t.Errorf("the check-mode output lacks %q", want)
		}
	}

	res = l.runCaretaker(l.rotateArgs()...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca failed:\n%s", res.Describe())
	}
	l.assertClusterHoldsCA(l.datastore()[k3s.KeyServerCA].Content)
	if d := sameSources(before, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources differ after the rotation: %s", strings.Join(d, "; "))
	}
	for node, want := range map[string]string{"server-1": "50-server.yaml", "server-2": l.Node("server-2").K3s.UnitFile, "server-3": ".env"} {
		o := strings.Join(res.Output(node), "\n")
		if !strings.Contains(o, want) {
			t.Errorf("%s: the strip output does not name %s:\n%s", node, want, o)
		}
		if node == "server-2" && strings.Count(o, "systemctl daemon-reload") < 2 {
			t.Errorf("%s: the unit was edited and restored without two daemon-reloads:\n%s", node, o)
		}
	}
}

// Issue 10 #1: rotate-ca two and three times in a row on the lab
// (3 servers on a buggy release, the init node replaced, 2 agents): every
// run succeeds and `caretaker check` then exits 0. It used to fail in the
// second run's servers step with "etcd at ...:2379: TLS handshake failed
// ... x509: certificate signed by unknown authority" (one etcd whose
// serving certificate came from the first CA).
//
// KNOWN FAILURE (caretaker, not the lab): run 2 fails in the servers step
// with "live ... serves a certificate issued by <first CA> that does not
// verify against the datastore's server CA". The lab now keeps the cached
// serving certificate across restarts as K3s's dynamiclistener does; it
// is reissued only when SD/tls/dynamic-cert-regenerate exists at start,
// which caretaker does not touch yet before its restarts (issue 10 #4).
// This test passes once caretaker does.
func TestE2ERotateCAThreeTimesThenCheck(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 2, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced})
	for run := 1; run <= 3; run++ {
		before := l.datastore()[k3s.KeyServerCA].Content
		res := l.runCaretaker(l.rotateArgs()...)
		if res.Code != 0 {
			t.Fatalf("rotate-ca run %d failed:\n%s", run, res.Describe())
		}
		newCA := l.datastore()[k3s.KeyServerCA].Content
		if string(newCA) == string(before) {
			t.Fatalf("rotate-ca run %d left the datastore's CA as it was", run)
		}
		l.assertClusterHoldsCA(newCA)
		if chk := runCaretakerBinary(t, "check", "-i", l.InventoryPath()); chk.Code != 0 {
			t.Fatalf("check after rotate-ca run %d: exit %d\n%s%s", run, chk.Code, chk.Stdout, chk.Stderr)
		}
	}
}
