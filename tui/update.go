package tui

import (
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/grid"
	"github.com/caretaker/caretaker/tui/logpane"
)

// Update handles window, colour, key and run messages.
func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layout()
		return m, nil
	case tea.BackgroundColorMsg:
		m.setDark(msg.IsDark())
		return m, nil
	case batchMsg:
		cmd := m.applyBatch(msg)
		if m.src != nil {
			m.src.recycle(msg)
			cmd = tea.Batch(cmd, m.src.next())
		}
		return m, cmd
	case tickMsg:
		m.ticking = false
		if m.phase != phaseRun {
			return m, nil
		}
		m.frame++
		m.syncPane(false) // the selected cell's running time
		return m, m.tick()
	case savedMsg:
		if msg.err != nil {
			m.flash, m.flashAt = "✗ "+msg.err.Error(), time.Time{} // errors stay
		} else {
			m.setFlash("log saved to " + msg.path + " (" + itoa(msg.lines) + " lines)")
			m.savedPath = msg.path
		}
		return m, nil
	case tea.PasteMsg:
		if m.input.kind != inputNone {
			m.input.value += strings.ReplaceAll(logpane.Clean(msg.Content), "\n", "")
			m.inputChanged()
		}
		return m, nil
	case tea.KeyPressMsg:
		return m, m.onKey(msg)
	default:
		// Single messages (not batched) are accepted too: tests and p.Send.
		if _, ok := msg.(runner.Event); ok {
			return m, m.applyBatch(batchMsg{msg})
		}
		if _, ok := msg.(promptMsg); ok {
			return m, m.applyBatch(batchMsg{msg})
		}
		if _, ok := msg.(promptCancelMsg); ok {
			return m, m.applyBatch(batchMsg{msg})
		}
	}
	return m, nil
}

// applyBatch applies queued events in order, then refreshes the views once.
func (m *model) applyBatch(b batchMsg) tea.Cmd {
	var cmds []tea.Cmd
	for _, msg := range b {
		switch e := msg.(type) {
		case promptMsg:
			m.prompts = append(m.prompts, e)
			if m.stopping > 0 {
				m.answerPrompt(false)
			}
		case promptCancelMsg:
			for i, p := range m.prompts {
				if p.q.ID == e.id && p.reply == e.reply {
					m.prompts = append(m.prompts[:i], m.prompts[i+1:]...)
					break
				}
			}
		case runner.Event:
			if c := m.applyEvent(e); c != nil {
				cmds = append(cmds, c)
			}
		}
	}
	if len(m.prompts) > 0 && m.modal == modalNone {
		m.modal = modalPrompt
	}
	if len(m.prompts) == 0 && m.modal == modalPrompt {
		m.modal = modalNone
	}
	m.grid.Refresh()
	m.syncPane(false)
	return tea.Batch(cmds...)
}

// applyEvent folds one runner event into the state.
func (m *model) applyEvent(ev runner.Event) tea.Cmd {
	switch e := ev.(type) {
	case runner.RunStarted:
		if !samePlan(m.plan, e) {
			m.setPlan(e)
		}
		m.plan = e
		m.runID = e.RunID
		if !e.At.IsZero() {
			m.runStart = e.At
		}
		if m.phase == phasePlan {
			return m.startRun()
		}
	case runner.StepStarted:
		m.grid.Start(e)
		row := m.grid.NodeIndex(e.Node)
		m.log.add(row, e.Step, e.At, logpane.Line{Kind: logpane.StepStart, Text: m.stepLabel(e.Step, e.StepName)})
	case runner.OutputLine:
		row := m.grid.NodeIndex(e.Node)
		m.log.add(row, e.Step, e.At, logpane.Line{Kind: streamKind(e.Stream), Text: logpane.Clean(e.Text)})
	case runner.StepDone:
		m.grid.Done(e)
		m.logStepDone(e)
	case runner.Prompt:
		m.log.add(m.rowOf(e.Node), e.Step, e.At, logpane.Line{Kind: logpane.Info, Text: "? " + logpane.Clean(e.Question)})
	case runner.PromptAnswered:
		m.log.add(-1, -1, e.At, logpane.Line{Kind: logpane.Info, Text: "answered " + yesNo(e.Answer) + " by " + e.By})
	case runner.RunPaused:
		m.paused = true
		m.log.add(-1, -1, e.At, logpane.Line{Kind: logpane.Info, Text: "paused"})
	case runner.RunResumed:
		m.paused = false
		m.log.add(-1, -1, e.At, logpane.Line{Kind: logpane.Info, Text: "resumed"})
	case runner.Note:
		text := logpane.Clean(e.Text)
		m.notes = append(m.notes, text)
		m.log.add(m.rowOf(e.Node), -1, e.At, logpane.Line{Kind: logpane.Info, Text: "note: " + text})
		m.setFlash("note: " + text)
	case runner.RunDone:
		d := e
		m.done = &d
		if e.RunID != "" {
			m.runID = e.RunID
		}
		m.setFlash("")
		m.phase = phaseDone
		m.summary = true
		m.modal = modalNone
		m.stopping = 0
		for len(m.prompts) > 0 {
			m.answerPrompt(false)
		}
		m.log.add(-1, -1, e.At, logpane.Line{Kind: logpane.Info, Text: "run " + e.Status})
		m.layout()
	}
	return nil
}

