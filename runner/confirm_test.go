package runner_test

import (
	"context"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
)

// confirmSrc asks, shares a value and returns one; the second step uses
// both.
const confirmSrc = `
def ask(node):
    if not confirm("really?"):
        skip("operator said no")
    share("answer", {"node": node.name})
    return {"v": 42}
def use(node):
    assert.eq(shared("answer")["node"], "s1")
    assert.eq(result("ask", "s1")["v"], 42)
step("ask", ask, nodes="s1")
step("use", use, nodes="s2")
`

func TestConfirmAndShare(t *testing.T) {
	// No prompter and no --yes: confirm fails clearly instead of hanging.
	f := runtest.NewFixture(t)
	done, _ := f.Run(f.MustLoad(confirmSrc), runner.RunOptions{})
	if len(done.Failed) != 1 || !strings.Contains(done.Failed[0].Error, "--yes") {
		t.Fatalf("confirm without a terminal: %+v", done.Failed)
	}
	f2 := runtest.NewFixture(t)
	if _, err := f2.Run(f2.MustLoad(confirmSrc), runner.RunOptions{AutoYes: true}); err != nil {
		t.Fatalf("--yes run: %v", err)
	}
	f3 := runtest.NewFixture(t)
	done3, _ := f3.Run(f3.MustLoad(confirmSrc), runner.RunOptions{Prompter: no{}})
	if f3.Status("ask", "s1") != runner.StatusSkipped || done3.Status != "failed" {
		t.Errorf("answer no: ask=%s (use fails: nothing shared) status=%s", f3.Status("ask", "s1"), done3.Status)
	}
}

// TestConfirmInCheckMode: a rehearsal asks nobody. With no prompter and no
// --yes (no terminal), confirm() in --check neither prompts nor fails: it
// says what it would ask on the check stream and goes on as if answered yes,
// so the rehearsal shows the changes of the yes path.
func TestConfirmInCheckMode(t *testing.T) {
	const src = `
def ask(node):
    if not confirm("rotate " + node.name + " now?", destructive=True):
        skip("operator said no")
    node.write("/etc/x", "new")
    share("answer", node.name)
def use(node):
    assert.eq(shared("answer"), "s1")
    log("went on after the question")
step("ask", ask, nodes="s1")
step("use", use, nodes="s2")
`
	for _, tc := range []struct {
		name     string
		prompter runner.Prompter
	}{
		{"no prompter", nil},
		{"a prompter that must not be asked", askedFails{t}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := runtest.NewFixture(t)
			f.Fakes["s1"].SetFile("/etc/x", []byte("old"), 0o600)
			done, err := f.Run(f.MustLoad(src), runner.RunOptions{Check: true, Prompter: tc.prompter})
			if err != nil || done.Status != "ok" {
				t.Fatalf("check run with confirm(): status %s, err %v, failed %+v", done.Status, err, done.Failed)
			}
			for _, e := range f.Events() {
				switch e.(type) {
				case runner.Prompt, runner.PromptAnswered:
					t.Errorf("check mode emitted %T %+v: nobody should be asked", e, e)
				}
			}
			check := strings.Join(f.Output(runner.StreamCheck), "\n")
			for _, w := range []string{
				"s1: would ask: rotate s1 now? (check mode goes on as if answered yes)",
				"s1: would write /etc/x on s1",
			} {
				if !strings.Contains(check, w) {
					t.Errorf("check output lacks %q:\n%s", w, check)
				}
			}
			if data, _ := f.Fakes["s1"].File("/etc/x"); string(data) != "old" {
				t.Errorf("check mode wrote /etc/x: %q", data)
			}
			if f.Status("use", "s2") != runner.StatusOK {
				t.Errorf("the run should go on after the question: use on s2 = %s", f.Status("use", "s2"))
			}
		})
	}
}

// askedFails is a prompter that fails the test when asked.
type askedFails struct{ t *testing.T }

func (a askedFails) Confirm(_ context.Context, q runner.Prompt) (bool, error) {
	a.t.Errorf("check mode asked %q", q.Question)
	return false, nil
}

type no struct{}

func (no) Confirm(context.Context, runner.Prompt) (bool, error) { return false, nil }
