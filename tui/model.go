package tui

import (
	"context"
	"slices"
	"time"

	"charm.land/bubbles/v2/help"
	tea "charm.land/bubbletea/v2"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/grid"
	"github.com/caretaker/caretaker/tui/logpane"
)

// phase is the screen the program is on.
type phase int

const (
	phasePlan phase = iota // the plan, waiting for enter
	phaseRun               // the grid while the run goes
	phaseDone              // RunDone arrived: summary (tab: grid)
)

// modal is the dialog drawn over the screen, if any.
type modal int

const (
	modalNone   modal = iota
	modalPrompt       // a confirm() question (m.prompts[0])
	modalAbort        // "abort the run?"
	modalHelp         // full key help
)

// inputKind is what the footer line editor is for.
type inputKind int

const (
	inputNone inputKind = iota
	inputFilter
	inputSave
)

// model is the root of the program and the only tea.Model. Widgets (grid,
// logpane) render strings; this model owns the layout and the run state.
type model struct {
	ctx   context.Context // from Start; bounds background work such as saving the log
	opts  Options
	src   *pump      // nil in unit tests, which call Update directly
	start func(bool) // tells WaitStart the operator's choice
	now   func() time.Time

	width, height int
	isDark        bool
	st            styles
	keys          keyMap
	help          help.Model

	phase   phase
	plan    runner.RunStarted
	grid    *grid.Grid
	pane    logpane.Pane
	log     logStore
	summary bool // in phaseDone: the summary (true) or the grid (false)

	runStart  time.Time // RunStarted.At, or when the operator pressed enter
	runID     string
	done      *runner.RunDone
	notes     []string
	paused    bool   // the runner reported RunPaused
	wantPause bool   // the operator asked for a pause
	stopping  int    // 0 running, 1 soft stop asked, 2 hard stop asked
	quitEarly bool   // the operator left before RunDone
	savedPath string // where 's' last saved the log

	modal      modal
	prompts    []promptMsg
	focused    chan<- bool // reply of the question last brought into view (focusPrompt)
	input      lineInput
	flash      string
	flashAt    time.Time // flashes fade after flashFor
	planOffset int
	sumOffset  int

	helpKey  string // what the cached short help was built for
	helpLine string

	frame   int  // spinner frame
	ticking bool // a tick is scheduled
}

func newModel(ctx context.Context, opts Options, src *pump, start func(bool)) *model {
	if start == nil {
		start = func(bool) {}
	}
	m := &model{
		ctx:    ctx,
		opts:   opts,
		src:    src,
		start:  start,
		now:    time.Now,
		width:  80,
		height: 24,
		isDark: true,
		keys:   newKeyMap(),
		help:   help.New(),
	}
	m.setPlan(opts.Plan)
	m.setDark(true)
	m.layout()
	if opts.Confirm {
		m.phase = phasePlan
	} else {
		m.phase = phaseRun
	}
	return m
}

// setPlan builds the grid and the log for a plan.
func (m *model) setPlan(p runner.RunStarted) {
	m.plan = p
	m.grid = grid.New(p.Steps, p.Nodes)
	m.grid.SetStyles(m.st.grid)
	m.log = newLogStore(len(p.Nodes))
	m.runID = p.RunID
	m.layout()
	m.syncPane(true)
}

// samePlan reports whether a RunStarted describes the plan already shown.
func samePlan(a, b runner.RunStarted) bool {
	if len(a.Steps) != len(b.Steps) || len(a.Nodes) != len(b.Nodes) {
		return false
	}
	for i := range a.Steps {
		if a.Steps[i].Name != b.Steps[i].Name || a.Steps[i].Once != b.Steps[i].Once ||
			!slices.Equal(a.Steps[i].Nodes, b.Steps[i].Nodes) {
			return false
		}
	}
	for i := range a.Nodes {
		if a.Nodes[i].Name != b.Nodes[i].Name || a.Nodes[i].Role != b.Nodes[i].Role {
			return false
		}
	}
	return true
}

