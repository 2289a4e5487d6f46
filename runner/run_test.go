package runner_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

func TestPlanBuilding(t *testing.T) {
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
describe("demo")
def noop(node):
    pass
step("facts", noop, nodes="all", mutates=False)
step("servers one by one", noop, nodes="servers", serial=1, timeout="2m")
step("etcd", noop, nodes=["group:etcd", "a1"])
step("once", noop, nodes="servers", once=True)
`)
	if plan.Description != "demo" || len(plan.Steps) != 4 {
		t.Fatalf("plan = %q with %d steps", plan.Description, len(plan.Steps))
	}
	want := []struct {
		nodes   string
		serial  int
		mutates bool
	}{{"s1,s2,s3,a1", 0, false}, {"s1,s2,s3", 1, true}, {"s1,s2,a1", 0, true}, {"s1,s2,s3", 0, true}}
	for i, w := range want {
		s := plan.Steps[i]
		if got := nodeNames(s.Nodes); got != w.nodes || s.Serial != w.serial || s.Mutates != w.mutates {
			t.Errorf("step %d %q: nodes=%s serial=%d mutates=%v, want %+v", i, s.Name, got, s.Serial, s.Mutates, w)
		}
	}
	if plan.Steps[1].Timeout != 2*time.Minute {
		t.Errorf("timeout = %v", plan.Steps[1].Timeout)
	}
	if got := plan.Steps[0].Pos.String(); got != "pb.star:5:5" {
		t.Errorf("step position = %q, want pb.star:5:5", got)
	}
	if info := plan.Steps[3].Info(); !info.Once || len(info.Nodes) != 1 {
		t.Errorf("once step info = %+v, want one node", info)
	}
	// --limit restricts every step.
	limited, err := f.Load(`
def noop(node):
    pass
step("a", noop, nodes="all")
`, nil, "servers")
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeNames(limited.Steps[0].Nodes); got != "s1,s2,s3" {
		t.Errorf("limited nodes = %s", got)
	}
	// Loading touches no node.
	for name, fk := range f.Fakes {
		if len(fk.Calls()) != 0 {
			t.Errorf("loading touched %s: %v", name, fk.Calls())
		}
	}
}

func nodeNames(ns []*inventory.Node) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return strings.Join(out, ",")
}

func TestCheckMode(t *testing.T) {
	f := runtest.NewFixture(t)
	for _, fk := range f.Fakes {
		fk.SetFile("/etc/x", []byte("old"), 0o600)
		fk.On(`^cat /etc/hostname$`, fake.Reply{Stdout: "h\n"})
		fk.On(`^systemctl restart k3s$`, fake.Reply{})
	}
	plan := f.MustLoad(`
def body(node):
    r = node.run("cat /etc/hostname", changes=False)
    log("read " + r.stdout.strip())
    node.write("/etc/x", "new", mode=0o644)
    node.run("systemctl restart k3s")
    assert.eq(node.read("/etc/x"), "old")
step("mutate", body, nodes="servers")
`)
	done, err := f.Run(plan, runner.RunOptions{Check: true})
	if err != nil {
		t.Fatalf("check run failed: %v (%+v)", err, done.Failed)
	}
	for name, fk := range f.Fakes {
		data, _ := fk.File("/etc/x")
		if string(data) != "old" {
			t.Errorf("%s: check mode wrote /etc/x", name)
		}
		for _, c := range fk.Calls() {
			if strings.HasPrefix(c, "write") || strings.Contains(c, "restart") {
				t.Errorf("%s: check mode made a mutating call: %s", name, c)
			}
		}
	}
	check := strings.Join(f.Output(runner.StreamCheck), "\n")
	for _, w := range []string{"s1: would write /etc/x on s1 (3 bytes)", "s2: would run on s2: systemctl restart k3s"} {
		if !strings.Contains(check, w) {
			t.Errorf("check output lacks %q:\n%s", w, check)
		}
	}
	if !strings.Contains(strings.Join(f.Output(runner.StreamLog), "\n"), "s1: read h") {
		t.Errorf("read-only command did not run in check mode")
	}
	// The same playbook for real changes the files and reports changed.
	f2 := runtest.NewFixture(t)
	for _, fk := range f2.Fakes {
		fk.SetFile("/etc/x", []byte("old"), 0o600)
		fk.On(`.`, fake.Reply{})
	}
	plan2 := f2.MustLoad(`
def body(node):
    node.write("/etc/x", "new")
step("mutate", body, nodes="s1")
step("again", body, nodes="s1")
`)
	if _, err := f2.Run(plan2, runner.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if data, _ := f2.Fakes["s1"].File("/etc/x"); string(data) != "new" {
		t.Errorf("real run did not write: %q", data)
	}
	if f2.Status("mutate", "s1") != runner.StatusChanged || f2.Status("again", "s1") != runner.StatusOK {
		t.Errorf("statuses = %s, %s; want changed then ok (idempotent write)", f2.Status("mutate", "s1"), f2.Status("again", "s1"))
	}
}

func TestPlaybookErrorsCarryPositionAndStack(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "lib")
	os.MkdirAll(lib, 0o755)
	os.WriteFile(filepath.Join(lib, "team.star"), []byte("def check(node):\n    helper(node)\n\ndef helper(node):\n    fail(\"disk full on \" + node.name)\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pb.star"), []byte("load(\"team.star\", \"check\")\n\ndef body(node):\n    check(node)\n\nstep(\"c\", body, nodes=\"s1\")\n"), 0o644)
	f := runtest.NewFixture(t)
	pre, _ := builtins.All()
	plan, err := runner.Load(runner.LoadOptions{Path: filepath.Join(dir, "pb.star"), LibDirs: []string{lib}, Predeclared: pre, Cluster: f.Cluster})
	if err != nil {
		t.Fatal(err)
	}
	done, _ := f.Run(plan, runner.RunOptions{})
	if len(done.Failed) != 1 {
		t.Fatalf("failed = %+v", done.Failed)
	}
	fe := done.Failed[0]
	if want := filepath.Join(lib, "team.star") + ":5:9: disk full on s1"; fe.Error != want {
		t.Errorf("error = %q, want %q", fe.Error, want)
	}
	for _, w := range []string{"pb.star:4:10: in body", "team.star:2:11: in check", "team.star:5:9: in helper", "Error in fail: disk full on s1"} {
		if !strings.Contains(fe.Detail, w) {
			t.Errorf("backtrace lacks %q:\n%s", w, fe.Detail)
		}
	}

	// Load-time errors: syntax, undefined name, error inside a loaded module.
	cases := map[string]string{
		"def broken(:\n":                                                       "pb.star:1:13:",
		"step(\"x\", undefined_fn)\n":                                          "pb.star:1:11: undefined: undefined_fn",
		"load(\"../etc/passwd.star\", \"x\")\n":                                "only .star modules beside the playbook",
		"load(\"missing.star\", \"x\")\n":                                      "module not found",
		"load(\"bad.star\", \"x\")\n":                                          "bad.star:2:7: floored division by zero",
		"def b(n):\n  pass\nstep(\"a\", b, nodes=\"nosuch\")\n":                "selects no node",
		"def b(n):\n  pass\nstep(\"a\", b)\nstep(\"a\", b)\n":                  "already declared at pb.star:3:5",
		"def b(n):\n  pass\nstep(\"a\", b, nodes=\"label:zone=x\")\n":          `step "a" (pb.star:3:5): nodes="label:zone=x": selector "label:zone=x" selects no node of cluster t (nodes: s1, s2, s3, a1; groups: group:etcd; labels: none)`,
		"def b(n):\n  pass\nstep(\"a\", b, nodes=\"servers,group:workers\")\n": `"group:workers" selects no node`,
		"while True:\n  pass\n":                                                "loading pb.star ran 10000000 Starlark operations",
		"def f():\n  n = 0\n  while True:\n    n += 1\nf()\n":                  "an endless loop? (stopped at pb.star:4:",
		"def b(n):\n  json.encodee(n)\nstep(\"a\", b)\n":                       `pb.star:2:8: json has no member "encodee" (it has: decode, encode, encode_indent, indent); see`,
		"x = json.dump\n":                                                      `pb.star:1:10: json has no member "dump"`,
	}
	for src, want := range cases {
		fsys := fstest.MapFS{"pb.star": {Data: []byte(src)}, "bad.star": {Data: []byte("x = 1\ny = x // 0\n")}}
		_, err := runner.Load(runner.LoadOptions{Path: "pb.star", FS: fsys, Predeclared: pre, Cluster: f.Cluster})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("source %q: err = %v, want it to contain %q", src, err, want)
		}
		if err != nil && !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("source %q: error is not ErrBadInput", src)
		}
	}
}

func TestRedaction(t *testing.T) {
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
def body(node):
    redact("supersecret-token")
    log("token is supersecret-token")
    note("new token: supersecret-token")
    fail("bad token supersecret-token")
step("r", body, nodes="s1")
`)
	done, _ := f.Run(plan, runner.RunOptions{})
	for _, e := range f.Events() {
		b, _ := runner.MarshalEvent(e)
		if strings.Contains(string(b), "supersecret") {
			t.Errorf("secret leaked in event: %s", b)
		}
	}
	if !strings.Contains(done.Failed[0].Error, "<redacted>") {
		t.Errorf("error not redacted: %q", done.Failed[0].Error)
	}
}

