// Package labtest starts labs from tests of any package: it builds the
// test-only node command shim once per test process, gives each lab its
// own loopback subnet and directory, and closes the lab when the test ends.
//
//	l := labtest.Start(t, lab.Options{Servers: 3, Agents: 1})
//	inv, _ := inventory.Load(l.InventoryPath())
package labtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caretaker/caretaker/lab"
)

var (
	shimOnce sync.Once
	shimPath string
	shimErr  error
)

// ShimBinary builds github.com/caretaker/caretaker/lab/internal/shimmain
// once per test process and returns its path: the executable the lab
// nodes' k3s, systemctl and journalctl commands run.
func ShimBinary(tb testing.TB) string {
	tb.Helper()
	shimOnce.Do(func() {
		// One stable path for every test process: each builds to a temp
		// name and renames it into place (atomic; running shims keep their
		// file), so nothing piles up in $TMPDIR.
		dir := filepath.Join(os.TempDir(), "caretaker-lab-shim")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			shimErr = err
			return
		}
		tmp, err := os.CreateTemp(dir, "build-*")
		if err != nil {
			shimErr = err
			return
		}
		tmp.Close()
		out := filepath.Join(dir, "lab-shim")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
			if _, err := os.Stat(goBin); err != nil {
				goBin = "/usr/local/go/bin/go"
			}
		}
		cmd := exec.Command(goBin, "build", "-o", tmp.Name(), "github.com/caretaker/caretaker/lab/internal/shimmain")
		if b, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp.Name())
			shimErr = fmt.Errorf("build the lab shim: %v\n%s", err, b)
			return
		}
		if err := os.Rename(tmp.Name(), out); err != nil {
			os.Remove(tmp.Name())
			shimErr = err
			return
		}
		shimPath = out
	})
	if shimErr != nil {
		tb.Fatalf("labtest: %v", shimErr)
	}
	return shimPath
}

// Start starts a lab for the test: o.Dir defaults to a fresh temp dir,
// o.Subnet to a free test subnet, o.ShimBinary to ShimBinary. The lab is
// closed when the test ends.
func Start(tb testing.TB, o lab.Options) *lab.Lab {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	if o.ShimBinary == "" {
		o.ShimBinary = ShimBinary(tb)
	}
	if o.Subnet == "" {
		s, release, err := lab.AllocateSubnet()
		if err != nil {
			tb.Fatalf("labtest: %v", err)
		}
		tb.Cleanup(release)
		o.Subnet = s
	}
	if o.Logf == nil {
		o.Logf = tb.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, o)
	if err != nil {
		tb.Fatalf("labtest: start the lab: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("labtest: close the lab: %v", err)
		}
	})
	return l
}
