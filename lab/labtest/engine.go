package labtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gofrs/flock"

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
		return Start(tb, o)
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
	return h
}

// AllocateRealSubnet reserves a 127.2.y subnet for a real-engine lab of a
// test (lock files in $TMPDIR/caretaker-lab-subnets, held until release),
// apart from the simulator's 127.200+ test subnets and the real engine's
// default 127.1.0.
func AllocateRealSubnet() (subnet string, release func(), err error) {
	dir := filepath.Join(os.TempDir(), "caretaker-lab-subnets")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", nil, fmt.Errorf("real subnet lock dir: %w", err)
	}
	for y := 1; y < 255; y++ {
		s := fmt.Sprintf("127.2.%d", y)
		fl := flock.New(filepath.Join(dir, s+".lock"))
		ok, err := fl.TryLock()
		if err != nil {
			return "", nil, fmt.Errorf("lock subnet %s: %w", s, err)
		}
		if ok {
			return s, func() { _ = fl.Unlock() }, nil
		}
	}
	return "", nil, fmt.Errorf("every real-engine test subnet 127.2.* is taken")
}
