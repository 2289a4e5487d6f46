// Package logpane is the scrollable output pane of one node: it shows a
// window of lines, follows the tail while the operator has not scrolled
// away, and renders only the lines in the window.
package logpane

import (
	"strconv"
	"strings"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/caretaker/caretaker/tui/internal/paint"
)

// Kind says where a line came from; it picks the prefix and the style.
type Kind uint8

// Line kinds.
const (
	Stdout Kind = iota
	Stderr
	Log
	Check
	StepStart // "▸ 3 restart"
	StepOK    // "✓ ok in 2s"
	StepFail  // "✗ failed: ..."
	Info      // prompts, notes, pauses
	numKinds
)

// Line is one line of the pane. Text is already free of control sequences.
type Line struct {
	Kind Kind
	Text string
}

var prefix = [numKinds]string{
	Stdout:    "  ",
	Stderr:    "! ",
	Log:       "» ",
	Check:     "~ ",
	StepStart: "",
	StepOK:    "",
	StepFail:  "",
	Info:      "",
}

// Styles are the pane's styles.
type Styles struct {
	Kinds   [numKinds]lipgloss.Style
	Title   lipgloss.Style // title bar, unfocused
	Focused lipgloss.Style // title bar, focused
	Dim     lipgloss.Style
}

// Pane is the model. The zero value is an empty pane that follows the tail.
type Pane struct {
	lines    []Line
	offset   int
	unfollow bool // the operator scrolled away from the tail
	focused  bool
	title    string
	header   []string // wrapped lines under the title (the selected cell)
	headKind Kind
	width    int
	height   int
	styles   Styles
	pens     [numKinds]paint.Pen
	titlePen [2]paint.Pen // unfocused, focused
}

// SetStyles sets the styles.
func (p *Pane) SetStyles(s Styles) {
	p.styles = s
	for k := range numKinds {
		p.pens[k] = paint.NewPen(s.Kinds[k])
	}
	p.titlePen = [2]paint.Pen{paint.NewPen(s.Title), paint.NewPen(s.Focused)}
}

// SetSize sets the size, the title line included.
func (p *Pane) SetSize(w, h int) {
	p.width, p.height = max(w, 4), max(h, 2)
	p.clamp()
}

// Width returns the width set last.
func (p *Pane) Width() int { return p.width }

// Height returns the height set last, the title line included.
func (p *Pane) Height() int { return p.height }

// SetTitle sets the text of the title line.
func (p *Pane) SetTitle(t string) { p.title = t }

// SetHeader sets text shown under the title, wrapped to the width (at most
// three lines), styled as kind.
func (p *Pane) SetHeader(text string, kind Kind) {
	p.headKind = kind
	p.header = p.header[:0]
	if text == "" {
		p.clamp()
		return
	}
	p.header = append(p.header, strings.Split(ansi.Wrap(text, max(p.width-1, 1), ""), "\n")...)
	if len(p.header) > 3 {
		p.header = p.header[:3]
		p.header[2] = ansi.Truncate(p.header[2], max(p.width-2, 1), "") + "…"
	}
	p.clamp()
}

// SetFocused marks the pane as receiving the scroll keys.
func (p *Pane) SetFocused(f bool) { p.focused = f }

// Focused reports whether the pane has the focus.
func (p *Pane) Focused() bool { return p.focused }

// SetLines replaces the lines (the slice is only read). When following the
// tail the window moves to the end.
func (p *Pane) SetLines(lines []Line) {
	p.lines = lines
	p.clamp()
}

// Reset shows new content from its tail (used when another node is chosen).
func (p *Pane) Reset(lines []Line) {
	p.unfollow = false
	p.SetLines(lines)
}

// Following reports whether the window follows the tail.
func (p *Pane) Following() bool { return !p.unfollow }

func (p *Pane) body() int { return max(p.height-1-len(p.header), 1) }

func (p *Pane) maxOffset() int { return max(len(p.lines)-p.body(), 0) }

func (p *Pane) clamp() {
	if !p.unfollow {
		p.offset = p.maxOffset()
		return
	}
	p.offset = min(max(p.offset, 0), p.maxOffset())
	if p.offset == p.maxOffset() {
		p.unfollow = false
	}
}

// ScrollBy scrolls by n lines (negative: up). Scrolling to the end follows
// the tail again.
func (p *Pane) ScrollBy(n int) {
	if n == 0 {
		return
	}
	p.offset += n
	p.unfollow = true
	p.clamp()
}

// PageUp scrolls up by a window.
func (p *Pane) PageUp() { p.ScrollBy(-max(p.body()-1, 1)) }

// PageDown scrolls down by a window.
func (p *Pane) PageDown() { p.ScrollBy(max(p.body()-1, 1)) }

// Top scrolls to the first line.
func (p *Pane) Top() { p.offset = 0; p.unfollow = p.maxOffset() > 0 }

// Bottom scrolls to the tail and follows it.
func (p *Pane) Bottom() { p.unfollow = false; p.clamp() }

// View renders the title line and the window of lines.
func (p *Pane) View() string {
	var b strings.Builder
	b.Grow(p.width * p.height * 2)
	pos := "tail"
	if p.unfollow {
		pos = strconv.Itoa(p.offset+1) + "-" + strconv.Itoa(min(p.offset+p.body(), len(p.lines))) + "/" + strconv.Itoa(len(p.lines))
	}
	if len(p.lines) == 0 {
		pos = "no output"
	}
	title := paint.Truncate(p.title, max(p.width-len(pos)-3, 1), "…")
	gap := max(p.width-paint.Width(title)-len(pos)-2, 1)
	ts := p.titlePen[0]
	if p.focused {
		ts = p.titlePen[1]
	}
	b.WriteString(ts.Paint(" " + title + strings.Repeat(" ", gap) + pos + " "))
	for _, h := range p.header {
		b.WriteByte('\n')
		b.WriteString(p.pens[p.headKind].Paint(" " + h))
	}
	end := min(p.offset+p.body(), len(p.lines))
	for i := p.offset; i < end; i++ {
		b.WriteByte('\n')
		l := p.lines[i]
		b.WriteString(p.pens[l.Kind].Paint(paint.Truncate(prefix[l.Kind]+l.Text, p.width, "…")))
	}
	return b.String()
}

// Clean makes text safe to draw: escape sequences and control characters
// are removed and tabs expanded.
func Clean(s string) string {
	if !needsClean(s) {
		return s
	}
	s = ansi.Strip(s)
	var b strings.Builder
	col := 0
	for _, r := range s {
		switch {
		case r == '\t':
			n := 4 - col%4
			b.WriteString(strings.Repeat(" ", n))
			col += n
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			// drop: \r, bells, stray controls
		default:
			b.WriteRune(r)
			col++
		}
	}
	return b.String()
}

func needsClean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == 0xc2 { // 0xc2 starts C1 controls in UTF-8
			return true
		}
	}
	return false
}
