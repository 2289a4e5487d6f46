package realnode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost points the host bookkeeping at temp dirs: RunDir and a
// /proc/sys with the engine's sysctls at low values. Needs no root.
func fakeHost(t *testing.T) {
	t.Helper()
	oldRun, oldSys := runDir, procSys
	runDir, procSys = t.TempDir(), t.TempDir()
	t.Cleanup(func() { runDir, procSys = oldRun, oldSys })
	for _, s := range hostSysctls {
		p := sysctlPath(s.key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(sysctlPath("fs.inotify.max_user_instances"), []byte("128\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The first lab records the host's sysctls and raises them; they are
// restored only when the last registered lab is released. A registered
// lab whose bridge no longer exists does not hold them.
func TestHostSettingsRefcounted(t *testing.T) {
	fakeHost(t)
	ctx := context.Background()
	// "lo" stands for the bridge of a lab that still runs (it exists).
	for _, br := range []string{"lo", "ctkbr-test-gone"} {
		if err := hostAcquire(ctx, br, "/lab/"+br); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := readSysctl("fs.inotify.max_user_instances"); v != "8192" {
		t.Fatalf("max_user_instances %s after acquire, want 8192", v)
	}
	if err := hostAcquire(ctx, "lo", "/lab/other"); err == nil || !strings.Contains(err.Error(), "/lab/lo") {
		t.Errorf("a second lab on a live lab's bridge: %v, want a refusal naming /lab/lo", err)
	}
	if done, err := hostRelease(ctx, "lo", "/lab/other"); err != nil || len(done) != 0 || registeredDir("lo") != "/lab/lo" {
		t.Errorf("release by a lab that does not hold the registration: %v %v, registration %q", done, err, registeredDir("lo"))
	}
	if v, _ := readSysctl("net.ipv4.conf.all.route_localnet"); v != "1" {
		t.Fatalf("route_localnet %s after acquire, want 1", v)
	}
	if done, err := hostRelease(ctx, "ctkbr-test-gone", "/lab/ctkbr-test-gone"); err != nil || len(done) != 0 {
		t.Fatalf("release while another lab runs: restored %v, %v", done, err)
	}
	if v, _ := readSysctl("fs.inotify.max_user_instances"); v != "8192" {
		t.Fatalf("max_user_instances %s while a lab still runs", v)
	}
	done, err := hostRelease(ctx, "lo", "/lab/lo")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(done, " "); !strings.Contains(got, "fs.inotify.max_user_instances=128") || !strings.Contains(got, "route_localnet=0") {
		t.Errorf("restored %q", got)
	}
	for key, want := range map[string]string{"fs.inotify.max_user_instances": "128", "fs.inotify.max_user_watches": "0", "net.ipv4.conf.all.route_localnet": "0"} {
		if v, _ := readSysctl(key); v != want {
			t.Errorf("%s = %s after the last release, want %s", key, v, want)
		}
	}
	if fileExists(filepath.Join(runDir, "saved.json")) {
		t.Errorf("saved.json kept after the last release")
	}
	// A stale registration (its bridge gone) does not block the restore.
	if err := hostAcquire(ctx, "ctkbr-test-gone", "/lab/ctkbr-test-gone"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(runDir, "labs", "ctkbr-crashed"), []byte("/lab/crashed\n"), 0o644)
	if _, err := hostRelease(ctx, "ctkbr-test-gone", "/lab/ctkbr-test-gone"); err != nil {
		t.Fatal(err)
	}
	if v, _ := readSysctl("fs.inotify.max_user_instances"); v != "128" {
		t.Errorf("max_user_instances %s: a stale registration blocked the restore", v)
	}
}
