package k3sops

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// systemd prints `systemctl show --property=...` in its own order, not the
// one asked for (seen on systemd 252 in a real node).
const realShow = `Result=success
NRestarts=2
ExecMainStartTimestamp=Fri 2026-12-04 03:32:16 UTC
ActiveState=activating
SubState=auto-restart
InvocationID=878b1f82e2ac4101b1ad9fb285e3e0e5
`

func TestParseUnitShowReadsSystemdsOrder(t *testing.T) {
	st := parseUnitShow(realShow)
	want := unitStatus{active: "activating", sub: "auto-restart", result: "success", invocation: "878b1f82e2ac4101b1ad9fb285e3e0e5", restarts: 2}
	if st != want {
		t.Fatalf("parseUnitShow = %+v, want %+v", st, want)
	}
	if got := st.describe(); got != "activating (auto-restart)" {
		t.Errorf("describe = %q", got)
	}
}

func newWatch() *upWatch {
	n := &inventory.Node{Name: "server-3", Role: inventory.RoleServer, K3s: inventory.K3sPaths{Service: "k3s"}}
	return &upWatch{c: &Target{Node: n}, before: unitStatus{active: "active", invocation: "aaaa"}, shown: map[string]bool{}, fatal: map[string]int{}}
}

func TestUpWatchJudgesEveryState(t *testing.T) {
	cases := []struct {
		name     string
		st       unitStatus
		fatal    int // times one fatal message was seen
		done, ok bool
		reason   string
	}{
		{"old invocation still stopping", unitStatus{active: "deactivating", sub: "stop-sigterm", invocation: "aaaa"}, 0, false, true, ""},
		{"old invocation reads active before the job ran", unitStatus{active: "active", invocation: "aaaa"}, 0, false, true, ""},
		{"new invocation starting", unitStatus{active: "activating", sub: "start", invocation: "bbbb"}, 0, false, true, ""},
		{"new invocation active", unitStatus{active: "active", sub: "running", invocation: "bbbb"}, 0, true, true, ""},
		{"unit failed", unitStatus{active: "failed", sub: "failed", result: "exit-code", invocation: "bbbb"}, 0, true, false, "failed after the restart (systemd result exit-code)"},
		{"stopped by someone", unitStatus{active: "inactive", sub: "dead", invocation: "bbbb"}, 0, true, false, "inactive after the restart"},
		{"one crash is not a loop yet", unitStatus{active: "activating", sub: "auto-restart", invocation: "bbbb", restarts: 1}, 1, false, true, ""},
		{"two failed starts without a K3s fatal line (ExecStartPre) are a crash loop", unitStatus{active: "activating", sub: "auto-restart", invocation: "dddd", restarts: 2}, 0, true, false, "its start failed 2 times since the restart"},
		{"the same fatal error twice is a crash loop", unitStatus{active: "activating", sub: "auto-restart", invocation: "cccc", restarts: 2}, 2, true, false, "crash-loops: K3s exited 2 times with the same fatal error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatch()
			if tc.fatal > 0 {
				w.fatal["disk newer than datastore"] = tc.fatal
			}
			res := RestartResult{OK: true}
			done := w.judge(tc.st, &res)
			if done != tc.done || res.OK != tc.ok {
				t.Fatalf("judge = done %v ok %v, want done %v ok %v (%s)", done, res.OK, tc.done, tc.ok, res.reason)
			}
			if !strings.Contains(res.reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", res.reason, tc.reason)
			}
		})
	}
}

