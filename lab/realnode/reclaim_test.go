package realnode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A test process that dies before its cleanup leaves its lab on a 127.2.y
// subnet whose lock is then free (seen in CI: a fresh $TMPDIR, the old
// bridge and registration still in /run). AllocateSubnet must not hand
// that subnet out as free: it tears the leftover down when its state file
// is there and skips the subnet otherwise.
// Needs root (it creates a bridge).
func TestReclaimSubnet(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (creates a bridge), which CI provides")
		}
		t.Skip("needs root (creates a bridge)")
	}
	subnet, release, err := AllocateSubnet()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	var y int
	if _, err := fmt.Sscanf(subnet, "127.2.%d", &y); err != nil {
		t.Fatal(err)
	}
	nm := names{x: 2, y: y}
	br := nm.bridge()
	fakeHost(t)
	bridgeExists := func() bool { return fileExists(filepath.Join("/sys/class/net", br)) }
	addBridge := func() {
		t.Helper()
		if out, err := exec.Command("ip", "link", "add", br, "type", "bridge").CombinedOutput(); err != nil {
			t.Fatalf("ip link add %s: %v: %s", br, err, out)
		}
	}
	t.Cleanup(func() {
		if bridgeExists() {
			_ = exec.Command("ip", "link", "del", br).Run()
		}
	})
	register := func(dir string, pid int, start uint64) {
		t.Helper()
		reg := fmt.Sprintf("%s\n%d %d\n", dir, pid, start)
		if err := os.MkdirAll(filepath.Join(runDir, "labs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(runDir, "labs", br), []byte(reg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := reclaimSubnet(nm); err != nil {
		t.Fatalf("nothing holds %s: %v", subnet, err)
	}

	// A bridge nobody registered: skipped, left alone.
	addBridge()
	if err := reclaimSubnet(nm); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("unregistered bridge: want an error, got %v", err)
	}
	if !bridgeExists() {
		t.Fatal("an unregistered bridge was removed")
	}

	// A lab whose registrant still runs (here: this process): skipped.
	dir := t.TempDir()
	me, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	register(dir, os.Getpid(), me.startTime)
	if err := reclaimSubnet(nm); err == nil || !bridgeExists() {
		t.Fatalf("live registrant: want the subnet skipped and the bridge kept, got %v (bridge there: %v)", err, bridgeExists())
	}

	// The registrant died and its lab dir is gone (its temp dir removed):
	// the lab is rebuilt from the subnet's names — here a node's netns and
	// a cgroup with a process in it — and torn down.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	netns := nm.netns(1)
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", netns).Run() })
	hier, err := detectCgroups()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(hier[0], nm.cgroup(), "server-1")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeCgroupTree(filepath.Join(hier[0], nm.cgroup()), time.Second) })
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	t.Cleanup(func() { _ = sleeper.Process.Kill() })
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	register(filepath.Join(dir, "gone"), dead.Process.Pid, 1)
	if err := reclaimSubnet(nm); err != nil {
		t.Fatalf("dead registrant without state: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the process in the leftover lab's cgroup still runs")
	}
	if bridgeExists() || fileExists(filepath.Join("/run/netns", netns)) || fileExists(cg) || registeredDir(br) != "" {
		t.Fatalf("leftover without state not torn down: bridge %v, netns %v, cgroup %v, registration %q",
			bridgeExists(), fileExists(filepath.Join("/run/netns", netns)), fileExists(cg), registeredDir(br))
	}
	addBridge()

	// The registrant died, its state file is there: torn down.
	st := &state{Version: 1, Dir: dir, Subnet: subnet, Bridge: br, HostAcquired: true, OwnsSubnet: true}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	register(dir, dead.Process.Pid, 1)
	if err := reclaimSubnet(nm); err != nil {
		t.Fatalf("leftover of a dead test: %v", err)
	}
	if bridgeExists() || registeredDir(br) != "" {
		t.Fatalf("leftover not torn down: bridge there %v, registration %q", bridgeExists(), registeredDir(br))
	}
}