// TestRunnerImportsNoUI enforces the dependency direction: runner imports
// none of tui, builtins, lab or Bubble Tea.
// TestLoadStaysInsideItsDirectories: a module reached through a symbolic
// link that leads out of the playbook's directory or a --lib directory is
// refused, naming the link; one that stays inside loads.
func TestLoadStaysInsideItsDirectories(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	lib := filepath.Join(dir, "lib")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(lib, 0o755))
	must(os.WriteFile(filepath.Join(outside, "secret.star"), []byte("x = 1\n"), 0o644))
	must(os.WriteFile(filepath.Join(lib, "real.star"), []byte("x = 2\n"), 0o644))
	must(os.Symlink(filepath.Join(outside, "secret.star"), filepath.Join(dir, "escape.star")))
	must(os.Symlink(filepath.Join(outside, "secret.star"), filepath.Join(lib, "libescape.star")))
	must(os.Symlink("real.star", filepath.Join(lib, "inside.star")))
	f := runtest.NewFixture(t)
	pre, _ := builtins.All()
	for mod, want := range map[string]string{
		"escape.star":    "escape.star leads outside " + dir + " through a symbolic link",
		"libescape.star": "libescape.star leads outside " + lib,
		"inside.star":    "",
	} {
		src := fmt.Sprintf("load(%q, \"x\")\nstep(\"s\", lambda n: None, nodes=\"s1\")\n", mod)
		must(os.WriteFile(filepath.Join(dir, "pb.star"), []byte(src), 0o644))
		_, err := runner.Load(runner.LoadOptions{Path: filepath.Join(dir, "pb.star"), LibDirs: []string{lib}, Predeclared: pre, Cluster: f.Cluster})
		switch {
		case want == "" && err != nil:
			t.Errorf("load(%q): %v, want it to load", mod, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrBadInput)):
			t.Errorf("load(%q): err = %v, want a bad-input error containing %q", mod, err, want)
		}
	}
}

