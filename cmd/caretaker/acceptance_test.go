package main

// The acceptance suite (issue 10): the end-to-end tests of rotate-ca,
// check and check-certs, resume and undo, locks, backup and restore, leaf
// rotation and --check, written once and run on both backends of the lab:
//
//	sim   the simulator (simulated K3s nodes, agents, any version)
//	real  the real engine: the real K3s binary (../shared/k3s, or
//	      $CARETAKER_K3S_BINARY) as k3s.service in systemd-nspawn machines
//	      with real systemd and OpenSSH; servers only, so rows about agents
//	      run on the simulator alone
//
// Each group is one cluster; its scenarios run on it in order, each
// leaving it consistent for the next. Everything a scenario checks is read
// independently of caretaker: node files from the node's tree, the
// datastore straight from etcd, the live chain from :6443, `k3s
// certificate check` on the node. The real backend needs root,
// systemd-nspawn and a K3s binary; without them it is skipped with the
// reason, and under CI ($CI) it fails instead.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
	"github.com/caretaker/caretaker/runner/inventory"
)

// accBackend is one backend of the suite.
type accBackend struct{ name, engine string }

var accBackends = []accBackend{{"sim", lab.EngineSim}, {"real", lab.EngineReal}}

func (b accBackend) real() bool { return b.engine == lab.EngineReal }

// accGroup is one cluster and the scenarios that run on it, in order.
type accGroup struct {
	name      string
	options   func(b accBackend) lab.Options
	scenarios []accScenario
}

type accScenario struct {
	name string
	run  func(t *testing.T, l *e2eLab)
}

// sources puts `server` in a different source on each server.
var accSources = map[string]string{"server-1": lab.SourceDropIn, "server-2": lab.SourceUnit, "server-3": lab.SourceEnv}

var accGroups = []accGroup{
	{
		// The bug report's cluster: every server joins through a peer,
		// and K3s takes the CA from the peer's disk (k3s#11233): on the
		// simulator a release before the fix, on the real engine the
		// K3S_SERVE_BOOTSTRAP_FROM_DISK build with the inventory's
		// bootstrap_bug: true.
		name: "bug",
		options: func(b accBackend) lab.Options {
			if b.real() {
				return lab.Options{Engine: lab.EngineReal, Servers: 3, Scenario: lab.ScenarioInitReplaced, BootstrapBug: true, ServerSource: accSources}
			}
			return lab.Options{Servers: 3, Agents: 2, Version: "v1.30.10+k3s1", Scenario: lab.ScenarioInitReplaced, ServerSource: accSources}
		},
		scenarios: []accScenario{
			{"check rows equal k3s certificate check", accCheckMatchesK3s},
			{"check mode changes no byte", accCheckModeChangesNothing},
			{"bug reproduced, a failing server, then the workaround", accBugThenWorkaround},
			accKill(killAfterStrip, "resume"), accKill(killAfterStrip, "undo"),
			accKill(killMidRestart, "resume"), accKill(killMidRestart, "undo"),
			accKill(killAfterRestoreServer, "resume"), accKill(killAfterRestoreServer, "undo"),
			{"locks", accLocks},
			{"check findings", accCheckFindings},
			{"health judged per server", accServerHealth},
		},
	},
	{
		// A fixed release configured with secure K10 tokens.
		name: "fixed",
		options: func(b accBackend) lab.Options {
			if b.real() {
				return lab.Options{Engine: lab.EngineReal, Servers: 3, Scenario: lab.ScenarioInitReplaced, SecureToken: true}
			}
			return lab.Options{Servers: 3, Agents: 2, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioInitReplaced, SecureToken: true}
		},
		scenarios: []accScenario{
			{"fixed release strips nothing, secure tokens", accFixedReleaseSecureTokens},
			accKill(killInTokens, "resume"), accKill(killInTokens, "undo"),
			accKill(killInAgents, "resume"), accKill(killInAgents, "undo"),
			{"second and third rotation", accRotateAgainTwice},
			{"kubeconfig after the rotations", accKubeconfig},
			{"trust bundles, kubeconfigs and workloads after a rotation", accTrustAfterRotation},
			{"leaf rotation", accLeafRotation},
			{"backup then restore", accBackupRestore},
			{"check-certs", accCheckCerts},
			{"renew-leaf-certs: only nodes with leaves in K3s's window", accRenewLeafCerts},
			{"datastore snapshot then restore", accSnapshotRestore},
			{"rotate-token", accRotateToken},
			{"rotate-token: a failing server, then resume", accRotateTokenResume},
		},
	},
}

