package tui

import (
	"charm.land/bubbles/v2/help"
	"charm.land/lipgloss/v2"

	"github.com/caretaker/caretaker/tui/grid"
	"github.com/caretaker/caretaker/tui/logpane"
)

// styles holds every style of the program. They are built from an explicit
// isDark (from tea.BackgroundColorMsg), so rendering is a pure function of
// the model. Colours are only a second channel: every status also has its
// own glyph, and selection uses reverse video, so NO_COLOR loses nothing.
type styles struct {
	grid  grid.Styles
	pane  logpane.Styles
	help  help.Styles
	state [grid.NumStates]lipgloss.Style // by grid.State

	title    lipgloss.Style
	bold     lipgloss.Style
	dim      lipgloss.Style
	warn     lipgloss.Style
	bad      lipgloss.Style
	good     lipgloss.Style
	barDone  lipgloss.Style
	barRest  lipgloss.Style
	modal    lipgloss.Style
	danger   lipgloss.Style // modal border of a destructive question
	flash    lipgloss.Style
	sep      lipgloss.Style
	selected lipgloss.Style
}

func newStyles(isDark bool) styles {
	ld := lipgloss.LightDark(isDark)
	c := lipgloss.Color
	var (
		green  = ld(c("#1a7f37"), c("#57d36b"))
		yellow = ld(c("#9a6700"), c("#e3b341"))
		red    = ld(c("#cf222e"), c("#ff6b6b"))
		blue   = ld(c("#0969da"), c("#58a6ff"))
		gray   = ld(c("#6e7781"), c("#8b949e"))
		faint  = ld(c("#afb8c1"), c("#484f58"))
		accent = ld(c("#8250df"), c("#bc8cff"))
	)
	ns := lipgloss.NewStyle
	s := styles{}
	s.state[grid.NA] = ns()
	s.state[grid.Pending] = ns().Foreground(faint)
	s.state[grid.Running] = ns().Foreground(blue)
	s.state[grid.OK] = ns().Foreground(green)
	s.state[grid.Changed] = ns().Foreground(yellow)
	s.state[grid.Skipped] = ns().Foreground(gray)
	s.state[grid.Failed] = ns().Foreground(red).Bold(true)

	s.grid = grid.Styles{
		States:       s.state,
		Name:         ns(),
		NameSelected: ns().Reverse(true).Bold(true),
		CellSelected: ns().Reverse(true),
		Group:        ns().Foreground(accent).Bold(true),
		Header:       ns().Foreground(gray),
		HeaderSel:    ns().Bold(true).Underline(true),
	}
	s.pane = logpane.Styles{
		Title:   ns().Foreground(gray).Reverse(true),
		Focused: ns().Foreground(accent).Reverse(true).Bold(true),
		Dim:     ns().Foreground(gray),
	}
	s.pane.Kinds[logpane.Stdout] = ns()
	s.pane.Kinds[logpane.Stderr] = ns().Foreground(red)
	s.pane.Kinds[logpane.Log] = ns().Foreground(blue)
	s.pane.Kinds[logpane.Check] = ns().Foreground(yellow)
	s.pane.Kinds[logpane.StepStart] = ns().Bold(true)
	s.pane.Kinds[logpane.StepOK] = ns().Foreground(green)
	s.pane.Kinds[logpane.StepFail] = ns().Foreground(red).Bold(true)
	s.pane.Kinds[logpane.Info] = ns().Foreground(accent)

	s.help = help.DefaultStyles(isDark)
	s.title = ns().Bold(true).Foreground(accent)
	s.bold = ns().Bold(true)
	s.dim = ns().Foreground(gray)
	s.warn = ns().Foreground(yellow).Bold(true)
	s.bad = ns().Foreground(red).Bold(true)
	s.good = ns().Foreground(green).Bold(true)
	s.barDone = ns().Foreground(green)
	s.barRest = ns().Foreground(faint)
	s.modal = ns().Border(lipgloss.RoundedBorder()).BorderForeground(accent).Padding(0, 1)
	s.danger = ns().Border(lipgloss.DoubleBorder()).BorderForeground(red).Padding(0, 1)
	s.flash = ns().Foreground(accent)
	s.sep = ns().Foreground(faint)
	s.selected = ns().Reverse(true)
	return s
}
