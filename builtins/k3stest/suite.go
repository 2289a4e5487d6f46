package k3stest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"time"
)

// TestFile is one *_test.star file to run: its name as printed, its
// source, and the directory its load() calls and cluster.run() playbooks
// are read from.
type TestFile struct {
	Name string
	Src  []byte
	FS   fs.FS
}

// SuiteOptions select and print the tests of RunSuite.
type SuiteOptions struct {
	// Run, when set, selects the test_* functions whose name it matches.
	Run *regexp.Regexp
	// Verbose prints every test, not only the failures.
	Verbose bool
}

// SuiteResult counts the tests of a RunSuite.
type SuiteResult struct {
	Passed, Failed int
	// Broken lists the files that could not be executed (syntax errors,
	// failing load()).
	Broken []string
}

// OK reports whether every test passed and every file ran.
func (r SuiteResult) OK() bool { return r.Failed == 0 && len(r.Broken) == 0 }

// RunSuite runs the test_* functions of every file and prints the results
// to w as `go test -v` does: "--- FAIL: name (0.01s)" with the error,
// then "ok"/"FAIL" per file.
func RunSuite(env *Env, w io.Writer, files []TestFile, o SuiteOptions) SuiteResult {
	var res SuiteResult
	for _, f := range files {
		start := time.Now()
		var match func(string) bool
		if o.Run != nil {
			match = o.Run.MatchString
		}
		results, err := runStarTestFile(env, f.Name, f.Src, f.FS, match)
		if err != nil {
			res.Broken = append(res.Broken, f.Name)
			fmt.Fprintf(w, "--- FAIL: %s (does not run)\n    %s\nFAIL\t%s\n", f.Name, indent(err.Error()), f.Name)
			continue
		}
		failed, ran := 0, 0
		for _, r := range results {
			ran++
			if o.Verbose {
				fmt.Fprintf(w, "=== RUN   %s\n", r.Name)
			}
			switch {
			case r.Err != nil:
				failed++
				fmt.Fprintf(w, "--- FAIL: %s (%.2fs)\n    %s\n", r.Name, r.Duration.Seconds(), indent(r.Err.Error()))
			case o.Verbose:
				fmt.Fprintf(w, "--- PASS: %s (%.2fs)\n", r.Name, r.Duration.Seconds())
			}
		}
		res.Failed += failed
		res.Passed += ran - failed
		status := "ok  "
		if failed > 0 {
			status = "FAIL"
		}
		note := ""
		if ran == 0 && o.Run != nil {
			note = " [no tests to run]"
		} else if ran == 0 {
			note = " [no test_* functions]"
		}
		fmt.Fprintf(w, "%s\t%s\t%.2fs%s\n", status, f.Name, time.Since(start).Seconds(), note)
	}
	return res
}

func indent(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == '\n' && i < len(s)-1 {
			out = append(out, "    "...)
		}
	}
	return string(out)
}

// Overlay is a read-only fs.FS that opens a name from the first of its
// layers that has it: a test's own directory first, the shipped playbooks
// after it, so a user's test can run both its own and shipped playbooks.
type Overlay []fs.FS

// Open implements fs.FS.
func (o Overlay) Open(name string) (fs.File, error) {
	for _, l := range o {
		if l == nil {
			continue
		}
		f, err := l.Open(name)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}
