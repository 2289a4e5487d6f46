// Package paint renders and measures short one-line strings fast. The grid
// and the output pane draw thousands of small styled pieces per second;
// lipgloss.Style.Render and grapheme-aware width are the right tools in
// general but dominate a frame when called for every cell and line.
package paint

import (
	"strings"
	"unicode/utf8"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// Pen holds the escape sequences a style puts around one line of text.
type Pen struct {
	pre, post string
}

// mark is a private-use rune no style changes.
const mark = "\uE000"

// NewPen captures a style for single-line text without tabs. Styles with
// padding, borders or widths must keep using Render.
func NewPen(st lipgloss.Style) Pen {
	s := st.Render(mark)
	i := strings.Index(s, mark)
	if i < 0 {
		return Pen{}
	}
	return Pen{pre: s[:i], post: s[i+len(mark):]}
}

// Paint styles s.
func (p Pen) Paint(s string) string {
	if p.pre == "" && p.post == "" {
		return s
	}
	return p.pre + s + p.post
}

// Width is the display width of s, escape sequences excluded. Text made of
// ASCII and common one-column symbols (Latin, punctuation, arrows, box
// drawing, blocks, geometric shapes, check marks, braille) is measured
// directly; anything else falls back to ansi.StringWidth.
func Width(s string) int {
	w := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == 0x1b:
			n := escLen(s[i:])
			if n == 0 {
				return ansi.StringWidth(s)
			}
			i += n
		case c >= 0x20 && c < 0x7f:
			w++
			i++
		case c < 0x80:
			i++ // other C0 controls take no space
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if !narrow(r) {
				return ansi.StringWidth(s)
			}
			w++
			i += n
		}
	}
	return w
}

// escLen is the length of the CSI or OSC sequence at the start of s, or 0
// if it is another kind (left to ansi).
func escLen(s string) int {
	if len(s) < 2 {
		return 0
	}
	switch s[1] {
	case '[': // CSI: parameters, then a final byte 0x40–0x7e
		for i := 2; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
		}
	case ']': // OSC: ends with BEL or ST
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
	}
	return 0
}

func narrow(r rune) bool {
	switch {
	case r >= 0xa0 && r < 0x300: // Latin-1, Latin Extended
		return r != 0xad
	case r >= 0x2010 && r <= 0x2027, r >= 0x2030 && r <= 0x205e: // punctuation
		return true
	case r >= 0x2190 && r <= 0x21ff: // arrows
		return true
	case r >= 0x2500 && r <= 0x25fc: // box drawing, blocks, geometric shapes
		return true
	case r >= 0x2713 && r <= 0x2718: // check marks
		return true
	case r >= 0x2800 && r <= 0x28ff: // braille (spinner)
		return true
	}
	return false
}

// Truncate cuts s to w columns, adding tail when it cuts. It is
// ansi.Truncate, skipped when s already fits.
func Truncate(s string, w int, tail string) string {
	if len(s) <= w || Width(s) <= w {
		return s
	}
	return ansi.Truncate(s, w, tail)
}

// PadRight pads s with spaces to w columns.
func PadRight(s string, w int) string {
	if n := Width(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}
