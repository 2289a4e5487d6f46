package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/builtins/k3stest"
	"github.com/caretaker/caretaker/playbooks"
)

func init() {
	extraCommands = append(extraCommands, newTestCommand)
}

// testFlags are the flags of `caretaker test`.
type testFlags struct {
	run     string
	verbose bool
	shipped bool
}

func newTestCommand() *cobra.Command {
	f := &testFlags{}
	c := &cobra.Command{
		Use:   "test [PATH...]",
		Short: "Run playbook tests (*_test.star) against fake clusters",
		Long: `Run the test_* functions of *_test.star files, as go test does.

A PATH is a test file, a directory (its *_test.star files) or DIR/...
(every directory below DIR too); the default is the current directory.
A test file sees the playbook builtins, the assert module and the fake
module (fake.cluster(...): a K3s cluster in miniature with faults); its
load() calls and cluster.run("NAME") read from the test file's directory
first, then from the shipped playbooks. --shipped runs the shipped
playbooks' own tests.

Exit codes: 0 all passed, 1 a test failed or a file did not run, 2 bad
input (no test files, a bad -run expression).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlaybookTests(cmd, args, f)
		},
	}
	c.Flags().StringVar(&f.run, "run", "", "run only the test_* functions matching this regular expression")
	c.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "print every test, not only failures")
	c.Flags().BoolVar(&f.shipped, "shipped", false, "run the tests of the playbooks shipped with caretaker")
	return c
}

func runPlaybookTests(cmd *cobra.Command, args []string, f *testFlags) error {
	var o k3stest.SuiteOptions
	o.Verbose = f.verbose
	if f.run != "" {
		re, err := regexp.Compile(f.run)
		if err != nil {
			return usageError{fmt.Errorf("-run %q: %w", f.run, err)}
		}
		o.Run = re
	}
	var files []k3stest.TestFile
	var err error
	if f.shipped {
		files, err = shippedTestFiles()
	} else {
		if len(args) == 0 {
			args = []string{"."}
		}
		files, err = findTestFiles(args)
	}
	if err != nil {
		return err
	}
	env, err := k3stest.NewEnv()
	if err != nil {
		return fmt.Errorf("start the fake clusters' datastore: %w", err)
	}
	defer func() { _ = env.Close() }()
	res := k3stest.RunSuite(env, cmd.OutOrStdout(), files, o)
	if !res.OK() {
		return silentError{fmt.Errorf("%d test(s) failed, %d file(s) did not run", res.Failed, len(res.Broken))}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "PASS: %d test(s) in %d file(s)\n", res.Passed, len(files))
	return nil
}

// shippedTestFiles are the embedded playbooks' tests.
func shippedTestFiles() ([]k3stest.TestFile, error) {
	entries, err := fs.ReadDir(playbooks.FS, ".")
	if err != nil {
		return nil, err
	}
	var out []k3stest.TestFile
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.star") {
			src, err := fs.ReadFile(playbooks.FS, e.Name())
			if err != nil {
				return nil, err
			}
			out = append(out, k3stest.TestFile{Name: e.Name(), Src: src, FS: playbooks.FS})
		}
	}
	return out, nil
}

// findTestFiles resolves test paths to files; each file reads its modules
// and playbooks from its own directory (opened as an os.Root, so nothing
// outside it is reachable), then from the shipped playbooks.
func findTestFiles(args []string) ([]k3stest.TestFile, error) {
	var paths []string
	for _, a := range args {
		found, err := testPaths(a)
		if err != nil {
			return nil, err
		}
		paths = append(paths, found...)
	}
	if len(paths) == 0 {
		return nil, usageError{fmt.Errorf("no *_test.star files in %s: a playbook's test is NAME_test.star beside NAME.star (`caretaker new playbook NAME` writes one)", strings.Join(args, " "))}
	}
	out := make([]k3stest.TestFile, 0, len(paths))
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			return nil, usageError{fmt.Errorf("test file: %w", err)}
		}
		root, err := os.OpenRoot(filepath.Dir(p))
		if err != nil {
			return nil, usageError{fmt.Errorf("test directory: %w", err)}
		}
		out = append(out, k3stest.TestFile{Name: p, Src: src, FS: k3stest.Overlay{root.FS(), playbooks.FS}})
	}
	return out, nil
}

// testPaths expands one PATH argument of `caretaker test`.
func testPaths(arg string) ([]string, error) {
	recursive := false
	if arg == "..." || strings.HasSuffix(arg, "/...") {
		recursive = true
		arg = strings.TrimSuffix(strings.TrimSuffix(arg, "..."), "/")
		if arg == "" {
			arg = "."
		}
	}
	st, err := os.Stat(arg)
	if err != nil {
		return nil, usageError{fmt.Errorf("test path: %w", err)}
	}
	if !st.IsDir() {
		if !strings.HasSuffix(arg, "_test.star") {
			return nil, usageError{fmt.Errorf("%s: not a test file (test files are named NAME_test.star)", arg)}
		}
		return []string{arg}, nil
	}
	var out []string
	walk := func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != arg && (!recursive || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), "_test.star") {
			out = append(out, p)
		}
		return nil
	}
	if err := filepath.WalkDir(arg, walk); err != nil && !errors.Is(err, filepath.SkipDir) {
		return nil, usageError{fmt.Errorf("test path: %w", err)}
	}
	sort.Strings(out)
	return out, nil
}

// goTestStyleArgs lets `caretaker test` take -run as go test does (pflag
// reads a single dash as shorthand flags): -run X and -run=X become --run.
func goTestStyleArgs(args []string) []string {
	if len(args) == 0 || args[0] != "test" {
		return args
	}
	out := append([]string(nil), args...)
	for i, a := range out {
		if a == "--" {
			break
		}
		if a == "-run" || strings.HasPrefix(a, "-run=") {
			out[i] = "-" + a
		}
	}
	return out
}