func TestStuckNeverAdvisesALongerCommandTimeout(t *testing.T) {
	w := newWatch()
	w.errs = []string{`2026-12-04T03:44:30+0000 node3 k3s[619]: time="2026-12-04T03:44:30Z" level=error msg="Failed to validate connection to cluster at https://127.0.0.1:6443: CA cert validation failed"`}
	msg := w.stuck(3*time.Minute, "activating (start)")
	for _, want := range []string{"still activating (start) 3m0s after the restart", "TimeoutStartSec=0", `last K3s error: level=error msg="Failed to validate connection`} {
		if !strings.Contains(msg, want) {
			t.Errorf("stuck message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "command_timeout") {
		t.Errorf("stuck message advises command_timeout, which cannot help: %q", msg)
	}
}

// The journal of a real K3s server crash-looping on "newer than
// datastore" (systemd 252, K3s af977adf): 71 lines, 33 of them etcd JSON.
func TestExcerptShowsTheCauseFirstAndDropsEtcdNoise(t *testing.T) {
	raw, err := os.ReadFile("testdata/journal/crashloop-newer-than-datastore.txt")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	got := excerpt(lines, 30)
	if len(got) == 0 || len(got) > 30 {
		t.Fatalf("excerpt has %d lines, want 1..30", len(got))
	}
	if !strings.Contains(got[0], "level=fatal") || !strings.Contains(got[0], "newer than datastore") {
		t.Errorf("first line is not the fatal cause: %q", got[0])
	}
	fatals := 0
	for _, l := range got {
		if strings.Contains(shortJournalLine(l), `{"level"`) {
			t.Errorf("etcd JSON record in the excerpt: %q", l)
		}
		if strings.Contains(l, "level=fatal") {
			fatals++
		}
	}
	if fatals != 1 {
		t.Errorf("the same fatal message %d times in the excerpt, want once", fatals)
	}
	if !containsLine(got, "Failed with result 'exit-code'") {
		t.Errorf("systemd's own lines are missing from the tail: %q", got)
	}
}

func TestShortJournalLine(t *testing.T) {
	in := `2026-12-04T03:48:23+0000 node3 k3s[1086]: time="2026-12-04T03:48:23Z" level=fatal msg="x newer than datastore"`
	if got, want := shortJournalLine(in), `level=fatal msg="x newer than datastore"`; got != want {
		t.Errorf("shortJournalLine = %q, want %q", got, want)
	}
	if m := fatalLine.FindStringSubmatch(in); m == nil || m[1] != "x newer than datastore" {
		t.Errorf("fatalLine match = %q", m)
	}
}

func containsLine(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func TestBugGateInventoryOverridesTheVersion(t *testing.T) {
	fixed, buggy := mustVersion(t, "v1.32.3+k3s1"), mustVersion(t, "v1.30.10+k3s1")
	node := func(role, bug string) *inventory.Node {
		return &inventory.Node{Role: role, K3s: inventory.K3sPaths{BootstrapBug: bug, BootstrapBugFrom: "inv.yaml:4 clusters[0].k3s.bootstrap_bug"}}
	}
	cases := []struct {
		name    string
		n       *inventory.Node
		v       k3s.Version
		want    bool
		because string
	}{
		{"fixed version, auto", node(inventory.RoleServer, inventory.BootstrapBugAuto), fixed, false, "has the fix"},
		{"buggy version, auto", node(inventory.RoleServer, inventory.BootstrapBugAuto), buggy, true, "predates the fix"},
		{"fixed version, inventory true", node(inventory.RoleServer, inventory.BootstrapBugTrue), fixed, true, "inventory: bootstrap_bug true (inv.yaml:4"},
		{"buggy version, inventory false", node(inventory.RoleServer, inventory.BootstrapBugFalse), buggy, false, "inventory: bootstrap_bug false"},
		{"agents never", node(inventory.RoleAgent, inventory.BootstrapBugTrue), buggy, false, "agent"},
	}
	for _, tc := range cases {
		got, why := bugGate(tc.n, tc.v, nil)
		if got != tc.want || !strings.Contains(why, tc.because) {
			t.Errorf("%s: bugGate = %v (%s), want %v (%s)", tc.name, got, why, tc.want, tc.because)
		}
	}
}

func mustVersion(t *testing.T, s string) k3s.Version {
	t.Helper()
	v, err := k3s.ParseVersion(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
