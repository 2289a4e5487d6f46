package lock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/lock"
)

// startLockEtcd starts a real embedded etcd on loopback ports and returns
// its client endpoint.
func startLockEtcd(t *testing.T) string {
	t.Helper()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	cfg := embed.NewConfig()
	cfg.Name = "locktest"
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(t.TempDir(), "etcd.log")}
	cfg.UnsafeNoFsync = true
	cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port())}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port())}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); <-e.Server.StopNotify() })
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start within 30s")
	}
	return cu.Host
}

func lockClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestClusterLockRefusesNamesHolderAndReleases(t *testing.T) {
	ep := startLockEtcd(t)
	ctx := context.Background()
	a, b := lockClient(t, ep), lockClient(t, ep)
	ha := lock.Holder{User: "alice", Host: "ops-1", PID: 4242, RunID: "run-a", Playbook: "rotate-ca", Since: time.Now().Add(-time.Minute)}
	la, err := lock.TakeCluster(ctx, a, "lab", ha, lock.ClusterOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = lock.TakeCluster(ctx, b, "lab", lock.Holder{User: "bob", RunID: "run-b"}, lock.ClusterOptions{TTL: 5 * time.Second})
	var le *lock.LockedError
	if !errors.Is(err, errs.ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("second lock: err = %v, want a LockedError", err)
	}
	for _, want := range []string{`cluster "lab" is locked in its etcd`, "alice@ops-1", "pid 4242", "run run-a", "playbook rotate-ca", "--break-lock", "TTL 5s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if le.Holder == nil || le.Holder.RunID != "run-a" || le.Scope != "cluster" {
		t.Errorf("holder = %+v", le.Holder)
	}
	// Another cluster is not affected.
	other, err := lock.TakeCluster(ctx, b, "lab2", lock.Holder{RunID: "run-c"}, lock.ClusterOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatalf("lock of another cluster: %v", err)
	}
	other.Unlock(ctx)

	h, err := lock.ReadClusterHolder(ctx, b, "lab")
	if err != nil || h == nil || h.User != "alice" {
		t.Errorf("ReadClusterLockHolder = %+v, %v", h, err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := lock.ReadClusterHolder(ctx, b, "lab"); err != nil || h != nil {
		t.Errorf("after unlock, holder = %+v, %v", h, err)
	}
	lb, err := lock.TakeCluster(ctx, b, "lab", lock.Holder{RunID: "run-b"}, lock.ClusterOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	lb.Unlock(ctx)
}

// A holder that dies without unlocking (its client stops keeping the lease
// alive) frees the lock within the lease TTL.
func TestClusterLockExpiresWithDeadHolder(t *testing.T) {
	ep := startLockEtcd(t)
	ctx := context.Background()
	dying, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ttl := 2 * time.Second
	if _, err := lock.TakeCluster(ctx, dying, "lab", lock.Holder{RunID: "dies"}, lock.ClusterOptions{TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	dying.Close() // no unlock, no revoke: like kill -9
	died := time.Now()
	b := lockClient(t, ep)
	for {
		l, err := lock.TakeCluster(ctx, b, "lab", lock.Holder{RunID: "next"}, lock.ClusterOptions{TTL: ttl})
		if err == nil {
			waited := time.Since(died)
			t.Logf("lock free %s after its holder died (TTL %s)", waited.Round(10*time.Millisecond), ttl)
			if waited > ttl+2*time.Second {
				t.Errorf("lock freed after %s, want within the TTL %s (+ slack)", waited, ttl)
			}
			l.Unlock(ctx)
			return
		}
		if !errors.Is(err, errs.ErrLocked) {
			t.Fatal(err)
		}
		if time.Since(died) > ttl+5*time.Second {
			t.Fatalf("lock still held %s after its holder died: %v", time.Since(died), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClusterLockBreak(t *testing.T) {
	ep := startLockEtcd(t)
	ctx := context.Background()
	a, b := lockClient(t, ep), lockClient(t, ep)
	la, err := lock.TakeCluster(ctx, a, "lab", lock.Holder{User: "alice", RunID: "stuck"}, lock.ClusterOptions{TTL: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := lock.TakeCluster(ctx, b, "lab", lock.Holder{User: "bob", RunID: "breaker"}, lock.ClusterOptions{TTL: 6 * time.Second, Break: true})
	if err != nil {
		t.Fatalf("--break-lock: %v", err)
	}
	defer lb.Unlock(ctx)
	if lb.Broken == nil || lb.Broken.RunID != "stuck" || lb.BrokenLease != la.Lease() {
		t.Errorf("Broken = %+v lease %x, want run stuck lease %x", lb.Broken, lb.BrokenLease, la.Lease())
	}
	// The broken holder learns it lost the lock (its lease was revoked) at
	// its next keepalive, within a third of the TTL.
	select {
	case <-la.Lost():
	case <-time.After(15 * time.Second):
		t.Fatal("the broken holder was not told it lost the lock")
	}
	if h, _ := lock.ReadClusterHolder(ctx, a, "lab"); h == nil || h.RunID != "breaker" {
		t.Errorf("holder after break = %+v", h)
	}
	// Breaking a free lock breaks nothing.
	lb.Unlock(ctx)
	lc, err := lock.TakeCluster(ctx, a, "lab", lock.Holder{RunID: "c"}, lock.ClusterOptions{TTL: 5 * time.Second, Break: true})
	if err != nil || lc.Broken != nil {
		t.Fatalf("break of a free lock: %+v %v", lc, err)
	}
	lc.Unlock(ctx)
}

func TestLocalLock(t *testing.T) {
	dir := t.TempDir()
	h := lock.Holder{User: "alice", Host: "ops-1", PID: os.Getpid(), RunID: "run-a", Playbook: "rotate-ca", Since: time.Now()}
	l, err := lock.TakeLocal(dir, "lab", h)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lock.TakeLocal(dir, "lab", lock.Holder{RunID: "run-b"})
	var le *lock.LockedError
	if !errors.As(err, &le) || !errors.Is(err, errs.ErrLocked) || le.Scope != "local" {
		t.Fatalf("second local lock: %v", err)
	}
	for _, want := range []string{"on this machine", "alice@ops-1", "run run-a", fmt.Sprintf("stop pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if l2, err := lock.TakeLocal(dir, "other/cluster", lock.Holder{}); err != nil {
		t.Errorf("another cluster: %v", err)
	} else {
		l2.Unlock()
	}
	l.Unlock()
	l3, err := lock.TakeLocal(dir, "lab", lock.Holder{RunID: "run-b"})
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l3.Unlock()
}

// The local lock dies with its process, even on kill -9.
func TestLocalLockFreedWhenHolderKilled(t *testing.T) {
	if os.Getenv("CARETAKER_LOCK_CHILD") != "" {
		_, err := lock.TakeLocal(os.Getenv("CARETAKER_LOCK_CHILD"), "lab", lock.NewHolder("child-run", "pb"))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("LOCKED")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLocalLockFreedWhenHolderKilled$")
	cmd.Env = append(os.Environ(), "CARETAKER_LOCK_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "LOCKED") {
		cmd.Process.Kill()
		t.Fatalf("child: %q", buf[:n])
	}
	_, err = lock.TakeLocal(dir, "lab", lock.Holder{})
	if !errors.Is(err, errs.ErrLocked) || !strings.Contains(err.Error(), "child-run") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) {
		t.Fatalf("while the child holds it: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := lock.TakeLocal(dir, "lab", lock.Holder{})
	if err != nil {
		t.Fatalf("after kill -9 of the holder: %v", err)
	}
	l.Unlock()
}
