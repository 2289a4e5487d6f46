package main

// Helpers of the crash-consistency tests (crash_test.go and the kill
// scenarios of the acceptance suite): the crashkill tool (internal/crashkill)
// kills caretaker with SIGKILL right after it wrote journal entry k, and
// what a killed run left is read back from its journal.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

var (
	crashkillOnce sync.Once
	crashkillPath string
	crashkillErr  error
)

// crashkillBinary builds internal/crashkill once per test binary.
func crashkillBinary(t testing.TB) string {
	t.Helper()
	crashkillOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caretaker-crashkill-")
		if err != nil {
			crashkillErr = err
			return
		}
		out := filepath.Join(dir, "crashkill")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		if b, err := exec.Command(goBin, "build", "-o", out, "github.com/caretaker/caretaker/internal/crashkill").CombinedOutput(); err != nil {
			crashkillErr = fmt.Errorf("build crashkill: %v\n%s", err, b)
			return
		}
		crashkillPath = out
	})
	if crashkillErr != nil {
		t.Fatalf("crash: %v", crashkillErr)
	}
	return crashkillPath
}

// crashReport is what crashkill prints, plus the run and its output.
type crashReport struct {
	Mode    string `json:"mode"` // rt: the kill landed right after entry k; poll: maybe later
	RunDir  string `json:"run_dir"`
	Lines   int    `json:"lines"`   // journal entries when caretaker died
	Matched int    `json:"matched"` // of them, those -match counted
	Killed  bool   `json:"killed"`  // false: the run ended before entry k
	Exit    int    `json:"exit"`
	Error   string `json:"error"`

	RunID   string
	Last    journalLine // the last entry written
	Journal []journalLine
	Output  cliResult
}

// journalLine is the part of a journal entry the crash tests look at.
type journalLine struct {
	Type     string `json:"type"`
	StepName string `json:"step_name"`
	Node     string `json:"node"`
	Status   string `json:"status"`
	Kind     string `json:"kind"`
	Text     string `json:"text"`
}

// String names an entry for reports: "undo servers@server-2
// k3s.restore_server", "step_done backup@agent-1 changed".
func (e journalLine) String() string {
	s := e.Type
	if e.StepName != "" {
		s += " " + e.StepName + "@" + e.Node
	} else if e.Node != "" {
		s += " @" + e.Node
	}
	for _, x := range []string{e.Status, e.Kind} {
		if x != "" {
			s += " " + x
		}
	}
	return s
}

// readJournalLines reads a journal file entry by entry.
func readJournalLines(t testing.TB, path string) []journalLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("crash: read the journal: %v", err)
	}
	var out []journalLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e journalLine
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("crash: journal %s: a line that is not JSON after a kill -9: %v", path, err)
		}
		out = append(out, e)
	}
	return out
}

// killAtEntry runs caretaker with args under crashkill, which kills it with
// SIGKILL right after it wrote entry k of the run's journal in stateDir.
// cpu is the CPU caretaker and the watcher share.
func killAtEntry(t testing.TB, stateDir string, k, cpu int, args ...string) crashReport {
	t.Helper()
	return killAt(t, stateDir, cpu, []string{"-k", fmt.Sprint(k)}, args...)
}

// killAtMatch kills caretaker right after the nth journal entry that
// contains every one of match (e.g. `"type":"undo"`, `"node":"server-2"`).
func killAtMatch(t testing.TB, stateDir string, nth int, match []string, args ...string) crashReport {
	t.Helper()
	spec := []string{"-k", fmt.Sprint(nth)}
	for _, m := range match {
		spec = append(spec, "-match", m)
	}
	return killAt(t, stateDir, 0, spec, args...)
}

// killAt runs caretaker with args under crashkill with the kill point spec.
func killAt(t testing.TB, stateDir string, cpu int, spec []string, args ...string) crashReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "caretaker.out")
	argv := append([]string{"-runs", filepath.Join(stateDir, "runs"), "-cpu", fmt.Sprint(cpu % runtime.NumCPU()), "-out", out}, spec...)
	argv = append(append(argv, "--", caretakerBinary(t)), args...)
	argv = append(argv, "--state-dir", stateDir)
	cmd := exec.CommandContext(ctx, crashkillBinary(t), argv...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("crashkill: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var rep crashReport
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &rep); err != nil {
		t.Fatalf("crashkill printed %q: %v", stdout.String(), err)
	}
	so, _ := os.ReadFile(out)
	se, _ := os.ReadFile(out + ".err")
	rep.Output = parseCLIOutput(string(so), string(se), rep.Exit)
	if rep.RunDir == "" {
		t.Fatalf("crashkill: caretaker created no run (exit %d):\n%s", rep.Exit, rep.Output.Describe())
	}
	rep.RunID = filepath.Base(rep.RunDir)
	rep.Journal = readJournalLines(t, filepath.Join(rep.RunDir, "journal.jsonl"))
	if len(rep.Journal) != rep.Lines {
		t.Fatalf("crashkill counted %d journal entries, the journal has %d", rep.Lines, len(rep.Journal))
	}
	if n := len(rep.Journal); n > 0 {
		rep.Last = rep.Journal[n-1]
	}
	return rep
}

// parseCLIOutput makes a cliResult of a finished process's output.
func parseCLIOutput(stdout, stderr string, code int) cliResult {
	res := cliResult{Code: code, Stdout: stdout, Stderr: stderr}
	for _, line := range strings.Split(stdout, "\n") {
		var raw map[string]any
		if len(line) == 0 || line[0] != '{' || json.Unmarshal([]byte(line), &raw) != nil {
			continue
		}
		ty, _ := raw["type"].(string)
		res.Events = append(res.Events, e2eEvent{Type: ty, Raw: raw})
	}
	return res
}

// hasEntry reports whether a journal holds an entry of type typ (and kind,
// when given).
func hasEntry(j []journalLine, typ, kind string) bool {
	for _, e := range j {
		if e.Type == typ && (kind == "" || e.Kind == kind) {
			return true
		}
	}
	return false
}

// sourcesWithHash is a snapshot of config sources with every K3s CA hash
// of old (in secure K10 tokens) replaced by the one of new: what a
// finished rotation leaves where a node's token pins the CA.
func sourcesWithHash(t testing.TB, src map[string][]byte, oldCA, newCA []byte) map[string][]byte {
	t.Helper()
	oldHash, err1 := k3s.HashCA(oldCA)
	newHash, err2 := k3s.HashCA(newCA)
	if err1 != nil || err2 != nil {
		t.Fatalf("crash: hash the CAs: %v %v", err1, err2)
	}
	out := map[string][]byte{}
	for k, v := range src {
		out[k] = bytes.ReplaceAll(v, []byte(oldHash), []byte(newHash))
	}
	return out
}
