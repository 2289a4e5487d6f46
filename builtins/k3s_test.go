package builtins_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/caretaker/caretaker/builtins/k3stest"
)

// env holds the etcd every fake cluster of this test binary uses.
var env *k3stest.Env

// TestMain starts the etcd the fake clusters share and stops it after the
// tests.
func TestMain(m *testing.M) {
	e, err := k3stest.NewEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	_ = e.Close()
	os.Exit(code)
}

// TestK3sStarFiles runs the test_* functions of every testdata/k3s*.star
// file against fake clusters (k3stest.Cluster).
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
		results, err := k3stest.RunStarTestFile(env, f, src, nil)
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
