package tui

import (
	"strings"
	"time"

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
	m.focusPrompt()
	m.syncPane(false)
	return tea.Batch(cmds...)
}

// focusPrompt selects the node and step of the question on screen, once per
// question, so that the output pane shows the node being asked about rather
// than whatever was selected before (often the node that just finished). A
// filter that hides the node is cleared: the operator must see what they are
// answering for. A question with no node (a once step's, say) moves nothing.
func (m *model) focusPrompt() {
	if m.modal != modalPrompt || len(m.prompts) == 0 {
		return
	}
	p := m.prompts[0]
	if p.reply == m.focused {
		return
	}
	m.focused = p.reply
	if p.q.Node == "" {
		return
	}
	row := m.grid.NodeIndex(p.q.Node)
	if !m.grid.Select(row, p.q.Step) {
		m.grid.SetFilter("")
		m.layout()
		m.grid.Select(row, p.q.Step)
	}
	m.syncPane(true)
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
	m.focusPrompt() // the next question, if any
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

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
