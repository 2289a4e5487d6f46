package main

// Acceptance scenarios of the token rotation (issue 14, item 4), run on
// both backends through accGroups.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// accRotateToken: rotate-token --check changes no byte; rotate-token to a
// given token leaves every server serving with it (K3s active after its
// restart, SD/token holding the new passphrase with the CA hash kept, the
// running server accepting it), the datastore opening with the new token
// and no longer with the old, every config source changed only in the
// token, agents (simulator) restarted with it, the token files 0600 on the
// controller and no token in the output. Read independently of caretaker:
// node files from the node's tree, the datastore straight from etcd.
func accRotateToken(t *testing.T, l *e2eLab) {
	oldTok := l.Token()
	oldPass, err := k3s.NormalizeToken(oldTok)
	if err != nil {
		t.Fatal(err)
	}
	before := l.allConfigSources()
	invocations := map[string]string{}
	for _, n := range l.Nodes("") {
		invocations[n] = l.invocationID(n)
	}
	check := l.runCaretaker("run", "rotate-token", "-i", l.InventoryPath(), "--check", "--yes", "--output", "json")
	if check.Code != 0 || check.RunStatus() != "ok" {
		t.Fatalf("rotate-token --check:\n%s", check.Describe())
	}
	if d := sameSources(before, l.allConfigSources()); len(d) > 0 || l.Token() != oldTok {
		t.Fatalf("rotate-token --check changed %v (or server-1's SD/token)", d)
	}

	const newPass = "Acceptance-rotated-token-0123456789"
	tf := filepath.Join(t.TempDir(), "new-token")
	if err := os.WriteFile(tf, []byte(newPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := l.runCaretaker("run", "rotate-token", "-i", l.InventoryPath(), "-p", "new_token_file="+tf, "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("rotate-token failed:\n%s", res.Describe())
	}
	t.Logf("rotate-token: %s", res.Took.Round(100*time.Millisecond))
	for _, n := range l.Nodes("") {
		if st := l.serviceState(n); st != "active" {
			t.Errorf("%s is %s after the rotation", n, st)
		}
		if id := l.invocationID(n); id == invocations[n] {
			t.Errorf("%s was not restarted (same invocation %s)", n, id)
		}
		step := map[string]string{inventory.RoleServer: "servers", inventory.RoleAgent: "agents"}[l.Node(n).Role]
		if st := res.StepStatus(step, n); st != "changed" {
			t.Errorf("step %s on %s: %q, want changed", step, n, st)
		}
	}
	l.assertServersRunToken(t, oldTok, newPass)
	l.assertDatastoreKey(t, oldPass, newPass)
	after := l.allConfigSources()
	for k, b := range before {
		want := bytes.ReplaceAll(b, []byte(oldPass), []byte(newPass))
		if !bytes.Equal(after[k], want) {
			t.Errorf("%s: after the rotation it is not the same file with the new token's password in place of the old one", k)
		}
		if bytes.Contains(after[k], []byte(oldPass)) {
			t.Errorf("%s still holds the old token", k)
		}
	}
	if strings.Contains(res.Stdout+res.Stderr, newPass) || strings.Contains(res.Stdout+res.Stderr, oldPass) {
		t.Error("a token appears in caretaker's output")
	}
	l.assertTokenFiles(t, res, newPass, oldPass)
	l.mustCheck(t)
}

// assertServersRunToken: every server's SD/token is
// K10<its CA hash>::server:<new>, the hash the one it had.
func (l *e2eLab) assertServersRunToken(t *testing.T, oldTok, newPass string) {
	t.Helper()
	old, _ := k3s.ParseToken(oldTok)
	for _, s := range l.Nodes(inventory.RoleServer) {
		tok := strings.TrimSpace(string(l.ReadNodeFile(s, filepath.Join(l.Node(s).K3s.DataDir, "server", "token"))))
		pt, err := k3s.ParseToken(tok)
		if err != nil || pt.Password != newPass {
			t.Errorf("%s: SD/token does not hold the new token (%v)", s, err)
			continue
		}
		if pt.CAHash != old.CAHash {
			t.Errorf("%s: SD/token's CA hash changed (%s -> %s): the CA did not", s, old.CAHash, pt.CAHash)
		}
	}
}

// assertDatastoreKey: the bootstrap data is under the new token's key
// only, and it opens with the new token.
func (l *e2eLab) assertDatastoreKey(t *testing.T, oldPass, newPass string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := l.etcdClient().Get(ctx, "/bootstrap", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != k3s.StorageKey(newPass) {
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		t.Fatalf("bootstrap keys %v, want only %s (the new token's; the old one's is %s)", keys, k3s.StorageKey(newPass), k3s.StorageKey(oldPass))
	}
	if _, err := k3s.Decrypt(newPass, string(resp.Kvs[0].Value)); err != nil {
		t.Errorf("the bootstrap data does not open with the new token: %v", err)
	}
	if _, err := k3s.Decrypt(oldPass, string(resp.Kvs[0].Value)); err == nil {
		t.Error("the bootstrap data still opens with the old token")
	}
}

// assertTokenFiles: the summary names the run's token files; both are
// 0600 and hold the new and the old token.
func (l *e2eLab) assertTokenFiles(t *testing.T, res cliResult, newPass, oldPass string) {
	t.Helper()
	for _, n := range res.Notes() {
		if !strings.Contains(n, "the new server token is in ") {
			continue
		}
		rest := strings.SplitN(n, "the new server token is in ", 2)[1]
		files := map[string]string{strings.SplitN(rest, " (0600)", 2)[0]: newPass}
		if i := strings.Index(rest, "the old one in "); i >= 0 {
			files[strings.SplitN(rest[i+len("the old one in "):], ":", 2)[0]] = oldPass
		}
		for p, want := range files {
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: want a 0600 file: %v %v", p, fi, err)
				continue
			}
			if b, _ := os.ReadFile(p); strings.TrimSpace(string(b)) != want {
				t.Errorf("%s does not hold the expected token", p)
			}
		}
		return
	}
	t.Errorf("no note names the token files: %v", res.Notes())
}

// invocationID is systemd's InvocationID of the node's K3s service.
func (l *e2eLab) invocationID(node string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, _, err := l.Exec(ctx, node, "systemctl show "+l.Node(node).K3s.Service+" --property=InvocationID --value")
	if err != nil {
		l.t.Fatalf("e2e: %s: systemctl show: %v", node, err)
	}
	return strings.TrimSpace(out)
}

// accRotateTokenResume: a second rotation (to a generated token) whose
// second server does not start stops there (the third is not touched);
// once the fault is cleared, `caretaker resume RUN` finishes it with the
// token the run saved, and every server serves with it.
func accRotateTokenResume(t *testing.T, l *e2eLab) {
	oldTok := l.Token()
	oldPass, _ := k3s.NormalizeToken(oldTok)
	if err := l.fault("server-2", "fail-start"); err != nil {
		t.Fatal(err)
	}
	cleared := false
	defer func() {
		if !cleared {
			_ = l.fault("server-2", "clear")
		}
	}()
	res := l.runCaretaker("run", "rotate-token", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != exitFailed || res.StepStatus("servers", "server-2") != "failed" || res.Started("servers", "server-3") {
		t.Fatalf("rotate-token with a failing server-2: exit %d, server-2 %q, server-3 started %t\n%s", res.Code, res.StepStatus("servers", "server-2"), res.Started("servers", "server-3"), res.Describe())
	}
	var id string
	for _, e := range res.Events {
		if e.Type == "run_started" {
			id = e.str("run_id")
		}
	}
	if err := l.fault("server-2", "clear"); err != nil {
		t.Fatal(err)
	}
	cleared = true
	resumed := runCaretakerBinary(t, "resume", id, "--state-dir", l.StateDir, "--yes", "-o", "json")
	if resumed.Code != 0 {
		t.Fatalf("resume %s: %s", id, resumed.Describe())
	}
	for _, c := range []struct{ step, node, status string }{
		{"rotate", "server-1", "skipped"}, {"servers", "server-1", "skipped"}, {"servers", "server-2", "changed"}, {"servers", "server-3", "changed"},
	} {
		if got := resumed.StepStatus(c.step, c.node); got != c.status {
			t.Errorf("resumed run: %s on %s = %q, want %q", c.step, c.node, got, c.status)
		}
	}
	tf := filepath.Join(l.StateDir, "backups", id, "datastore", "new-token")
	b, err := os.ReadFile(tf)
	if err != nil {
		t.Fatalf("the run's token file: %v", err)
	}
	newPass := strings.TrimSpace(string(b))
	l.assertServersRunToken(t, oldTok, newPass)
	l.assertDatastoreKey(t, oldPass, newPass)
	for _, n := range l.Nodes("") {
		if st := l.serviceState(n); st != "active" {
			t.Errorf("%s is %s after the resumed rotation", n, st)
		}
	}
	if strings.Contains(res.Stdout+resumed.Stdout, newPass) {
		t.Error("the generated token appears in the JSON events")
	}
	l.mustCheck(t)
}
