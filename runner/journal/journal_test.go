package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

const journalInv = `
clusters:
  - name: jt
    nodes:
      - {name: s1, address: 10.0.0.1, role: server}
      - {name: s2, address: 10.0.0.2, role: server}
`

// A playbook that changes a file on every node (recording how to put it
// back first) and then needs a flag file that s2 lacks at first.
const journalPlaybook = `
def facts(node):
    pass
step("facts", facts, mutates=False)

def change(node):
    put("/etc/app.conf", "new-" + node)
    keep("k", {"a": (1, 2.5), "b": [True, None, "s"], "big": 1 << 70})
step("change", change)

def change_again(node):
    put("/etc/app.conf", "newer-" + node)
step("change again", change_again)

def needs_flag(node):
    if got("k") == None or got("k")["big"] != 1 << 70:
        fail("the shared value of step change is gone")
    require("/flag")
step("needs flag", needs_flag)
`

type undoData struct {
	Path string `json:"path"`
	Old  string `json:"old"`
}

var registerTestUndo sync.Once

// testBuiltins are put(path, data) — records a "test.put" undo with the old
// content, then writes — and require(path), which fails when path is missing.
func testBuiltins(t *testing.T) starlark.StringDict {
	registerTestUndo.Do(func() {
		runner.RegisterUndo("test.put", func(ctx context.Context, env *runner.Env, data []byte) error {
			var d undoData
			if err := json.Unmarshal(data, &d); err != nil {
				return err
			}
			return env.Wet("restore "+d.Path, func() error {
				env.MarkChanged()
				return env.Exec.WriteFile(ctx, d.Path, []byte(d.Old), 0o644)
			})
		})
	})
	put := starlark.NewBuiltin("put", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var path, data string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &path, "data", &data); err != nil {
			return nil, err
		}
		env, err := runner.EnvFrom(th, b.Name())
		if err != nil {
			return nil, err
		}
		old, _ := env.Exec.ReadFile(env.Ctx, path)
		u, _ := json.Marshal(undoData{Path: path, Old: string(old)})
		if err := env.Undo("test.put", u); err != nil {
			return nil, err
		}
		return starlark.None, env.Wet("write "+path, func() error {
			env.MarkChanged()
			return env.Exec.WriteFile(env.Ctx, path, []byte(data), 0o644)
		})
	})
	require := starlark.NewBuiltin("require", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var path string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &path); err != nil {
			return nil, err
		}
		env, err := runner.EnvFrom(th, b.Name())
		if err != nil {
			return nil, err
		}
		if _, err := env.Exec.ReadFile(env.Ctx, path); err != nil {
			return nil, fmt.Errorf("%s missing on %s", path, env.Node.Name)
		}
		return starlark.None, nil
	})
	keep := starlark.NewBuiltin("keep", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var key string
		var v starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "value", &v); err != nil {
			return nil, err
		}
		env, err := runner.EnvFrom(th, b.Name())
		if err != nil {
			return nil, err
		}
		env.Share(key, v)
		return starlark.None, nil
	})
	got := starlark.NewBuiltin("got", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var key string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key); err != nil {
			return nil, err
		}
		env, err := runner.EnvFrom(th, b.Name())
		if err != nil {
			return nil, err
		}
		if v, ok := env.Shared(key); ok {
			return v, nil
		}
		return starlark.None, nil
	})
	return starlark.StringDict{"put": put, "require": require, "keep": keep, "got": got}
}

type jfix struct {
	t       *testing.T
	cluster *inventory.Cluster
	fakes   map[string]*fake.Executor
	state   string
	mu      sync.Mutex
	events  []runner.Event
}

func newJFix(t *testing.T) *jfix {
	inv, err := inventory.Parse("inv.yaml", []byte(journalInv))
	if err != nil {
		t.Fatal(err)
	}
	f := &jfix{t: t, cluster: inv.Clusters[0], fakes: map[string]*fake.Executor{}, state: t.TempDir()}
	for _, n := range f.cluster.Nodes {
		fe := fake.New(n.Name)
		fe.SetFile("/etc/app.conf", []byte("orig-"+n.Name), 0o644)
		f.fakes[n.Name] = fe
	}
	f.fakes["s1"].SetFile("/flag", []byte("x"), 0o644)
	return f
}