func TestAcceptance(t *testing.T) {
	for _, b := range accBackends {
		t.Run(b.name, func(t *testing.T) {
			if b.real() {
				labtest.RequireReal(t)
			} else {
				t.Parallel() // beside the real backend, which runs its clusters one after the other
			}
			for _, g := range accGroups {
				t.Run(g.name, func(t *testing.T) {
					if !b.real() {
						t.Parallel()
					}
					began := time.Now()
					l := startE2ELab(t, g.options(b))
					t.Logf("%s/%s: cluster up in %s", b.name, g.name, time.Since(began).Round(100*time.Millisecond))
					for _, sc := range g.scenarios {
						start := time.Now()
						ok := t.Run(sc.name, func(t *testing.T) { sc.run(t, l.forTest(t)) })
						t.Logf("%s/%s/%s: %s in %s", b.name, g.name, sc.name, map[bool]string{true: "ok", false: "FAILED"}[ok], time.Since(start).Round(100*time.Millisecond))
						if !ok {
							t.Errorf("the later scenarios of %s would start from a cluster this one may have left inconsistent: not run", g.name)
							return
						}
					}
				})
			}
		})
	}
}

// forTest is the lab for a subtest (failures go to t).
func (l *e2eLab) forTest(t testing.TB) *e2eLab {
	c := *l
	c.t = t
	return &c
}

// newCA is the datastore's server CA, read straight from etcd.
func (l *e2eLab) newCA() []byte { return l.datastore()[k3s.KeyServerCA].Content }

// mustCheck runs `caretaker check` and wants exit 0.
func (l *e2eLab) mustCheck(t *testing.T) {
	t.Helper()
	c := l.check(t, l.InventoryPath())
	if c.Code != exitOK {
		t.Errorf("caretaker check: exit %d: %s\n%s", c.Code, c.rep.Summary, strings.Join(c.rep.Problems, "\n"))
	}
}

// mustRotate runs rotate-ca and wants exit 0 with the new CA everywhere.
func (l *e2eLab) mustRotate(t *testing.T, extra ...string) cliResult {
	t.Helper()
	old := l.newCA()
	res := l.runCaretaker(l.rotateArgs(extra...)...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca failed:\n%s", res.Describe())
	}
	ca := l.newCA()
	if bytes.Equal(ca, old) {
		t.Fatalf("the datastore still holds the CA from before the rotation (%s)", caName(old))
	}
	l.assertClusterHoldsCA(ca)
	return res
}

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

// checkModeTrees are the node paths --check must not change (issue 10).
func (l *e2eLab) checkModeTrees(node string) []string {
	n := l.Node(node)
	sd := filepath.Join(n.K3s.DataDir, "server")
	if n.Role == inventory.RoleAgent {
		sd = filepath.Join(n.K3s.DataDir, "agent")
	}
	return []string{"/etc/rancher", "/etc/systemd/system", filepath.Join(sd, "tls"), filepath.Join(sd, "cred"), filepath.Join(sd, "token")}
}

// snapshotNode records the files of the check-mode trees of a node.
func (l *e2eLab) snapshotNode(node string) treeSnapshot {
	all := treeSnapshot{}
	for _, p := range l.checkModeTrees(node) {
		host := l.HostPath(node, p)
		fi, err := os.Stat(host)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			b, _ := os.ReadFile(host)
			all[p] = fileState{SHA256: fmt.Sprintf("%x", b), Mode: fi.Mode(), Size: fi.Size()}
			continue
		}
		for rel, st := range snapshotTree(l.t, host) {
			all[filepath.Join(p, rel)] = st
		}
	}
	return all
}

