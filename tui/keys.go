package tui

import (
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
)

// keyMap holds every key binding; the help lines are built from it. The
// key handlers of each screen follow it.
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

// onKey routes a key: line editor, then modal, then the screen.
func (m *model) onKey(k tea.KeyPressMsg) tea.Cmd {
	m.setFlash("")
	if m.input.kind != inputNone {
		return m.inputKey(k)
	}
	switch m.modal {
	case modalHelp:
		if key.Matches(k, m.keys.Interrupt) {
			m.modal = modalNone
			return m.onKey(k)
		}
		m.modal = modalNone
		return nil
	case modalAbort:
		switch {
		case key.Matches(k, m.keys.Interrupt):
			return m.stop(true)
		case key.Matches(k, m.keys.Yes):
			return m.stop(false)
		case key.Matches(k, m.keys.No), key.Matches(k, m.keys.Default), key.Matches(k, m.keys.Quit):
			m.modal = modalNone
			if len(m.prompts) > 0 {
				m.modal = modalPrompt
			}
		}
		return nil
	case modalPrompt:
		q := m.prompts[0].q
		switch {
		case key.Matches(k, m.keys.Interrupt):
			m.modal = modalAbort
		case key.Matches(k, m.keys.Yes):
			m.answerPrompt(true)
		case key.Matches(k, m.keys.No):
			m.answerPrompt(false)
		case key.Matches(k, m.keys.Default):
			m.answerPrompt(promptDefault(q))
		}
		return nil
	}
	switch m.phase {
	case phasePlan:
		return m.planKey(k)
	case phaseDone:
		if key.Matches(k, m.keys.Quit, m.keys.Interrupt) {
			return tea.Quit
		}
		if key.Matches(k, m.keys.Summary) && (m.summary || !m.pane.Focused()) {
			m.summary = !m.summary
			m.pane.SetFocused(false)
			return nil
		}
		if m.summary && key.Matches(k, m.keys.NextFailed) {
			m.summary = false // f: the failed cell, on the grid
		} else if m.summary {
			return m.summaryKey(k)
		}
	}
	return m.gridKey(k)
}

func (m *model) planKey(k tea.KeyPressMsg) tea.Cmd {
	switch {
	case key.Matches(k, m.keys.Start):
		return m.startRun()
	case key.Matches(k, m.keys.Quit, m.keys.Interrupt):
		m.start(false)
		return tea.Quit
	case key.Matches(k, m.keys.Down):
		m.planOffset++
	case key.Matches(k, m.keys.Up):
		m.planOffset = max(m.planOffset-1, 0)
	}
	return nil
}

func (m *model) summaryKey(k tea.KeyPressMsg) tea.Cmd {
	switch {
	case key.Matches(k, m.keys.Down):
		m.sumOffset++
	case key.Matches(k, m.keys.Up):
		m.sumOffset = max(m.sumOffset-1, 0)
	case key.Matches(k, m.keys.Save):
		m.input = lineInput{kind: inputSave, prompt: "save log to: ", value: m.defaultLogPath()}
	case key.Matches(k, m.keys.Help):
		m.modal = modalHelp
	}
	return nil
}

