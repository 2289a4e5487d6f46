package inventory_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/caretaker/caretaker/runner/inventory"
)

// TestREADMEInventoryLoads keeps the README's inventory example (every
// key the loader takes) valid: it must load without an error.
func TestREADMEInventoryLoads(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Inventory\n\n```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no inventory example under ## Inventory")
	}
	p := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(p, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(p)
	if err != nil {
		t.Fatalf("README inventory: %v", err)
	}
	a := inv.Clusters[0].Nodes[1]
	if a.K3s.KubeConfig != "/etc/rancher/k3s/k3s.yaml" || a.K3s.BootstrapBug != inventory.BootstrapBugAuto || inv.Clusters[0].Nodes[0].Labels["zone"] != "a" {
		t.Errorf("README inventory parsed as %+v", a.K3s)
	}
}
