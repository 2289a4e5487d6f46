package playbooks_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"regexp"
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

// TestPlaybooks runs every <name>_test.star the way `caretaker test
// --shipped` does (k3stest.RunSuite, against fake clusters) and checks
// that every test_* function of every file ran and passed.
func TestPlaybooks(t *testing.T) {
	entries, err := fs.ReadDir(playbooks.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	var files []k3stest.TestFile
	want := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), "_test.star") {
			continue
		}
		src, err := fs.ReadFile(playbooks.FS, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		n := len(testFuncRe.FindAll(src, -1))
		if n == 0 {
			t.Errorf("%s defines no test_* function", e.Name())
		}
		want += n
		files = append(files, k3stest.TestFile{Name: e.Name(), Src: src, FS: playbooks.FS})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var out bytes.Buffer
	res := k3stest.RunSuite(env, &out, files, k3stest.SuiteOptions{Verbose: true})
	t.Log("\n" + out.String())
	if !res.OK() || res.Passed != want {
		t.Errorf("passed %d of %d tests, %d failed, files that did not run: %v (output above)", res.Passed, want, res.Failed, res.Broken)
	}
}

var testFuncRe = regexp.MustCompile(`(?m)^def test_`)
