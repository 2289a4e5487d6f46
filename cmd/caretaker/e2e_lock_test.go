package main

// End-to-end tests of the run locks (issue 6 "Locks") against the lab: the
// local file lock, the cluster lock in the lab's real etcd (reached through
// a server's SSH tunnel), the holder named in refusals, expiry with the
// lease when the holder is killed, and --break-lock.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/runner"
)

// etcdClient connects straight to the lab's etcd (not through caretaker).
func (l *e2eLab) etcdClient() *clientv3.Client {
	l.t.Helper()
	st := l.Status()
	cert, err := tls.LoadX509KeyPair(st.Etcd.Cert, st.Etcd.Key)
	if err != nil {
		l.t.Fatal(err)
	}
	caPEM, err := os.ReadFile(st.Etcd.CACert)
	if err != nil {
		l.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cli, err := clientv3.New(clientv3.Config{Endpoints: st.Etcd.Endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { cli.Close() })
	return cli
}

// lockHolder reads the cluster lock's holder key from etcd (nil: free).
func lockHolder(t *testing.T, cli *clientv3.Client, cluster string) *runner.LockHolder {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/caretaker/lock/"+cluster+"/holder")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var h runner.LockHolder
	if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
		t.Fatalf("holder key: %v: %s", err, resp.Kvs[0].Value)
	}
	return &h
}

// Acceptance: two concurrent runs against one cluster: exactly one
// proceeds, the other exits 3 and names the holder (from this machine: the
// local lock; from "another machine", a separate state dir: the etcd
// lock); killing the holder frees the etcd lock within the lease TTL.
func TestE2EConcurrentRunsLock(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 2, Agents: 0})
	pb := writePlaybook(t, "hold.star", holdPlaybook)
	const ttl = 3 * time.Second
	ttlEnv := fmt.Sprintf("CARETAKER_LOCK_TTL=%s", ttl)
	dirA, dirB := t.TempDir(), t.TempDir()

	a := startLive(t, []string{ttlEnv}, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirA, "-p", "secs=60s")
	a.waitFor(60*time.Second, "run A holding", isOutput("server-1", "holding"))
	idA := a.result().runID()
	pidA := a.cmd.Process.Pid

	// The same machine (same state dir): the local lock refuses.
	same := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirA, "-p", "secs=0s")
	if same.Code != exitLocked || len(same.Events) != 0 {
		t.Errorf("second run on this machine: %s", same.Describe())
	}
	if missing := containsAll(same.Stderr, `cluster "lab" is locked on this machine`, "run "+idA, fmt.Sprintf("pid %d", pidA), "playbook hold"); len(missing) > 0 {
		t.Errorf("local refusal lacks %q:\n%s", missing, same.Stderr)
	}
	// Another machine (its own state dir): the cluster lock in etcd refuses.
	other := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirB, "-p", "secs=0s")
	if other.Code != exitLocked || len(other.Events) != 0 {
		t.Errorf("second run from another state dir: %s", other.Describe())
	}
	if missing := containsAll(other.Stderr, `cluster "lab" is locked in its etcd`, "run "+idA, fmt.Sprintf("pid %d", pidA), "playbook hold", "--break-lock", "TTL 3s"); len(missing) > 0 {
		t.Errorf("etcd refusal lacks %q:\n%s", missing, other.Stderr)
	}
	if runs, _ := runner.ListRuns(dirB); len(runs) != 0 {
		t.Errorf("the refused run left a journal: %v", runs)
	}
	// Only A ran a step.
	if !a.result().Started("hold", "server-1") {
		t.Error("run A did not start")
	}

	cli := l.etcdClient()
	if h := lockHolder(t, cli, "lab"); h == nil || h.RunID != idA || h.PID != pidA || h.Playbook != "hold" {
		t.Fatalf("etcd holder = %+v, want run %s pid %d", h, idA, pidA)
	}
	a.kill9()
	killed := time.Now()
	for lockHolder(t, cli, "lab") != nil {
		if time.Since(killed) > ttl+5*time.Second {
			t.Fatalf("the etcd lock is still held %s after its holder was killed (TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	freed := time.Since(killed)
	t.Logf("etcd lock freed %s after kill -9 of its holder (lease TTL %s)", freed.Round(time.Millisecond), ttl)
	if freed > ttl+2*time.Second {
		t.Errorf("freed after %s, want within the TTL %s", freed, ttl)
	}
	next := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", dirB, "-p", "secs=0s")
	if next.Code != 0 || next.RunStatus() != "ok" {
		t.Errorf("a run after the holder died: %s", next.Describe())
	}
	if h := lockHolder(t, cli, "lab"); h != nil {
		t.Errorf("the lock is still held after the run ended: %+v", h)
	}
}

// --break-lock revokes the holder's lease and says whose lock it broke;
// the broken run notices and starts no further step (exit 3).
func TestE2EBreakLock(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 1, Agents: 0})
	pb := writePlaybook(t, "hold.star", holdPlaybook)
	a := startLive(t, []string{"CARETAKER_LOCK_TTL=3s"}, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", t.TempDir(), "-p", "secs=5s")
	a.waitFor(60*time.Second, "run A holding", isOutput("server-1", "holding"))
	idA := a.result().runID()

	t.Logf("run A holds the lock after %s", a.result().Took.Round(time.Millisecond))
	b := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", t.TempDir(), "-p", "secs=0s", "--break-lock")
	if b.Code != 0 || b.RunStatus() != "ok" {
		t.Fatalf("run with --break-lock: %s", b.Describe())
	}
	if missing := containsAll(b.Stderr, "--break-lock: broke the cluster lock of lab held by", "run "+idA, "lease", "that run stops before its next step"); len(missing) > 0 {
		t.Errorf("--break-lock did not say what it broke (%q):\n%s", missing, b.Stderr)
	}
	t.Logf("run B broke the lock and ran in %s", b.Took.Round(time.Millisecond))
	resA := a.wait(60 * time.Second)
	t.Logf("run A ended %s after it started", resA.Took.Round(time.Millisecond))
	if resA.Code != exitLocked || resA.RunStatus() != "aborted" || resA.Started("after", "server-1") {
		t.Errorf("the broken run: %s", resA.Describe())
	}
	if !strings.Contains(resA.Stderr, "lost the cluster lock of lab") {
		t.Errorf("the broken run did not say it lost the lock:\n%s", resA.Stderr)
	}

	// Nothing to break: says so.
	c := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", t.TempDir(), "-p", "secs=0s", "--break-lock")
	if c.Code != 0 || !strings.Contains(c.Stderr, "was free: nothing broken") {
		t.Errorf("--break-lock of a free lock: %s", c.Describe())
	}
	// Read-only and check-mode runs take no lock.
	d := runCaretakerBinary(t, "run", pb, "-i", l.InventoryPath(), "--yes", "-o", "json", "--state-dir", t.TempDir(), "-p", "secs=0s", "--check")
	if d.Code != 0 {
		t.Errorf("check-mode run: %s", d.Describe())
	}
}
