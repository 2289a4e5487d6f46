package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPackageRules pins the package structure (DESIGN.md): cmd → tui,
// builtins, runner, lab; builtins → runner; tui → runner (events only);
// runner imports none of them; the K3s and Kubernetes operations (k3sops,
// k8sops) are plain Go (no Starlark); the simulated Kubernetes API
// (internal/kubesim) knows neither the lab, the engine nor the builtins;
// test support and etcd's server stay out of production packages other
// than the simulator and `caretaker test`'s kit (k3stest).
func TestPackageRules(t *testing.T) {
	const mod = "github.com/caretaker/caretaker/"
	rules := []struct {
		pkg       string
		direct    bool // only the package's own imports (k3sops uses runner, which embeds Starlark)
		forbidden []string
	}{
		{"runner/...", false, []string{mod + "tui", mod + "builtins", mod + "lab", mod + "cmd", "charm.land/", "go.starlark.net/lib", "go.etcd.io/etcd/server"}},
		{"builtins/k3sops", true, []string{"go.starlark.net"}},
		{"builtins/k3sops", false, []string{mod + "tui", mod + "lab", mod + "builtins/k3stest", "go.etcd.io/etcd/server", mod + "runner/transport/fake"}},
		// The Kubernetes operations likewise: typed Go, no Starlark.
		{"builtins/k8sops", true, []string{"go.starlark.net"}},
		{"builtins/k8sops", false, []string{mod + "tui", mod + "lab", mod + "builtins/k3stest", "go.etcd.io/etcd/server", mod + "runner/transport/fake"}},
		{"builtins", false, []string{mod + "tui", mod + "lab", mod + "builtins/k3stest", "go.etcd.io/etcd/server", mod + "runner/transport/fake"}},
		{"tui/...", false, []string{mod + "builtins", mod + "lab", "go.etcd.io/etcd/server"}},
		// The simulated Kubernetes API serves both simulators (lab, k3stest)
		// and knows neither.
		{"internal/kubesim", false, []string{mod + "lab", mod + "runner", mod + "builtins", mod + "cmd", mod + "tui"}},
		// cmd ships builtins/k3stest (and the fake executors below it) on
		// purpose: it is the playbook test kit of `caretaker test`.
		{"cmd/caretaker", false, []string{mod + "runner/transport/transporttest", mod + "internal/runtest", mod + "lab/labtest"}},
	}
	for _, r := range rules {
		args := []string{"list", "-deps", mod + r.pkg}
		if r.direct {
			args = []string{"list", "-f", `{{join .Imports "\n"}}`, mod + r.pkg}
		}
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", r.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, bad := range r.forbidden {
				if strings.HasPrefix(dep, bad) && !strings.HasPrefix(dep, mod+r.pkg) {
					t.Errorf("%s depends on %s", r.pkg, dep)
				}
			}
		}
	}
	// The control: the simulator does use etcd's server, so the listing
	// above would see it.
	out, err := exec.Command("go", "list", "-deps", mod+"lab").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "go.etcd.io/etcd/server/v3/embed") {
		t.Errorf("lab does not list go.etcd.io/etcd/server/v3/embed among its dependencies (%v): the rules above prove nothing", err)
	}
}
