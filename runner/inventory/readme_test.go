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
	dir := t.TempDir()
	p := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(p, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ci"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ci", "kubeconfig.yaml"), []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(p)
	if err != nil {
		t.Fatalf("README inventory: %v", err)
	}
	a := inv.Clusters[0].Nodes[1]
	if len(inv.Clusters[0].Kubeconfigs) != 1 || inv.Clusters[0].Kubeconfigs[0] != filepath.Join(dir, "ci", "kubeconfig.yaml") {
		t.Errorf("README inventory's kubeconfigs: %v", inv.Clusters[0].Kubeconfigs)
	}
	if a.K3s.KubeConfig != "/etc/rancher/k3s/k3s.yaml" || a.K3s.BootstrapBug != inventory.BootstrapBugAuto || inv.Clusters[0].Nodes[0].Labels["zone"] != "a" {
		t.Errorf("README inventory parsed as %+v", a.K3s)
	}
}