func (f *jfix) load() *runner.Plan {
	f.t.Helper()
	plan, err := runner.Load(runner.LoadOptions{Name: "jpb", Path: "pb.star", FS: fstest.MapFS{"pb.star": {Data: []byte(journalPlaybook)}}, Predeclared: testBuiltins(f.t), Cluster: f.cluster})
	if err != nil {
		f.t.Fatal(err)
	}
	return plan
}

func (f *jfix) run(plan *runner.Plan, j *File, done func(int, string) bool, shared ...map[string]starlark.Value) (runner.RunDone, error) {
	f.mu.Lock()
	f.events = nil
	f.mu.Unlock()
	opts := runner.RunOptions{
		RunID:      j.RunID(),
		StateDir:   f.state,
		Journal:    j,
		Done:       done,
		BeforeStep: j.BeforeStep,
		Shared:     firstOr(shared),
		// A pool of our own: the run would close the fakes otherwise.
		Pool: runner.NewPool(func(ctx context.Context, n *inventory.Node) (transport.Executor, error) { return f.fakes[n.Name], nil }),
		Sink: runner.MultiSink{j, runner.SinkFunc(func(e runner.Event) {
			f.mu.Lock()
			f.events = append(f.events, e)
			f.mu.Unlock()
		})},
	}
	return runner.NewRun(plan, opts).Execute(context.Background())
}

func firstOr(m []map[string]starlark.Value) map[string]starlark.Value {
	if len(m) == 0 {
		return nil
	}
	return m[0]
}

func (f *jfix) stepDone(step, node string) runner.StepDone {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.events {
		if d, ok := e.(runner.StepDone); ok && d.StepName == step && d.Node == node {
			return d
		}
	}
	return runner.StepDone{}
}

func (f *jfix) file(node, path string) string {
	b, _ := f.fakes[node].File(path)
	return string(b)
}

