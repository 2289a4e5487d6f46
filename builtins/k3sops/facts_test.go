package k3sops

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A K3s brought back just before a run is still starting: facts read then
// would see its etcd member, datastore and :6443 come up one after the
// other (seen on the real engine: rotate-ca right after a failed start
// was cleared judged the starting server "would not come back from a
// restart"). ReadFacts waits for the unit to leave activating; a stuck
// one is reported as activating after settle, with a warning.
func TestReadFactsWaitsForAStartingK3s(t *testing.T) {
	for _, tc := range []struct {
		name       string
		activating int32 // is-active answers "activating" this many times
		settle     time.Duration
		want       string
		wantOut    []string
	}{
		{"starting, then active", 3, 10 * time.Second, "active", []string{"waiting up to 10s", "k3s is active after"}},
		{"settle 0 reads at once", 3, 0, "activating", nil},
		{"stuck", 1 << 30, 1500 * time.Millisecond, "activating", []string{"still starting (activating) after 1.5s", "journalctl -u k3s"}},
		{"already active", 0, 10 * time.Second, "active", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			var calls atomic.Int32
			c.srvEx.OnFunc(`^systemctl is-active`, func(_ string, _ []byte, stdout, _ io.Writer) int {
				if calls.Add(1) <= tc.activating {
					_, _ = io.WriteString(stdout, "activating\n")
					return 3
				}
				_, _ = io.WriteString(stdout, "active\n")
				return 0
			})
			c.srvEx.OnFunc(`^k3s --version`, func(_ string, _ []byte, stdout, _ io.Writer) int {
				_, _ = io.WriteString(stdout, "k3s version v1.32.3+k3s1 (079ffa8d)\ngo version go1.23.6\n")
				return 0
			})
			f, err := ReadFacts(context.Background(), c.target(t, c.server, c.srvEx), tc.settle)
			if err != nil {
				t.Fatal(err)
			}
			if f.ServiceState != tc.want {
				t.Errorf("service_state %q, want %q", f.ServiceState, tc.want)
			}
			out := strings.Join(c.run.out, "\n")
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.wantOut == nil && strings.Contains(out, "waiting up to") {
				t.Errorf("waited although it should not:\n%s", out)
			}
		})
	}
}