func (m *model) setDark(d bool) {
	m.isDark = d
	m.st = newStyles(d)
	m.grid.SetStyles(m.st.grid)
	m.pane.SetStyles(m.st.pane)
	m.help.Styles = m.st.help
}

func (m *model) title() string {
	if m.opts.Title != "" {
		return m.opts.Title
	}
	if m.plan.Playbook != "" {
		return m.plan.Playbook
	}
	return "run"
}

func (m *model) cluster() string {
	if m.opts.Cluster != "" {
		return m.opts.Cluster
	}
	return m.plan.Cluster
}

func (m *model) check() bool { return m.opts.Check || m.plan.Check }

// Init asks for the background colour (for light or dark styles) and
// starts listening for events.
func (m *model) Init() tea.Cmd {
	cmds := []tea.Cmd{tea.RequestBackgroundColor}
	if m.src != nil {
		cmds = append(cmds, m.src.next())
	}
	if m.phase == phaseRun {
		cmds = append(cmds, m.startRun())
	}
	return tea.Batch(cmds...)
}

// View is the only tea.View of the program.
func (m *model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	v.WindowTitle = "caretaker: " + m.title()
	return v
}

// startRun switches to the grid and starts the clock and spinner.
func (m *model) startRun() tea.Cmd {
	m.phase = phaseRun
	if m.runStart.IsZero() {
		m.runStart = m.now()
	}
	m.start(true)
	m.layout()
	return m.tick()
}

// tickMsg advances the spinner and the clocks.
type tickMsg struct{}

const tickInterval = 100 * time.Millisecond

func (m *model) tick() tea.Cmd {
	if m.ticking {
		return nil
	}
	m.ticking = true
	return tea.Tick(tickInterval, func(time.Time) tea.Msg { return tickMsg{} })
}

// elapsed is the run time so far, or the whole run's after RunDone.
func (m *model) elapsed() time.Duration {
	switch {
	case m.done != nil && m.done.Duration > 0:
		return m.done.Duration
	case m.done != nil && !m.done.At.IsZero() && !m.runStart.IsZero():
		return m.done.At.Sub(m.runStart)
	case m.runStart.IsZero():
		return 0
	}
	return m.now().Sub(m.runStart)
}

// layout sizes the widgets for the window: the grid beside the output on
// wide screens (≥ 120 columns), above it otherwise.
func (m *model) layout() {
	w, h := m.width, m.height
	body := max(h-3, 4) // two header lines, one footer line
	m.help.SetWidth(w)
	if m.grid == nil {
		return
	}
	if w >= 120 {
		gw := min(m.grid.NaturalWidth(), max(w/2, w-90))
		m.grid.SetSize(gw, body)
		m.pane.SetSize(w-gw-1, body)
		m.syncPane(false)
		return
	}
	need := 1 + m.grid.Shown() + 3 // header, rows, group headings
	gh := min(max(need, 4), max(body-6, 4), body*3/5+1)
	gh = max(gh, min(body/2, need))
	m.grid.SetSize(w, gh)
	m.pane.SetSize(w, max(body-gh, 2))
	m.syncPane(false)
}

// syncPane shows the selected node's output; reset starts it from the tail.
func (m *model) syncPane(reset bool) {
	row, step := m.grid.Selected()
	lines := m.log.lines(row)
	if reset {
		m.pane.Reset(lines)
	} else {
		m.pane.SetLines(lines)
	}
	m.pane.SetTitle(m.paneTitle(row))
	m.pane.SetHeader(m.cellText(row, step))
}

// flashFor is how long a message stays in the footer.
const flashFor = 6 * time.Second

// setFlash shows a message in the footer for flashFor.
func (m *model) setFlash(s string) { m.flash, m.flashAt = s, m.now() }