func (m *model) rowOf(node string) int {
	if node == "" {
		return -1
	}
	return m.grid.NodeIndex(node)
}

func (m *model) stepLabel(step int, name string) string {
	steps := m.grid.Steps()
	if name == "" && step >= 0 && step < len(steps) {
		name = steps[step].Name
	}
	s := "▸ step " + itoa(step+1) + "/" + itoa(len(steps)) + " " + name
	if step >= 0 && step < len(steps) && steps[step].Once {
		s += " (once)"
	}
	return s
}

func (m *model) logStepDone(e runner.StepDone) {
	row := m.grid.NodeIndex(e.Node)
	took := " in " + formatDuration(e.Duration)
	switch grid.StateOf(e.Status) {
	case grid.OK:
		m.log.add(row, e.Step, e.At, logpane.Line{Kind: logpane.StepOK, Text: "✓ ok" + took})
	case grid.Changed:
		m.log.add(row, e.Step, e.At, logpane.Line{Kind: logpane.StepOK, Text: "● changed" + took})
	case grid.Skipped:
		text := "- skipped"
		if e.Reason != "" {
			text += ": " + logpane.Clean(e.Reason)
		}
		m.log.add(row, e.Step, e.At, logpane.Line{Kind: logpane.StepOK, Text: text})
	default:
		text := "✗ failed after " + formatDuration(e.Duration)
		if e.Error != "" {
			text += ": " + logpane.Clean(firstLine(e.Error))
		}
		m.log.add(row, e.Step, e.At, logpane.Line{Kind: logpane.StepFail, Text: text})
		if d := strings.TrimRight(e.Detail, "\n"); d != "" {
			for _, l := range strings.Split(d, "\n") {
				m.log.add(row, e.Step, e.At, logpane.Line{Kind: logpane.Stderr, Text: logpane.Clean(l)})
			}
		}
	}
}

func streamKind(s string) logpane.Kind {
	switch s {
	case runner.StreamStderr:
		return logpane.Stderr
	case runner.StreamLog:
		return logpane.Log
	case runner.StreamCheck:
		return logpane.Check
	}
	return logpane.Stdout
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

// promptDefault is the answer of a bare enter: No for destructive questions.
func promptDefault(q runner.Prompt) bool { return q.Default && !q.Destructive }

// answerPrompt answers the oldest open question.
func (m *model) answerPrompt(v bool) {
	if len(m.prompts) == 0 {
		return
	}
	p := m.prompts[0]
	m.prompts = m.prompts[1:]
	p.reply <- v // buffered, never blocks
	m.log.add(m.rowOf(p.q.Node), p.q.Step, m.now(), logpane.Line{Kind: logpane.Info, Text: "answered " + yesNo(v) + ": " + logpane.Clean(p.q.Question)})
	if len(m.prompts) == 0 && m.modal == modalPrompt {
		m.modal = modalNone
	}
}

// stop asks the runner to stop: soft lets running commands finish, hard
// cancels them. With no controller the program just ends.
func (m *model) stop(hard bool) tea.Cmd {
	m.modal = modalNone
	for len(m.prompts) > 0 {
		m.answerPrompt(false)
	}
	if m.opts.Controller == nil {
		m.quitEarly = true
		return tea.Quit
	}
	if hard {
		m.stopping = 2
		m.opts.Controller.Stop(true)
		m.setFlash("aborting: running commands are cancelled (q to leave now)")
		return nil
	}
	m.stopping = 1
	m.opts.Controller.Stop(false)
	m.setFlash("stopping: running commands finish, nothing new starts (ctrl+c: cancel them)")
	return nil
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

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