// gridKey handles the run screen (and the grid after the run).
func (m *model) gridKey(k tea.KeyPressMsg) tea.Cmd {
	km := m.keys
	switch {
	case key.Matches(k, km.Interrupt):
		switch {
		case m.phase == phaseDone:
			return tea.Quit
		case m.stopping == 2:
			m.quitEarly = true
			return tea.Quit
		case m.stopping == 1:
			return m.stop(true)
		}
		m.modal = modalAbort
		return nil
	case key.Matches(k, km.Quit):
		switch m.stopping {
		case 2:
			m.quitEarly = true
			return tea.Quit
		case 1:
			m.setFlash("stopping: waiting for running commands (ctrl+c: cancel them)")
			return nil
		}
		m.modal = modalAbort
		return nil
	case key.Matches(k, km.Help):
		m.modal = modalHelp
		return nil
	case key.Matches(k, km.Save):
		m.input = lineInput{kind: inputSave, prompt: "save log to: ", value: m.defaultLogPath()}
		return nil
	case key.Matches(k, km.Pause):
		return m.togglePause()
	}
	if m.pane.Focused() {
		switch {
		case key.Matches(k, km.Back):
			m.pane.SetFocused(false)
		case key.Matches(k, km.Down):
			m.pane.ScrollBy(1)
		case key.Matches(k, km.Up):
			m.pane.ScrollBy(-1)
		case key.Matches(k, km.PageDown):
			m.pane.PageDown()
		case key.Matches(k, km.PageUp):
			m.pane.PageUp()
		case key.Matches(k, km.Top):
			m.pane.Top()
		case key.Matches(k, km.Bottom):
			m.pane.Bottom()
		}
		return nil
	}
	row, step := m.grid.Selected()
	switch {
	case key.Matches(k, km.Focus):
		m.pane.SetFocused(true)
	case key.Matches(k, km.Down):
		m.grid.Move(1)
	case key.Matches(k, km.Up):
		m.grid.Move(-1)
	case key.Matches(k, km.PageDown):
		m.grid.Move(m.grid.Height() - 2)
	case key.Matches(k, km.PageUp):
		m.grid.Move(-(m.grid.Height() - 2))
	case key.Matches(k, km.Top):
		m.grid.Move(-m.grid.Shown())
	case key.Matches(k, km.Bottom):
		m.grid.Move(m.grid.Shown())
	case key.Matches(k, km.Left):
		m.grid.MoveCol(-1)
	case key.Matches(k, km.Right):
		m.grid.MoveCol(1)
	case key.Matches(k, km.NextFailed):
		if !m.grid.NextFailed() {
			m.setFlash("no failed cell")
		}
	case key.Matches(k, km.Filter):
		m.input = lineInput{kind: inputFilter, prompt: "/", value: m.grid.Filter(), old: m.grid.Filter()}
	case key.Matches(k, km.Back):
		if m.grid.Filter() != "" {
			m.grid.SetFilter("")
			m.layout()
		}
	}
	if r, _ := m.grid.Selected(); r != row {
		m.syncPane(true)
	} else if _, s := m.grid.Selected(); s != step {
		m.syncPane(false)
	}
	return nil
}

func (m *model) togglePause() tea.Cmd {
	if m.opts.Controller == nil || m.phase != phaseRun || m.stopping > 0 {
		m.setFlash("pause is not available now")
		return nil
	}
	m.wantPause = !m.wantPause
	if m.wantPause {
		m.opts.Controller.Pause()
		m.setFlash("pausing before the next step (running commands finish); p to resume")
	} else {
		m.opts.Controller.Resume()
		m.setFlash("resuming")
	}
	return nil
}

// lineInput is the one-line editor of the footer (filter, save path).
type lineInput struct {
	kind   inputKind
	prompt string
	value  string
	old    string // filter before editing, restored by esc
}

func (m *model) inputKey(k tea.KeyPressMsg) tea.Cmd {
	in := &m.input
	switch k.String() {
	case "enter":
		kind, v := in.kind, strings.TrimSpace(in.value)
		m.input = lineInput{}
		if kind == inputSave && v != "" {
			m.setFlash("saving log to " + v + " …")
			return m.saveLog(v)
		}
		return nil
	case "esc":
		if in.kind == inputFilter {
			m.grid.SetFilter(in.old)
			m.layout()
			m.syncPane(true)
		}
		m.input = lineInput{}
		return nil
	case "ctrl+c":
		m.input = lineInput{}
		return nil
	case "backspace", "ctrl+h":
		if r := []rune(in.value); len(r) > 0 {
			in.value = string(r[:len(r)-1])
		}
	case "ctrl+u":
		in.value = ""
	case "ctrl+w":
		v := strings.TrimRight(in.value, " ")
		if i := strings.LastIndexAny(v, " /"); i >= 0 {
			in.value = v[:i+1]
		} else {
			in.value = ""
		}
	default:
		if k.Text == "" {
			return nil
		}
		in.value += k.Text
	}
	m.inputChanged()
	return nil
}

// inputChanged applies a filter as it is typed.
func (m *model) inputChanged() {
	if m.input.kind == inputFilter {
		m.grid.SetFilter(m.input.value)
		m.layout()
		m.syncPane(true)
	}
}
