package labtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/realnode"
)

// RequireReal makes a test that needs the real engine (root,
// systemd-nspawn, a K3s binary) say in one line why it cannot run: it is
// skipped on a developer's machine, and fails under CI ($CI set), where the
// engine must run.
func RequireReal(tb testing.TB) {
	tb.Helper()
	err := realnode.Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("needs the lab's real engine, which cannot run here: %v", err)
	}
	tb.Skipf("needs the lab's real engine (root, systemd-nspawn, $%s or ../shared/k3s/k3s.xz): %v", realnode.EnvK3sBinary, err)
}

// StartEngine starts a lab of o.Engine for the test (the simulator by
// default; the real engine after RequireReal) on a subnet and directory of
// its own, and closes it when the test ends.
func StartEngine(tb testing.TB, o lab.Options) lab.Handle {
	tb.Helper()
	if o.Engine != lab.EngineReal {
		l := Start(tb, o)
		WaitServingSynced(tb, l)
		return l
	}
	RequireReal(tb)
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	if o.Subnet == "" {
		s, release, err := AllocateRealSubnet()
		if err != nil {
			tb.Fatalf("labtest: %v", err)
		}
		tb.Cleanup(release)
		o.Subnet = s
	}
	if o.Logf == nil {
		o.Logf = tb.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	began := time.Now()
	h, err := lab.StartEngine(ctx, o)
	if err != nil {
		tb.Fatalf("labtest: start the real engine: %v", err)
	}
	tb.Logf("labtest: real engine up: %d servers in %.1fs (subnet %s)", len(h.NodeNames()), time.Since(began).Seconds(), o.Subnet)
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("labtest: close the real engine: %v", err)
		}
	})
	WaitServingSynced(tb, h)
	return h
}

// servingSynced is what K3s logs once its listener synced with the
// kube-system/k3s-serving secret.
const servingSynced = "Active TLS secret kube-system/k3s-serving (ver="

// WaitServingSynced waits until every server of the lab logged its sync
// with the kube-system/k3s-serving secret. That sync (a second or two
// after K3s is ready, on both engines) rewrites SD/tls/dynamic-cert.json,
// so a test that compares node files before and after a command starts
// only once it happened.
func WaitServingSynced(tb testing.TB, h lab.Handle) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range h.NodeNames() {
		if !strings.HasPrefix(n, "server-") {
			continue
		}
		for {
			out, _, _, err := h.Exec(ctx, n, "journalctl -u k3s --no-pager -o cat | grep -c "+shellQuote(servingSynced)+" || true")
			if err == nil && strings.TrimSpace(out) != "0" && strings.TrimSpace(out) != "" {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("labtest: %s logged no sync with kube-system/k3s-serving within a minute (last: %q, %v)", n, out, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// The servers that synced before adopt the last sync's write within
	// 60 ms (20 ms on the simulator).
	time.Sleep(time.Second)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// AllocateRealSubnet reserves a 127.2.y subnet for a real-engine lab of a
// test (realnode.AllocateSubnet).
func AllocateRealSubnet() (subnet string, release func(), err error) {
	return realnode.AllocateSubnet()
}