// TestLimitSelectingNothingIsRefused: --limit that matches no node is bad
// input, not a run over zero nodes.
func TestLimitSelectingNothingIsRefused(t *testing.T) {
	f := runtest.NewFixture(t)
	_, err := f.Load("step(\"s\", lambda n: None)\n", nil, "group:workers")
	if err == nil || !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), `--limit "group:workers" selects no node of cluster t (nodes: s1, s2, s3, a1; groups: group:etcd; labels: none)`) {
		t.Errorf("--limit group:workers: err = %v", err)
	}
}

// TestStepAllowEmpty: a step may say that a selector matching no node is
// fine; it then has no target and the run does nothing for it.
func TestStepAllowEmpty(t *testing.T) {
	f := runtest.NewFixture(t)
	plan, err := f.Load("step(\"s\", lambda n: fail(\"ran\"), nodes = \"label:zone=x\", allow_empty = True)\nstep(\"t\", lambda n: None, nodes = \"s1\")\n", nil, "")
	if err != nil {
		t.Fatalf("allow_empty = True: %v", err)
	}
	if len(plan.Steps) != 2 || len(plan.Steps[0].Nodes) != 0 {
		t.Fatalf("steps %+v; want the first without targets", plan.Steps)
	}
	done, err := f.Run(plan, runner.RunOptions{})
	if err != nil || done.Status != "ok" || done.Counts[runner.StatusOK] != 1 {
		t.Errorf("run: %v, %+v; want ok with one cell", err, done)
	}
}