func TestJournalRecordsResumeAndUndo(t *testing.T) {
	f := newJFix(t)
	plan := f.load()
	meta := NewRunMeta("20260101-000000-jpb-0001", plan.Playbook, f.cluster.Name)
	meta.PlaybookRef, meta.Inventory, meta.Params = "/abs/pb.star", "/abs/inv.yaml", map[string]string{"k": "v"}
	j, err := Create(f.state, meta)
	if err != nil {
		t.Fatal(err)
	}
	done, err := f.run(plan, j, nil)
	if err == nil || done.Status != "failed" {
		t.Fatalf("first attempt: status %q err %v, want failed (s2 lacks /flag)", done.Status, err)
	}
	if done.Journal != j.Path() {
		t.Errorf("RunDone.Journal = %q, want %q", done.Journal, j.Path())
	}
	// While the journal is open its lock is held: the run reads as running
	// and cannot be resumed by another process.
	rec, err := ReadRun(f.state, meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != "failed" {
		t.Errorf("state after a failed attempt = %q, want failed", rec.State)
	}
	if _, _, err := Resume(f.state, meta.RunID); !errors.Is(err, errs.ErrLocked) {
		t.Errorf("resume while the journal is held: err = %v, want ErrLocked", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(j.Path()); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("journal file mode: %v %v, want 0600", st, err)
	}

	rec, err = ReadRun(f.state, meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Meta.PlaybookRef != "/abs/pb.star" || rec.Meta.Params["k"] != "v" || len(rec.Meta.Steps) != 4 || len(rec.Meta.Nodes) != 2 {
		t.Errorf("header read back = %+v", rec.Meta)
	}
	if rec.Attempts != 1 || rec.LastDone == nil || rec.LastDone.Status != "failed" {
		t.Errorf("attempts %d last %+v", rec.Attempts, rec.LastDone)
	}
	for _, c := range []struct {
		step int
		node string
		want bool
	}{{0, "s1", true}, {1, "s2", true}, {2, "s1", true}, {3, "s1", true}, {3, "s2", false}} {
		if got := rec.Completed(c.step, c.node); got != c.want {
			t.Errorf("Completed(%d, %s) = %v, want %v", c.step, c.node, got, c.want)
		}
	}
	if len(rec.Undos) != 4 {
		t.Fatalf("undo records = %+v, want 4 (2 steps × 2 nodes)", rec.Undos)
	}
	for i, u := range rec.Undos {
		if u.Seq != i+1 || u.Kind != "test.put" {
			t.Errorf("undo %d = %+v", i, u)
		}
	}
	var first undoData
	if err := json.Unmarshal(rec.Undos[0].Data, &first); err != nil || !strings.HasPrefix(first.Old, "orig-") || first.Path != "/etc/app.conf" {
		t.Errorf("first undo data = %s (%v)", rec.Undos[0].Data, err)
	}
	if err := rec.Resumable(); err != nil {
		t.Errorf("Resumable: %v", err)
	}

	// Resume after fixing the cause: the done steps are skipped, the failed
	// one runs again, undo numbering continues.
	f.fakes["s2"].SetFile("/flag", []byte("x"), 0o644)
	j2, rec2, err := Resume(f.state, meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec2.CheckPlan(plan); err != nil {
		t.Fatal(err)
	}
	if j2.Attempt() != 2 {
		t.Errorf("attempt = %d, want 2", j2.Attempt())
	}
	shared, lost := rec2.SharedValues()
	if len(lost) != 0 || shared["k"] == nil {
		t.Fatalf("shared values read back: %v, lost %v", shared, lost)
	}
	done, err = f.run(f.load(), j2, rec2.ResumeDone(plan), shared)
	j2.Close()
	if err != nil || done.Status != "ok" {
		t.Fatalf("resume: %q %v", done.Status, err)
	}
	if d := f.stepDone("change", "s1"); d.Status != runner.StatusSkipped || d.Reason != "done in an earlier run" {
		t.Errorf("resumed run, change@s1 = %+v, want skipped as done", d)
	}
	if d := f.stepDone("facts", "s1"); d.Status != runner.StatusOK {
		t.Errorf("resumed run, read-only facts@s1 = %+v, want run again (ok)", d)
	}
	if d := f.stepDone("needs flag", "s2"); d.Status != runner.StatusOK {
		t.Errorf("resumed run, needs flag@s2 = %+v, want ok", d)
	}
	rec, err = ReadRun(f.state, meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != "ok" || rec.Attempts != 2 || !rec.Completed(3, "s2") || !rec.Completed(1, "s1") {
		t.Errorf("after resume: state %q attempts %d", rec.State, rec.Attempts)
	}
	if err := rec.Resumable(); !errors.Is(err, errs.ErrBadInput) {
		t.Errorf("Resumable of an ok run = %v, want a refusal", err)
	}

	// Undo: latest first, each node back to its original content.
	if got := f.file("s1", "/etc/app.conf"); got != "newer-s1" {
		t.Fatalf("before undo s1 has %q", got)
	}
	uplan, err := runner.UndoPlan(rec.UndoRun(), f.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if len(uplan.Steps) != 4 || !strings.HasPrefix(uplan.Steps[0].Name, "undo #4 test.put") || uplan.Steps[0].Nodes[0].Name != rec.Undos[3].Node {
		t.Fatalf("undo plan steps: %v", stepNames(uplan))
	}
	if got := rec.UndoOrder(); fmt.Sprint(got) != "[4 3 2 1]" {
		t.Errorf("UndoOrder = %v", got)
	}
	umeta := NewRunMeta("20260101-000100-undo-jpb-0002", uplan.Playbook, f.cluster.Name)
	umeta.UndoOf, umeta.UndoSeqs = meta.RunID, rec.UndoOrder()
	uj, err := Create(f.state, umeta)
	if err != nil {
		t.Fatal(err)
	}
	done, err = f.run(uplan, uj, nil)
	uj.Close()
	if err != nil || done.Status != "ok" || done.Counts[runner.StatusChanged] != 4 {
		t.Fatalf("undo run: %+v %v", done, err)
	}
	for _, n := range []string{"s1", "s2"} {
		if got := f.file(n, "/etc/app.conf"); got != "orig-"+n {
			t.Errorf("after undo %s has %q, want orig-%s", n, got, n)
		}
	}
	runs, err := ListRuns(f.state)
	if err != nil || len(runs) != 2 {
		t.Fatalf("ListRuns = %d runs, %v", len(runs), err)
	}
	if runs[0].Meta.UndoOf != meta.RunID {
		t.Errorf("newest run = %s (undo of %q), want the undo run", runs[0].Meta.RunID, runs[0].Meta.UndoOf)
	}
}

func stepNames(p *runner.Plan) []string {
	var out []string
	for _, s := range p.Steps {
		out = append(out, s.Name+"@"+s.Nodes[0].Name)
	}
	return out
}

func TestJournalInterruptedAndTruncated(t *testing.T) {
	f := newJFix(t)
	meta := NewRunMeta("r-killed", "jpb", "jt")
	meta.PlaybookRef = "jpb"
	j, err := Create(f.state, meta)
	if err != nil {
		t.Fatal(err)
	}
	j.Emit(runner.RunStarted{RunID: "r-killed", Playbook: "jpb", Cluster: "jt", Steps: []runner.StepInfo{{Index: 0, Name: "a"}, {Index: 1, Name: "b"}}, Nodes: []runner.NodeInfo{{Name: "s1"}}})
	j.Emit(runner.StepStarted{Step: 0, StepName: "a", Node: "s1"})
	j.Emit(runner.StepDone{Step: 0, StepName: "a", Node: "s1", Status: runner.StatusChanged})
	j.Emit(runner.StepStarted{Step: 1, StepName: "b", Node: "s1"})
	if err := j.RecordUndo(context.Background(), runner.UndoRecord{Step: 1, Node: "s1", Kind: "test.put", Data: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	// RecordUndo returns once the entry is in the file.
	raw, _ := os.ReadFile(j.Path())
	if !strings.Contains(string(raw), `"type":"undo"`) {
		t.Fatalf("undo entry not written when RecordUndo returned:\n%s", raw)
	}
	if rec, _ := ReadRun(f.state, "r-killed"); rec.State != RunStateRunning {
		t.Errorf("state with the journal held = %q, want running", rec.State)
	}
	// The process "dies": the lock goes, no run_done, half a line at the end.
	j.Close()
	fh, _ := os.OpenFile(j.Path(), os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString(`{"type":"step_done","step":1,"no`)
	fh.Close()

	rec, err := ReadRun(f.state, "r-killed")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != RunStateInterrupted || !rec.Truncated {
		t.Errorf("state %q truncated %v, want interrupted and truncated", rec.State, rec.Truncated)
	}
	if len(rec.Started) != 1 || rec.Started[0].StepName != "b" {
		t.Errorf("in progress = %+v, want step b", rec.Started)
	}
	if !rec.Completed(0, "s1") || rec.Completed(1, "s1") {
		t.Errorf("completed a=%v b=%v", rec.Completed(0, "s1"), rec.Completed(1, "s1"))
	}
	if len(rec.Undos) != 1 || string(rec.Undos[0].Data) != "not json" {
		t.Errorf("undo with non-JSON data read back as %+v", rec.Undos)
	}
	rec.Meta.PlaybookRef = "jpb"
	if err := rec.Resumable(); err != nil {
		t.Errorf("an interrupted run must be resumable: %v", err)
	}
	// A damaged line in the middle is an error naming the line.
	data, _ := os.ReadFile(j.Path())
	lines := strings.SplitAfter(string(data), "\n")
	lines[2] = "garbage\n"
	os.WriteFile(j.Path(), []byte(strings.Join(lines, "")), 0o600)
	if _, err := ReadRun(f.state, "r-killed"); err == nil || !strings.Contains(err.Error(), "journal.jsonl:3") {
		t.Errorf("damaged journal: err = %v, want one naming line 3", err)
	}
}

func TestJournalCheckPlanAndIDs(t *testing.T) {
	f := newJFix(t)
	plan := f.load()
	rec := &RunRecord{Meta: RunMeta{RunID: "x", Steps: []runner.StepInfo{{Name: "facts"}, {Name: "change"}, {Name: "renamed"}, {Name: "needs flag"}}}}
	if err := rec.CheckPlan(plan); err == nil || !strings.Contains(err.Error(), `"change again"`) {
		t.Errorf("CheckPlan with a renamed step: %v", err)
	}
	rec.Meta.Steps = rec.Meta.Steps[:2]
	if err := rec.CheckPlan(plan); err == nil || !strings.Contains(err.Error(), "4 steps") {
		t.Errorf("CheckPlan with fewer steps: %v", err)
	}
	for _, id := range []string{"", "..", "a/b", ".hidden"} {
		if _, err := ReadRun(f.state, id); !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("ReadRun(%q) = %v, want ErrBadInput", id, err)
		}
	}
	if _, err := ReadRun(f.state, "nope"); !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), "caretaker runs") {
		t.Errorf("ReadRun of a missing run = %v", err)
	}
	// A journal created but never started leaves nothing behind.
	j, err := Create(f.state, NewRunMeta("never", "jpb", "jt"))
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if _, err := os.Stat(filepath.Join(f.state, "runs", "never")); !os.IsNotExist(err) {
		t.Errorf("declined run left %v", err)
	}
	if runs, err := ListRuns(f.state); err != nil || len(runs) != 0 {
		t.Errorf("ListRuns = %v %v", runs, err)
	}
}

func TestUndoPlanRefusals(t *testing.T) {
	f := newJFix(t)
	testBuiltins(t)
	rec := &RunRecord{Meta: RunMeta{RunID: "r", Playbook: "p"}}
	if _, err := runner.UndoPlan(rec.UndoRun(), f.cluster); err == nil || !strings.Contains(err.Error(), "nothing to undo") {
		t.Errorf("empty: %v", err)
	}
	rec.Undos = []Undo{{Seq: 1, Node: "gone", Kind: "test.put"}}
	if _, err := runner.UndoPlan(rec.UndoRun(), f.cluster); !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), `"gone"`) {
		t.Errorf("unknown node: %v", err)
	}
	// A kind without an undo function is reported, not run: the step is
	// skipped and the recorded "how" becomes a note.
	rec.Undos = []Undo{{Seq: 1, Node: "s1", Kind: "x.unknown", Data: []byte(`{"how":"restore the backup by hand"}`)}}
	plan, err := runner.UndoPlan(rec.UndoRun(), f.cluster)
	if err != nil || !strings.Contains(plan.Description, "cannot be undone automatically (x.unknown)") {
		t.Fatalf("unknown kind: %v %v", plan, err)
	}
	j, err := Create(f.state, NewRunMeta("u-unknown", plan.Playbook, "jt"))
	if err != nil {
		t.Fatal(err)
	}
	done, err := f.run(plan, j, nil)
	j.Close()
	if err != nil || done.Counts[runner.StatusSkipped] != 1 || len(done.Notes) != 1 || !strings.Contains(done.Notes[0], "no automatic undo for x.unknown; recorded: restore the backup by hand") {
		t.Errorf("undo run of an unknown kind: %+v %v", done, err)
	}
	for _, c := range []struct {
		meta RunMeta
		want string
	}{
		{RunMeta{RunID: "u", UndoOf: "orig", PlaybookRef: "x"}, "caretaker undo orig"},
		{RunMeta{RunID: "n"}, "cannot be loaded again"},
		{RunMeta{RunID: "c", PlaybookRef: "x", Check: true}, "check-mode"},
	} {
		r := &RunRecord{Meta: c.meta, State: "failed"}
		if err := r.Resumable(); !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Resumable(%+v) = %v, want %q", c.meta, err, c.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a kind twice must panic")
		}
	}()
	runner.RegisterUndo("test.put", func(context.Context, *runner.Env, []byte) error { return nil })
}

// A journal that cannot be written stops the run before its next step.
func TestJournalWriteFailureStopsRun(t *testing.T) {
	f := newJFix(t)
	plan := f.load()
	j, err := Create(f.state, NewRunMeta("broken", "jpb", "jt"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.Emit(runner.RunStarted{RunID: "broken"})
	j.f.Close() // writes now fail
	done, err := f.run(plan, j, nil)
	if err == nil || !strings.Contains(done.Error, "journal") {
		t.Fatalf("run with a broken journal: %+v %v", done, err)
	}
	if d := f.stepDone("change", "s1"); d.Status != "" {
		t.Errorf("a step ran after the journal broke: %+v", d)
	}
}

func TestSharedValuesRoundTrip(t *testing.T) {
	big, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	d := starlark.NewDict(2)
	d.SetKey(starlark.MakeInt(1), starlark.String("one"))
	d.SetKey(starlark.String("t"), starlark.Tuple{starlark.Float(0.5), starlark.Bytes("\x00\xff")})
	in := starlark.NewList([]starlark.Value{
		starlark.None, starlark.True, starlark.String("s"), starlark.MakeInt(-7), starlark.MakeBigInt(big), d,
		starlarkstruct.FromStringDict(starlark.String("ca"), starlark.StringDict{"sha256": starlark.String("ab"), "certs": starlark.MakeInt(2)}),
	})
	raw, err := encodeShared(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeShared(raw)
	if err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	if out.String() != in.String() {
		t.Errorf("round trip:\n got %s\nwant %s\n(json %s)", out, in, raw)
	}
	s := out.(*starlark.List).Index(6).(*starlarkstruct.Struct)
	if v, _ := s.Attr("certs"); v != starlark.MakeInt(2) {
		t.Errorf("struct field certs = %v", v)
	}
	// A value that cannot be kept is reported by key, not silently dropped.
	rec := &RunRecord{shared: map[string][]sharedEntry{}, done: map[stepKey]StepResult{}}
	rec.shared["ok"] = []sharedEntry{{data: raw}}
	fn, _ := encodeShared(starlark.NewBuiltin("f", nil))
	rec.shared["fn"] = []sharedEntry{{data: fn}}
	vals, lost := rec.SharedValues()
	if len(vals) != 1 || len(lost) != 1 || !strings.Contains(lost[0], "fn: a builtin_function_or_method cannot be kept") {
		t.Errorf("SharedValues = %v, lost %q", vals, lost)
	}
}

// TestSharedValuesOfFinishedStepsOnly: a resumed run gets back the last
// value each key had from a step that ended ok or changed on its node, not
// one shared by a step that then failed (it runs again and shares again).
func TestSharedValuesOfFinishedStepsOnly(t *testing.T) {
	enc := func(s string) json.RawMessage { b, _ := encodeShared(starlark.String(s)); return b }
	rec := &RunRecord{shared: map[string][]sharedEntry{
		"a": {{data: enc("good"), step: 0, node: "n1"}, {data: enc("from the failed step"), step: 1, node: "n1"}},
		"b": {{data: enc("only failed"), step: 1, node: "n1"}},
		"c": {{data: enc("interrupted"), step: 2, node: "n2"}},
	}, done: map[stepKey]StepResult{
		{0, "n1"}: {Status: runner.StatusChanged},
		{1, "n1"}: {Status: runner.StatusFailed},
	}}
	vals, lost := rec.SharedValues()
	if len(lost) != 0 || len(vals) != 1 || vals["a"] != starlark.String("good") {
		t.Errorf("SharedValues = %v, lost %v; want only a=good", vals, lost)
	}
}
