package builtins

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain stops the etcd the fake clusters share after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	CloseFakeK3s()
	os.Exit(code)
}

// TestK3sStarFiles runs the test_* functions of every testdata/k3s*.star
// file against fake clusters (FakeK3sCluster).
func TestK3sStarFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/k3s*.star")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/k3s*.star files (%v)", err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		results, err := RunStarTestFile(f, src, nil)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(results) == 0 {
			t.Errorf("%s defines no test_* function", f)
		}
		for _, r := range results {
			t.Run(filepath.Base(f)+"/"+r.Name, func(t *testing.T) {
				if r.Err != nil {
					t.Error(r.Err)
				}
				t.Logf("%s took %s", r.Name, r.Duration)
			})
		}
	}
}
