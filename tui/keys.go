package tui

import (
	"charm.land/bubbles/v2/key"
)

// keyMap holds every key binding; the help lines are built from it.
type keyMap struct {
	Up, Down, Left, Right key.Binding
	PageUp, PageDown      key.Binding
	Top, Bottom           key.Binding
	Focus, Back           key.Binding
	Filter, NextFailed    key.Binding
	Pause, Save, Help     key.Binding
	Quit, Interrupt       key.Binding
	Start, Summary        key.Binding
	Yes, No, Default      key.Binding
}

func newKeyMap() keyMap {
	b := func(help, desc string, keys ...string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
	}
	return keyMap{
		Up:         b("↑/k", "up", "up", "k"),
		Down:       b("↓/j", "down", "down", "j"),
		Left:       b("←/h", "prev step", "left", "h"),
		Right:      b("→/l", "next step", "right", "l"),
		PageUp:     b("pgup", "page up", "pgup", "ctrl+b"),
		PageDown:   b("pgdn", "page down", "pgdown", "ctrl+f", "space"),
		Top:        b("g", "top", "g", "home"),
		Bottom:     b("G", "bottom/follow", "G", "end"),
		Focus:      b("enter/tab", "output", "enter", "tab"),
		Back:       b("esc/tab", "grid", "esc", "tab", "shift+tab"),
		Filter:     b("/", "filter", "/"),
		NextFailed: b("f", "next failed", "f"),
		Pause:      b("p", "pause/resume", "p"),
		Save:       b("s", "save log", "s"),
		Help:       b("?", "help", "?"),
		Quit:       b("q", "abort", "q"),
		Interrupt:  b("ctrl+c", "abort (twice: now)", "ctrl+c"),
		Start:      b("enter", "start", "enter"),
		Summary:    b("tab", "grid/summary", "tab"),
		Yes:        b("y", "yes", "y", "Y"),
		No:         b("n/esc", "no", "n", "N", "esc"),
		Default:    b("enter", "default", "enter"),
	}
}

// helpKeys adapts a set of bindings to help.KeyMap.
type helpKeys struct {
	short []key.Binding
	full  [][]key.Binding
}

func (h helpKeys) ShortHelp() []key.Binding  { return h.short }
func (h helpKeys) FullHelp() [][]key.Binding { return h.full }

// helpFor returns the bindings that apply in the current state.
func (m *model) helpFor() helpKeys {
	k := m.keys
	quit := k.Quit
	move := key.NewBinding(key.WithKeys("up", "down", "j", "k"), key.WithHelp("↑↓/jk", "move"))
	failed := key.NewBinding(key.WithKeys("f"), key.WithHelp("f", "failed"))
	pause := key.NewBinding(key.WithKeys("p"), key.WithHelp("p", "pause"))
	switch m.phase {
	case phasePlan:
		quit.SetHelp("q", "quit")
		return helpKeys{
			short: []key.Binding{k.Start, quit, key.NewBinding(key.WithKeys("up", "down", "j", "k"), key.WithHelp("↑↓/jk", "scroll"))},
			full:  [][]key.Binding{{k.Start, quit}, {k.Down, k.Up}},
		}
	case phaseDone:
		quit.SetHelp("q", "quit")
		if m.summary {
			return helpKeys{
				short: []key.Binding{k.Summary, key.NewBinding(key.WithKeys("up", "down", "j", "k"), key.WithHelp("↑↓/jk", "scroll")), failed, k.Save, quit},
				full:  [][]key.Binding{{k.Summary, k.Save, quit}, {k.Down, k.Up}},
			}
		}
	}
	if m.pane.Focused() {
		return helpKeys{
			short: []key.Binding{k.Back, key.NewBinding(key.WithKeys("up", "down", "j", "k"), key.WithHelp("↑↓/jk", "scroll")), k.PageDown, k.Bottom, k.Help},
			full: [][]key.Binding{
				{k.Down, k.Up, k.PageDown, k.PageUp},
				{k.Top, k.Bottom, k.Back},
				{k.Save, k.Pause, k.Help, quit},
			},
		}
	}
	short := []key.Binding{move, k.Focus, k.Filter, failed, pause, quit, k.Help, k.Save}
	full := [][]key.Binding{
		{k.Down, k.Up, k.Left, k.Right, k.PageDown, k.PageUp},
		{k.Focus, k.Filter, k.NextFailed, k.Save},
		{k.Pause, quit, k.Interrupt, k.Help},
	}
	if m.phase == phaseDone {
		short = []key.Binding{k.Summary, move, k.Focus, k.Filter, failed, quit, k.Help, k.Save}
		full[2] = []key.Binding{k.Summary, quit, k.Help}
	}
	return helpKeys{short: short, full: full}
}
