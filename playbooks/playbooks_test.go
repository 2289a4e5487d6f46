package playbooks_test

import (
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/builtins/k3stest"
	"github.com/caretaker/caretaker/playbooks"
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

// TestEveryPlaybookHasATest: each shipped playbook ships with
// <name>_test.star.
func TestEveryPlaybookHasATest(t *testing.T) {
	names := playbooks.Names()
	if len(names) == 0 {
		t.Fatal("no shipped playbooks")
	}
	for _, n := range names {
		if _, err := fs.Stat(playbooks.FS, n+"_test.star"); err != nil {
			t.Errorf("playbook %s has no %s_test.star", n, n)
		}
	}
}

// TestPlaybooks runs the test_* functions of every <name>_test.star, in
// sorted order, against fake clusters (k3stest.Cluster).
func TestPlaybooks(t *testing.T) {
	entries, err := fs.ReadDir(playbooks.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.star") {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	for _, f := range files {
		src, err := fs.ReadFile(playbooks.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		results, err := k3stest.RunStarTestFile(env, f, src, playbooks.FS)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(results) == 0 {
			t.Errorf("%s defines no test_* function", f)
		}
		for _, r := range results {
			t.Run(strings.TrimSuffix(f, ".star")+"/"+r.Name, func(t *testing.T) {
				t.Logf("took %s", r.Duration)
				if r.Err != nil {
					t.Error(r.Err)
				}
			})
		}
	}
}
