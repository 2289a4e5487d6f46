package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// .ci/run sets CI (true unless the CI system set it) before `make test`, so
// that tests needing the real engine fail there instead of skipping
// (labtest.RequireReal and realnode's needReal fail when $CI is not empty).
// The test runs the script with a stand-in make that prints what it got.
func TestCIRunSetsCI(t *testing.T) {
	script, err := filepath.Abs("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	fake := "#!/bin/sh\nprintf 'make %s CI=%s' \"$*\" \"${CI-unset}\"\n"
	if err := os.WriteFile(filepath.Join(bin, "make"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+bin+":/usr/bin:/bin")
	for ci, want := range map[string]string{"": "CI=true", "CI=": "CI=true", "CI=github": "CI=github"} {
		cmd := exec.Command("bash", script)
		cmd.Env = env
		if ci != "" {
			cmd.Env = append(cmd.Env, ci)
		}
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "make test "+want {
			t.Errorf(".ci/run with %q in the environment: %v, ran %q; want %q", ci, err, out, "make test "+want)
		}
	}
}
