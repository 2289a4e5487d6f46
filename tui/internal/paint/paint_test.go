package paint

import (
	"testing"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// Width must agree with ansi.StringWidth on every kind of text it sees.
func TestWidthAgreesWithAnsi(t *testing.T) {
	st := lipgloss.NewStyle().Foreground(lipgloss.Color("#ff0000")).Bold(true).Reverse(true)
	for _, s := range []string{
		"", "plain ascii", "srv-1   ✓        ●        ·        ⠋ 23s",
		st.Render("styled ✗ text"), "╔══╗ ║ ╚══╝ █░ ▸ • · … ‹ › ↑↓←→ × —",
		"naïve façade", "wide 漢字 text", "emoji 🚀 here", "e\u0301 combining",
		"\x1b]8;;http://x\x07link\x1b]8;;\x07", "tab\there", "\x1b[1;31mred\x1b[m and \u200bzero",
	} {
		if got, want := Width(s), ansi.StringWidth(s); got != want {
			t.Errorf("Width(%q) = %d, ansi says %d", s, got, want)
		}
	}
}

func TestPenMatchesRender(t *testing.T) {
	for _, st := range []lipgloss.Style{
		lipgloss.NewStyle(),
		lipgloss.NewStyle().Foreground(lipgloss.Color("#57d36b")),
		lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#ff6b6b")),
	} {
		if got, want := NewPen(st).Paint("abc ✓"), st.Render("abc ✓"); got != want {
			t.Errorf("Pen.Paint = %q, Render = %q", got, want)
		}
	}
}

func TestTruncatePad(t *testing.T) {
	if got := Truncate("abcdef", 4, "…"); got != "abc…" {
		t.Errorf("Truncate = %q", got)
	}
	if got := Truncate("ab", 4, "…"); got != "ab" {
		t.Errorf("Truncate short = %q", got)
	}
	if got := PadRight("✓", 3); got != "✓  " {
		t.Errorf("PadRight = %q", got)
	}
}
