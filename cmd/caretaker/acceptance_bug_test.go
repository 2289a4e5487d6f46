package main

// Acceptance scenarios of the bug group (accGroups): --check changes no
// byte, the bug reproduced then the workaround, and the locks.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/runner/inventory"
)

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