func accCheckModeChangesNothing(t *testing.T, l *e2eLab) {
	before := map[string]treeSnapshot{}
	for _, n := range l.Nodes("") {
		before[n] = l.snapshotNode(n)
	}
	res := l.runCaretaker(l.rotateArgs("--check")...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca --check failed:\n%s", res.Describe())
	}
	for _, n := range l.Nodes("") {
		if d := diffTrees(before[n], l.snapshotNode(n)); len(d) > 0 {
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
	if got := strings.Join(steps, ","); got != "facts,preflight,backup,snapshot,generate,rotate-ca,servers,serving-certs,restore-server,tokens,agents,verify,trust,kubeconfigs,summary" {
		t.Errorf("the plan's steps are %s", got)
	}
	out := strings.Join(res.Output(""), "\n")
	want := []string{"would back up", "would stage a new self-signed CA set", "would run on server-1: k3s certificate rotate-ca",
		"would strip server on server-1", "would strip server on server-2", "would strip server on server-3",
		"would restart k3s on server-2", "dynamic-cert-regenerate", "would put `server` back byte for byte"}
	if len(l.Nodes(inventory.RoleAgent)) > 0 {
		want = append(want, "would restart k3s-agent on agent-1")
	}
	if m := containsAll(out, want...); len(m) > 0 {
		t.Errorf("the check-mode output lacks %q", m)
	}
}

// Without the workaround the rotation fails and names every stale node
// (the datastore holds the new CA, every disk the old one); with a server
// that does not come back the run stops before the next one and says how
// to go on; once fixed, rotate-ca again finishes: disks = datastore = live
// chain, every config source byte-identical.
func accBugThenWorkaround(t *testing.T, l *e2eLab) {
	original := l.allConfigSources()
	oldCA := l.serverCA("server-1")

	res := l.runCaretaker(l.rotateArgs("-p", "workaround=never")...)
	if res.Code == 0 {
		t.Fatalf("rotate-ca with workaround=never succeeded on a cluster with the bug:\n%s", res.Describe())
	}
	if st := res.StepStatus("servers", "server-1"); st != "failed" {
		t.Fatalf("step servers on server-1: %q, want failed:\n%s", st, res.Describe())
	}
	msg := res.StepError("servers", "server-1")
	if m := containsAll(msg, append(l.Nodes(""), "k3s#11233")...); len(m) > 0 {
		t.Errorf("the failure does not name every stale node and the bug (missing %v):\n%s", m, msg)
	}
	if !strings.Contains(strings.Join(res.Notes(), "\n"), "-p workaround=always") {
		t.Errorf("the notes do not advise -p workaround=always:\n%s", strings.Join(res.Notes(), "\n"))
	}
	if res.Started("servers", "server-2") {
		t.Errorf("server-2 was touched after server-1 failed")
	}
	ds := l.newCA()
	if bytes.Equal(ds, oldCA) {
		t.Fatal("the datastore does not hold the new CA after rotate-ca ran")
	}
	for _, s := range l.Nodes(inventory.RoleServer) {
		if got := l.serverCA(s); !bytes.Equal(got, oldCA) {
			t.Errorf("%s: disk holds %s, want the old CA %s (the bug keeps it)", s, caName(got), caName(oldCA))
		}
	}
	if d := sameSources(original, l.allConfigSources()); len(d) > 0 {
		t.Errorf("workaround=never changed config sources: %v", d)
	}

	// A server that does not come back stops the run before the next one.
	if err := l.fault("server-2", lab.FaultFailStart); err != nil {
		t.Fatal(err)
	}
	s3 := l.configSources("server-3")
	res = l.runCaretaker(l.rotateArgs()...)
	if err := l.fault("server-2", lab.FaultClear); err != nil {
		t.Fatal(err)
	}
	if res.Code == 0 {
		t.Fatalf("rotate-ca succeeded with server-2 failing to start:\n%s", res.Describe())
	}
	if st := res.StepStatus("servers", "server-2"); st != "failed" {
		t.Fatalf("step servers on server-2: %q, want failed:\n%s", st, res.Describe())
	}
	if st := res.StepStatus("servers", "server-1"); st != "changed" {
		t.Errorf("step servers on server-1: %q, want changed (the rotation in progress continued)", st)
	}
	if res.Started("servers", "server-3") {
		t.Errorf("server-3 was touched after server-2 failed to come back")
	}
	if m := containsAll(res.StepError("servers", "server-2"), "server-2", "crash-loops"); len(m) > 0 {
		t.Errorf("the failure does not say what happened on server-2 (missing %v):\n%s", m, res.StepError("servers", "server-2"))
	}
	notes := strings.Join(res.Notes(), "\n")
	if m := containsAll(notes, "caretaker run rotate-ca", "caretaker run restore-server", "caretaker run restore -p backup="); len(m) > 0 {
		t.Errorf("the notes do not say how to resume or restore (missing %v):\n%s", m, notes)
	}
	if d := sameSources(prefixed("server-3", s3), prefixed("server-3", l.configSources("server-3"))); len(d) > 0 {
		t.Errorf("server-3 was not restarted but its sources changed: %v", d)
	}

	// Fixed: running rotate-ca again finishes the rotation.
	faulted := res
	res = l.runCaretaker(l.rotateArgs()...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca after the fault was cleared failed:\n%s", res.Describe())
	}
	for _, step := range []string{"generate", "rotate-ca"} {
		if st := res.StepStatus(step, "server-1"); st != "skipped" {
			t.Errorf("resumed rotation: step %s %q, want skipped (the datastore already holds the new CA)", step, st)
		}
	}
	l.assertClusterHoldsCA(l.newCA())
	if d := sameSources(original, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources are not back to the original after the rotation: %v", d)
	}
	for node, want := range map[string]string{"server-1": "50-server.yaml", "server-2": l.Node("server-2").K3s.UnitFile, "server-3": ".env"} {
		if o := strings.Join(res.Output(node), "\n"); !strings.Contains(o, want) {
			t.Errorf("%s: the strip output does not name %s:\n%s", node, want, o)
		}
	}
	if o := strings.Join(append(faulted.Output("server-2"), res.Output("server-2")...), "\n"); strings.Count(o, "systemctl daemon-reload") < 2 {
		t.Errorf("server-2: the unit was edited (strip) and restored without a daemon-reload each:\n%s", o)
	}
	l.assertNoSecret(res)
	l.assertRunArtifacts(res)
	l.mustCheck(t)
}

// assertRunArtifacts checks what a finished rotation leaves on the
// controller: one backup per node (files 0600, dirs 0700) and the new join
// token in a 0600 file.
func (l *e2eLab) assertRunArtifacts(res cliResult) {
	t := l.t
	t.Helper()
	var tokenFile string
	for _, n := range res.Notes() {
		if i := strings.Index(n, " is in "); i > 0 {
			tokenFile = strings.Fields(n[i+len(" is in "):])[0]
		}
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the new token file %q: %v; want mode 0600", tokenFile, err)
	}
	if b, _ := os.ReadFile(tokenFile); !strings.HasPrefix(string(b), "K10") {
		t.Errorf("the token file does not hold a K10 token")
	}
	dir := filepath.Join(l.StateDir, "backups", res.runID())
	backups := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
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
	if err != nil || backups != len(l.Nodes("")) {
		t.Errorf("%d node backups in %s (%v), want %d", backups, dir, err, len(l.Nodes("")))
	}
}

func accLocks(t *testing.T, l *e2eLab) {
	pb := writePlaybook(t, "hold.star", holdPlaybook)
	dirA, dirB := t.TempDir(), t.TempDir()
	const ttl = 3 * time.Second
	a := startLive(t, []string{"CARETAKER_LOCK_TTL=" + ttl.String()}, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirA, "-p", "secs=60s")
	a.waitFor(60*time.Second, "run A holding", isOutput("server-1", "holding"))
	idA := a.result().runID()

	same := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirA, "-p", "secs=0s")
	if same.Code != exitLocked || len(same.Events) != 0 || !strings.Contains(same.Stderr, `cluster "lab" is locked on this machine`) {
		t.Errorf("second run on this machine: %s", same.Describe())
	}
	other := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirB, "-p", "secs=0s")
	if missing := containsAll(other.Stderr, `cluster "lab" is locked in its etcd`, "run "+idA, "playbook hold", "--break-lock"); other.Code != exitLocked || len(missing) > 0 {
		t.Errorf("second run from another state dir: exit %d, stderr lacks %q:\n%s", other.Code, missing, other.Stderr)
	}
	cli := l.etcdClient()
	if h := lockHolder(t, cli, "lab"); h == nil || h.RunID != idA {
		t.Fatalf("etcd holder = %+v, want run %s", h, idA)
	}
	a.kill9()
	killed := time.Now()
	for lockHolder(t, cli, "lab") != nil {
		if time.Since(killed) > ttl+10*time.Second {
			t.Fatalf("the etcd lock is still held %s after its holder was killed (TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("etcd lock freed %s after kill -9 of its holder (lease TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)

	// --break-lock: the broken run notices and starts no further step.
	b := startLive(t, []string{"CARETAKER_LOCK_TTL=" + ttl.String()}, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", t.TempDir(), "-p", "secs=6s")
	b.waitFor(60*time.Second, "run B holding", isOutput("server-1", "holding"))
	c := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", t.TempDir(), "-p", "secs=0s", "--break-lock")
	if c.Code != 0 || !strings.Contains(c.Stderr, "--break-lock: broke the cluster lock of lab held by") {
		t.Errorf("run with --break-lock: %s", c.Describe())
	}
	resB := b.wait(90 * time.Second)
	if resB.Code != exitLocked || resB.Started("after", "server-1") || !strings.Contains(resB.Stderr, "lost the cluster lock of lab") {
		t.Errorf("the broken run: %s", resB.Describe())
	}
	if h := lockHolder(t, cli, "lab"); h != nil {
		t.Errorf("the lock is still held after the runs ended: %+v", h)
	}
}

// withNodePort is a copy of the lab's inventory where node's SSH port is
// port (an unreachable node).
func (l *e2eLab) withNodePort(t *testing.T, node string, port int) string {
	t.Helper()
	data, err := os.ReadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var set func(n *yaml.Node) bool
	set = func(n *yaml.Node) bool {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "name" && n.Content[i+1].Value == node {
					for j := 0; j+1 < len(n.Content); j += 2 {
						if n.Content[j].Value == "port" {
							n.Content[j+1].Value = fmt.Sprint(port)
							return true
						}
					}
					n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "port"}, &yaml.Node{Kind: yaml.ScalarNode, Value: fmt.Sprint(port)})
					return true
				}
			}
		}
		for _, c := range n.Content {
			if set(c) {
				return true
			}
		}
		return false
	}
	if !set(&doc) {
		t.Fatalf("no node %s in the inventory", node)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(l.InventoryPath()), "inventory-unreachable.yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
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

// On a fixed release workaround=auto strips nothing; nodes with secure K10
// tokens get the new CA hash where their token is set.
func accFixedReleaseSecureTokens(t *testing.T, l *e2eLab) {
	before := l.allConfigSources()
	res := l.mustRotate(t)
	for _, s := range l.Nodes(inventory.RoleServer) {
		if _, err := os.Stat(l.HostPath(s, filepath.Join(l.Node(s).K3s.DataDir, "caretaker", "strip"))); err == nil {
			t.Errorf("%s: strip records exist: workaround=auto stripped on a fixed release", s)
		}
		if !strings.Contains(strings.Join(res.Output(s), "\n"), "keeping server=") {
			t.Errorf("%s: the output does not say server was kept", s)
		}
	}
	newHash, err := k3s.HashCA(l.newCA())
	if err != nil {
		t.Fatal(err)
	}
	after := l.allConfigSources()
	for _, n := range l.Nodes("") {
		changed := 0
		for k, b := range after {
			if strings.HasPrefix(k, n+" ") && !bytes.Equal(b, before[k]) {
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
		if st := l.serviceState(n); st != "active" {
			t.Errorf("%s is %s after the rotation", n, st)
		}
	}
	l.assertNoSecret(res)
}

func accRotateAgainTwice(t *testing.T, l *e2eLab) {
	for i := 2; i <= 3; i++ {
		res := l.mustRotate(t)
		t.Logf("rotation %d: %s", i, res.Took.Round(100*time.Millisecond))
		l.mustCheck(t)
	}
}

// leafSerials maps file+subject to serial for every leaf certificate of a
// node, read from its tree.
func (l *e2eLab) leafSerials(node string) map[string]string {
	out := map[string]string{}
	for _, c := range k3s.CheckCertificates(l.certFiles(node), time.Now(), 0) {
		if !c.IsCA {
			out[c.Filename+" "+c.Subject] = c.Serial
		}
	}
	return out
}

// certFiles reads the certificate files `k3s certificate check` lists.
func (l *e2eLab) certFiles(node string) map[string][]byte {
	n := l.Node(node)
	rel, err := k3s.FilesForServices(k3s.CheckServices(n.Role == inventory.RoleServer))
	if err != nil {
		l.t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, p := range rel {
		full := filepath.Join(n.K3s.DataDir, p)
		if b, err := os.ReadFile(l.HostPath(node, full)); err == nil {
			out[full] = b
		}
	}
	return out
}

func accLeafRotation(t *testing.T, l *e2eLab) {
	before := map[string]map[string]string{}
	for _, n := range l.Nodes("") {
		before[n] = l.leafSerials(n)
	}
	res := l.runCaretaker("run", "rotate-leaf-certs", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("rotate-leaf-certs failed:\n%s", res.Describe())
	}
	for _, n := range l.Nodes("") {
		after := l.leafSerials(n)
		renewed := 0
		for k, s := range before[n] {
			if after[k] != "" && after[k] != s {
				renewed++
			}
		}
		if renewed == 0 || renewed < len(before[n])/2 {
			t.Errorf("%s: %d of %d leaf certificates have a new serial after rotate-leaf-certs", n, renewed, len(before[n]))
		}
	}
	l.mustCheck(t)
}

func accBackupRestore(t *testing.T, l *e2eLab) {
	original := l.allConfigSources()
	res := l.runCaretaker("run", "backup", "-i", l.InventoryPath(), "--yes", "--output", "json", "-p", "name=acceptance")
	if res.Code != 0 {
		t.Fatalf("backup failed:\n%s", res.Describe())
	}
	// Damage what a backup holds: a config source and a certificate.
	cfg := l.Node("server-1").K3s.ConfigFile
	cert := filepath.Join(l.Node("server-2").K3s.DataDir, "server", "tls", "client-admin.crt")
	certBefore := l.ReadNodeFile("server-2", cert)
	l.replaceNodeFile(t, "server-1", cfg, append(l.ReadNodeFile("server-1", cfg), []byte("# changed after the backup\n")...))
	l.replaceNodeFile(t, "server-2", cert, selfSigned(t, "system:admin", false, time.Now().Add(24*time.Hour)))

	res = l.runCaretaker("run", "restore", "-i", l.InventoryPath(), "--yes", "--output", "json", "-p", "backup=acceptance")
	if res.Code != 0 {
		t.Fatalf("restore failed:\n%s", res.Describe())
	}
	if d := sameSources(original, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources after restore differ from the backup: %v", d)
	}
	if got := l.ReadNodeFile("server-2", cert); !bytes.Equal(got, certBefore) {
		t.Errorf("server-2: %s was not restored", cert)
	}
	l.mustCheck(t)
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

// accSnapshotRestore: a datastore snapshot is taken with K3s's own
// command and copied with the token (0600, same sha256); restore-datastore
// rehearses on both engines, and on the real engine puts the datastore
// back (a key written after the snapshot is gone), rejoins every server
// and leaves the config sources byte for byte. The simulator's etcd
// members cannot be reset, so the restore itself is proven on real K3s.
func accSnapshotRestore(t *testing.T, l *e2eLab) {
	res := l.runCaretaker("run", "snapshot", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("snapshot failed:\n%s", res.Describe())
	}
	var snap struct {
		Local     string `json:"local"`
		TokenFile string `json:"token_file"`
		SHA256    string `json:"sha256"`
		Path      string `json:"path"`
	}
	for _, e := range res.Events {
		if e.Type == "step_done" && e.str("step_name") == "snapshot" {
			b, _ := json.Marshal(e.Raw["result"])
			_ = json.Unmarshal(b, &snap)
		}
	}
	data, err := os.ReadFile(snap.Local)
	if err != nil {
		t.Fatalf("the controller's copy %q: %v (result %+v)", snap.Local, err, snap)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != snap.SHA256 || !bytes.Equal(data, l.ReadNodeFile("server-1", snap.Path)) {
		t.Errorf("the copy differs from %s on server-1 or from the sha256 in the result", snap.Path)
	}
	for _, p := range []string{snap.Local, snap.TokenFile} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: want mode 0600: %v %v", p, fi, err)
		}
	}
	if tok, _ := os.ReadFile(snap.TokenFile); strings.TrimSpace(string(tok)) != l.Token() {
		t.Error("the token file beside the snapshot does not hold the cluster token")
	}
	if strings.Contains(res.Stdout, l.Token()) {
		t.Error("the token appears in the JSON events")
	}

	// Written after the snapshot: the restore must take it away.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.etcdClient().Put(ctx, "/caretaker-acceptance/after-snapshot", "x"); err != nil {
		t.Fatal(err)
	}
	sources := l.allConfigSources()
	check := l.runCaretaker("run", "restore-datastore", "-i", l.InventoryPath(), "-p", "snapshot="+snap.Local, "--check", "--yes", "--output", "json")
	if check.Code != 0 || check.RunStatus() != "ok" {
		t.Fatalf("restore-datastore --check:\n%s", check.Describe())
	}
	if l.Engine() != lab.EngineReal {
		return
	}
	restored := l.runCaretaker("run", "restore-datastore", "-i", l.InventoryPath(), "-p", "snapshot="+snap.Local, "--yes", "--output", "json")
	if restored.Code != 0 {
		t.Fatalf("restore-datastore:\n%s", restored.Describe())
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	got, err := l.etcdClient().Get(ctx2, "/caretaker-acceptance/after-snapshot")
	if err != nil || len(got.Kvs) != 0 {
		t.Errorf("the key written after the snapshot is still there (%v): the datastore was not restored", err)
	}
	if d := sameSources(sources, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources after the restore differ: %v", d)
	}
	for _, s := range []string{"server-2", "server-3"} {
		if r := restored.StepStatus("rejoin", s); r != "changed" {
			t.Errorf("rejoin on %s: %q", s, r)
		}
	}
	l.mustCheck(t)
}

// accKubeconfig: after the rotations, `caretaker kubeconfig` writes a
// cluster-admin kubeconfig (0600) that trusts the cluster's current CA and
// works against the API (GET /version, also asked again here with the
// written file); an existing file is refused; the key never reaches the
// output.
func accKubeconfig(t *testing.T, l *e2eLab) {
	out := filepath.Join(t.TempDir(), "admin.yaml")
	res := runCaretakerBinary(t, "kubeconfig", "-i", l.InventoryPath(), "--out", out)
	if res.Code != 0 || !strings.Contains(res.Stderr, "works from this machine") {
		t.Fatalf("kubeconfig: %s\n%s", res.Describe(), res.Stderr)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: want 0600: %v %v", out, fi, err)
	}
	cfg, err := clientcmd.LoadFromFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ctxName := cfg.CurrentContext
	c := cfg.Clusters[cfg.Contexts[ctxName].Cluster]
	if !bytes.Equal(c.CertificateAuthorityData, l.serverCA("server-1")) {
		t.Error("the kubeconfig does not trust server-1's current server CA")
	}
	key := cfg.AuthInfos[cfg.Contexts[ctxName].AuthInfo].ClientKeyData
	if len(key) == 0 || strings.Contains(res.Stdout+res.Stderr, strings.TrimSpace(string(key))) {
		t.Error("the client key is missing from the file or appears in the output")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", out)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := cs.Discovery().ServerVersion(); err != nil || v.GitVersion == "" {
		t.Errorf("GET /version with the written kubeconfig: %v %v", v, err)
	}
	again := runCaretakerBinary(t, "kubeconfig", "-i", l.InventoryPath(), "--out", out)
	if again.Code != exitBadInput || !strings.Contains(again.Stderr, "--force") {
		t.Errorf("kubeconfig over an existing file: %s", again.Describe())
	}
}