func TestRunnerImportsNoUI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/caretaker/caretaker/runner").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"github.com/caretaker/caretaker/tui", "github.com/caretaker/caretaker/builtins", "github.com/caretaker/caretaker/lab", "charm.land/", "github.com/charmbracelet/"} {
			if strings.HasPrefix(dep, bad) {
				t.Errorf("runner depends on %s", dep)
			}
		}
	}
}

// TestSummaryNextSteps: a failed check-mode run does not offer resume or
// undo; a stopped real run lists the changes it recorded.
func TestSummaryNextSteps(t *testing.T) {
	check := runner.Summary(runner.RunDone{RunID: "r1", Status: "failed", Check: true})
	if strings.Contains(check, "caretaker resume") || !strings.Contains(check, "rehearse again with --check") {
		t.Errorf("check-mode summary:\n%s", check)
	}
	real := runner.Summary(runner.RunDone{RunID: "r2", Status: "aborted", Recorded: []string{"server-1: k3s.restore_server (step servers)"}})
	for _, want := range []string{"changes this attempt made before it stopped", "server-1: k3s.restore_server (step servers)", "caretaker resume r2"} {
		if !strings.Contains(real, want) {
			t.Errorf("aborted summary lacks %q:\n%s", want, real)
		}
	}
}

// TestStepResultsInEvents: a body's return value reaches step_done as
// plain JSON, redacted; values JSON cannot hold become strings; a result
// over the cap is replaced by a note and still readable with result().
func TestStepResultsInEvents(t *testing.T) {
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
def report(node):
    redact("supersecret-token")
    return {"n": 1, "ok": True, "list": [1.5, None, (2, "x")], "fn": report, "token": "supersecret-token",
            "s": struct(a = "b")}
def big(node):
    return "x" * 20000
def reader(node):
    if len(result("big", node)) != 20000:
        fail("big result not kept")
def nothing(node):
    pass
step("report", report, nodes="s1")
step("big", big, nodes="s1")
step("reader", reader, nodes="s1")
step("nothing", nothing, nodes="s1")
`)
	if _, err := f.Run(plan, runner.RunOptions{}); err != nil {
		t.Fatalf("run: %v", err)
	}
	got := map[string]runner.StepDone{}
	for _, e := range f.Events() {
		if d, ok := e.(runner.StepDone); ok {
			got[d.StepName] = d
		}
	}
	var report map[string]any
	if err := json.Unmarshal(got["report"].Result, &report); err != nil {
		t.Fatalf("report result %q: %v", got["report"].Result, err)
	}
	if report["n"] != 1.0 || report["ok"] != true || report["token"] != "<redacted>" ||
		!strings.HasPrefix(report["fn"].(string), "<function report") || report["s"].(map[string]any)["a"] != "b" {
		t.Errorf("report result: %s", got["report"].Result)
	}
	if l := report["list"].([]any); len(l) != 3 || l[0] != 1.5 || l[1] != nil {
		t.Errorf("list: %v", l)
	}
	if got["big"].Result != nil || !strings.Contains(got["big"].ResultNote, "over the 16384-byte limit") {
		t.Errorf("big result: %d bytes, note %q", len(got["big"].Result), got["big"].ResultNote)
	}
	if got["reader"].Status != runner.StatusOK {
		t.Errorf("reader: %s %s", got["reader"].Status, got["reader"].Error)
	}
	b, _ := runner.MarshalEvent(got["nothing"])
	if strings.Contains(string(b), "result") {
		t.Errorf("a body returning None has a result: %s", b)
	}
}
