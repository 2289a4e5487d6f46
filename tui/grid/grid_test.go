package grid

import (
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/caretaker/caretaker/runner"
)

func TestAbbrev(t *testing.T) {
	for _, tc := range []struct {
		in   string
		w    int
		want string
	}{
		{"facts", 8, "facts"},
		{"backup_certs", 8, "bckpCrts"},
		{"restore_server", 5, "rstrS"},
		{"restart", 5, "rstrt"},
		{"verify", 0, ""},
		{"étape-longue", 6, "étpLng"},
	} {
		if got := Abbrev(tc.in, tc.w); got != tc.want {
			t.Errorf("Abbrev(%q, %d) = %q, want %q", tc.in, tc.w, got, tc.want)
		}
		if got := Abbrev(tc.in, tc.w); ansi.StringWidth(got) > tc.w {
			t.Errorf("Abbrev(%q, %d) = %q is too wide", tc.in, tc.w, got)
		}
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 9 * time.Second: "9s", 125 * time.Second: "2m", 3*time.Hour + time.Minute: "3h"} {
		if got := Short(d); got != want {
			t.Errorf("Short(%v) = %q, want %q", d, got, want)
		}
	}
}

func plan(n int) ([]runner.StepInfo, []runner.NodeInfo) {
	var nodes []runner.NodeInfo
	var names []string
	for i := range n {
		name := "n" + strings.Repeat("x", i%3) + string(rune('a'+i%26))
		nodes = append(nodes, runner.NodeInfo{Name: name, Role: []string{"agent", "server", "etcd", ""}[i%4]})
		names = append(names, name)
	}
	steps := []runner.StepInfo{{Name: "one", Nodes: names}, {Name: "two", Nodes: names[:1], Once: true}, {Name: "three", Nodes: names[1:]}}
	return steps, nodes
}

func TestGroupsOrder(t *testing.T) {
	g := New(plan(8))
	g.SetSize(60, 20)
	out := ansi.Strip(g.View(time.Time{}, 0))
	var heads []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "(") {
			heads = append(heads, strings.TrimSpace(l))
		}
	}
	want := []string{"servers (2)", "agents (2)", "etcd (2)", "other (2)"}
	if strings.Join(heads, ",") != strings.Join(want, ",") {
		t.Fatalf("group headings %v, want %v", heads, want)
	}
}

func TestOnlyVisibleRowsAndScroll(t *testing.T) {
	steps, nodes := plan(500)
	g := New(steps, nodes)
	g.SetSize(40, 10)
	if n := strings.Count(g.View(time.Time{}, 0), "\n") + 1; n != 10 {
		t.Fatalf("view has %d lines, want the 10 of its height", n)
	}
	g.Move(400)
	out := ansi.Strip(g.View(time.Time{}, 0))
	r, _ := g.Selected()
	if !strings.Contains(out, g.Nodes()[r].Name+" ") || !strings.Contains(out, "401/500") {
		t.Fatalf("selected row or position not visible:\n%s", out)
	}
	g.Move(-1000)
	if g.sel != 0 {
		t.Fatalf("Move clamps at the top, sel=%d", g.sel)
	}
}

func TestColumnsScroll(t *testing.T) {
	var steps []runner.StepInfo
	for i := range 30 {
		steps = append(steps, runner.StepInfo{Name: "step" + strings.Repeat("x", i%4), Nodes: []string{"a"}})
	}
	g := New(steps, []runner.NodeInfo{{Name: "a", Role: "server"}})
	g.SetSize(40, 5)
	g.MoveCol(29)
	out := ansi.Strip(g.View(time.Time{}, 0))
	if !strings.Contains(out, "‹") {
		t.Fatalf("scrolled columns should show ‹:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if ansi.StringWidth(l) > 40 {
			t.Fatalf("line wider than 40: %q", l)
		}
	}
}

func TestRunningCell(t *testing.T) {
	steps, nodes := plan(2)
	g := New(steps, nodes)
	g.SetSize(60, 6)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g.Start(runner.StepStarted{Step: 0, Node: nodes[0].Name, At: t0})
	out := ansi.Strip(g.View(t0.Add(75*time.Second), 3))
	if !strings.Contains(out, spinner[3]+" 1m") {
		t.Fatalf("running cell should show the spinner frame and elapsed time:\n%s", out)
	}
	g.Done(runner.StepDone{Step: 0, Node: nodes[0].Name, Status: "weird", Error: "a\nb"})
	if c, _ := g.Cell(0, 0); c.State != Failed || c.Error != "a" {
		t.Fatalf("an unknown status counts as failed with its first error line: %+v", c)
	}
}
