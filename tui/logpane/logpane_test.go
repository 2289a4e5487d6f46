package logpane

import (
	"strconv"
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
)

func lines(n int) []Line {
	var out []Line
	for i := range n {
		out = append(out, Line{Text: "line " + strconv.Itoa(i)})
	}
	return out
}

func TestFollowsTailUntilScrolled(t *testing.T) {
	var p Pane
	p.SetSize(30, 5) // title + 4 lines
	p.SetLines(lines(10))
	if v := ansi.Strip(p.View()); !strings.HasSuffix(v, "line 9") || !strings.Contains(v, "tail") {
		t.Fatalf("should show the tail:\n%s", v)
	}
	p.ScrollBy(-3)
	p.SetLines(lines(20))
	v := ansi.Strip(p.View())
	if !strings.HasSuffix(v, "line 6") || !strings.Contains(v, "4-7/20") {
		t.Fatalf("scrolled pane must stay put when lines arrive:\n%s", v)
	}
	p.PageDown()
	p.PageDown()
	p.PageDown()
	p.PageDown()
	p.PageDown()
	if !p.Following() {
		t.Fatal("scrolling to the end follows the tail again")
	}
	p.Top()
	if p.Following() || !strings.Contains(ansi.Strip(p.View()), "line 0") {
		t.Fatal("Top shows the first line and stops following")
	}
	p.Reset(lines(2))
	if !p.Following() {
		t.Fatal("Reset follows the tail")
	}
}

func TestHeaderAndWidth(t *testing.T) {
	var p Pane
	p.SetSize(20, 6)
	p.SetTitle("a very long node name indeed")
	p.SetHeader(strings.Repeat("word ", 30), StepFail)
	p.SetLines([]Line{{Kind: Stderr, Text: strings.Repeat("x", 50)}})
	v := ansi.Strip(p.View())
	ls := strings.Split(v, "\n")
	if len(ls) != 5 { // title, 3 header lines, 1 line
		t.Fatalf("want 5 lines, got %d:\n%s", len(ls), v)
	}
	for _, l := range ls {
		if ansi.StringWidth(l) > 20 {
			t.Fatalf("line wider than the pane: %q", l)
		}
	}
	if !strings.HasPrefix(ls[4], "! xxx") || !strings.HasSuffix(ls[4], "…") {
		t.Fatalf("stderr line should be prefixed and cut: %q", ls[4])
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                     "plain",
		"\x1b[1;31mred\x1b[0m":      "red",
		"a\tb":                      "a   b",
		"progress\r100%\a":          "progress100%",
		"\x1b]0;title\x07text":      "text",
		"naïve ünïcode":             "naïve ünïcode",
		"c1\u0085control\u009b31m!": "c1control31m!",
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}
