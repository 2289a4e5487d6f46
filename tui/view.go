package tui

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/grid"
	"github.com/caretaker/caretaker/tui/internal/paint"
	"github.com/caretaker/caretaker/tui/logpane"
)

// render draws the whole screen: exactly height lines of at most width
// columns, with the modal (if any) composited on top.
func (m *model) render() string {
	var base string
	switch {
	case m.phase == phasePlan:
		base = m.renderPlan()
	case m.phase == phaseDone && m.summary:
		base = m.renderSummary()
	default:
		base = m.renderRun()
	}
	base = fit(base, m.width, m.height)
	if m.modal == modalNone {
		return base
	}
	box := m.renderModal()
	x := max((m.width-lipgloss.Width(box))/2, 0)
	y := max((m.height-lipgloss.Height(box))/2, 0)
	c := lipgloss.NewCompositor(lipgloss.NewLayer(base), lipgloss.NewLayer(box).X(x).Y(y).Z(1))
	return fit(c.Render(), m.width, m.height)
}

// fit cuts or pads s to exactly h lines of at most w columns.
func fit(s string, w, h int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		lines[i] = paint.Truncate(l, w, "")
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}

// padRight pads a styled line with spaces to w columns.
func padRight(s string, w int) string { return paint.PadRight(s, w) }

// titleBar is the first line: program, playbook, cluster, mode, run state.
func (m *model) titleBar() string {
	mode := m.st.warn.Render("REAL RUN")
	if m.check() {
		mode = m.st.good.Render("CHECK")
	}
	left := m.st.title.Render("caretaker") + " " + m.st.bold.Render(m.title())
	if c := m.cluster(); c != "" {
		left += m.st.dim.Render(" · cluster ") + c
	}
	left += m.st.dim.Render(" · ") + mode
	if m.phase != phasePlan {
		left += m.st.dim.Render(" · ") + formatDuration(m.elapsed())
	}
	right := m.runState()
	gap := m.width - ansi.StringWidth(left) - ansi.StringWidth(right)
	if gap < 1 {
		return ansi.Truncate(left, m.width, "…")
	}
	return left + strings.Repeat(" ", gap) + right
}

// runState names what the run is doing, for the top right corner.
func (m *model) runState() string {
	switch {
	case m.phase == phasePlan:
		return m.st.dim.Render("plan")
	case m.done != nil:
		return m.statusWord(m.done.Status)
	case m.stopping == 2:
		return m.st.bad.Render("aborting…")
	case m.stopping == 1:
		return m.st.warn.Render("stopping…")
	case m.paused && m.wantPause:
		return m.st.warn.Render("paused")
	case m.paused:
		return m.st.warn.Render("resuming…")
	case m.wantPause:
		return m.st.warn.Render("pausing…")
	}
	return m.st.state[grid.Running].Render("running")
}

func (m *model) statusWord(s string) string {
	switch s {
	case "ok":
		return m.st.good.Render(s)
	case "failed":
		return m.st.bad.Render(s)
	}
	return m.st.warn.Render(s)
}

// countsBar is the second line: cells per status and a progress bar.
func (m *model) countsBar() string {
	var parts []string
	wide := m.width >= 120
	for _, s := range []grid.State{grid.OK, grid.Changed, grid.Skipped, grid.Failed, grid.Running, grid.Pending} {
		n := m.grid.Count(s)
		txt := s.Glyph() + strconv.Itoa(n)
		if wide {
			txt = s.Glyph() + " " + strconv.Itoa(n) + " " + string(s.Status())
		}
		st := m.st.state[s]
		if n == 0 {
			st = m.st.dim
		}
		parts = append(parts, st.Render(txt))
	}
	left := strings.Join(parts, " ")
	done, total := m.grid.Progress()
	pct := 0
	if total > 0 {
		pct = done * 100 / total
	}
	tail := " " + strconv.Itoa(pct) + "% " + strconv.Itoa(done) + "/" + strconv.Itoa(total)
	barW := m.width - ansi.StringWidth(left) - len(tail) - 2
	if barW < 5 {
		return left
	}
	fill := 0
	if total > 0 {
		fill = barW * done / total
	}
	bar := m.st.barDone.Render(strings.Repeat("█", fill)) + m.st.barRest.Render(strings.Repeat("░", barW-fill))
	return left + "  " + bar + tail
}

// footer is the line editor, a message, or the short help.
func (m *model) footer() string {
	switch {
	case m.input.kind != inputNone:
		return m.st.bold.Render(m.input.prompt) + m.input.value + "█"
	case m.flash != "" && (m.flashAt.IsZero() || m.now().Sub(m.flashAt) < flashFor):
		return m.st.flash.Render(ansi.Truncate(m.flash, m.width, "…"))
	}
	key := fmt.Sprint(m.phase, m.summary, m.pane.Focused(), m.width, m.isDark)
	if key != m.helpKey {
		m.helpKey, m.helpLine = key, m.help.ShortHelpView(m.helpFor().short)
	}
	return m.helpLine
}

// renderRun is the grid screen: header, grid and output, footer.
func (m *model) renderRun() string {
	bodyH := max(m.height-3, 4)
	g := m.grid.View(m.now(), m.frame)
	p := m.pane.View()
	var body string
	if m.width >= 120 {
		gl := strings.Split(fit(g, m.grid.Width(), bodyH), "\n")
		pl := strings.Split(fit(p, m.pane.Width(), bodyH), "\n")
		sep := m.st.sep.Render("│")
		var b strings.Builder
		for i := range bodyH {
			if i > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(padRight(gl[i], m.grid.Width()))
			b.WriteString(sep)
			b.WriteString(pl[i])
		}
		body = b.String()
	} else {
		body = fit(g, m.width, m.grid.Height()) + "\n" + fit(p, m.width, bodyH-m.grid.Height())
	}
	return m.titleBar() + "\n" + m.countsBar() + "\n" + body + "\n" + m.footer()
}

// paneTitle names the selected node for the output pane's title.
func (m *model) paneTitle(row int) string {
	nodes := m.grid.Nodes()
	if row < 0 || row >= len(nodes) {
		if m.grid.Filter() != "" {
			return "no node matches /" + m.grid.Filter()
		}
		return "no nodes"
	}
	n := nodes[row]
	t := n.Name
	if n.Role != "" || n.Address != "" {
		t += " (" + strings.Trim(n.Role+" "+n.Address, " ") + ")"
	}
	return t
}

// cellText describes the selected cell, shown under the pane's title, and
// the line kind that styles it.
func (m *model) cellText(row, step int) (string, logpane.Kind) {
	nodes, steps := m.grid.Nodes(), m.grid.Steps()
	if row < 0 || row >= len(nodes) || step < 0 || step >= len(steps) {
		return "", logpane.Info
	}
	t := strconv.Itoa(step+1) + "/" + strconv.Itoa(len(steps)) + " " + steps[step].Name + " · "
	c, _ := m.grid.Cell(row, step)
	kind := logpane.StepStart
	switch c.State {
	case grid.NA:
		t += "does not run on this node"
	case grid.Pending:
		t += "pending"
	case grid.Running:
		t += "running for " + formatDuration(m.now().Sub(c.Started))
	case grid.Skipped:
		t += "skipped"
		if c.Reason != "" {
			t += ": " + c.Reason
		}
	case grid.Failed:
		kind = logpane.StepFail
		t += "failed after " + formatDuration(c.Duration)
		if c.Error != "" {
			t += ": " + c.Error
		}
	default:
		kind = logpane.StepOK
		t += string(c.State.Status()) + " in " + formatDuration(c.Duration)
	}
	return t, kind
}

// renderPlan is the screen before the run.
func (m *model) renderPlan() string {
	steps, nodes := m.grid.Steps(), m.grid.Nodes()
	roles := map[string]int{}
	for _, n := range nodes {
		roles[n.Role]++
	}
	mut := 0
	for _, s := range steps {
		if s.Mutates {
			mut++
		}
	}
	who := strconv.Itoa(roles["server"]) + " servers, " + strconv.Itoa(roles["agent"]) + " agents"
	if other := len(nodes) - roles["server"] - roles["agent"]; other > 0 {
		who += ", " + strconv.Itoa(other) + " other"
	}
	sum := "plan: " + strconv.Itoa(len(steps)) + " steps × " + strconv.Itoa(len(nodes)) + " nodes (" + who + ") · " +
		strconv.Itoa(mut) + " change nodes"
	lines := []string{m.titleBar(), m.st.dim.Render(ansi.Truncate(sum, m.width, "…")), m.nodeList(nodes)}
	if len(m.plan.Params) > 0 {
		keys := slices.Sorted(maps.Keys(m.plan.Params))
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+m.plan.Params[k])
		}
		lines = append(lines, ansi.Truncate(m.st.bold.Render("params")+" "+logpane.Clean(strings.Join(kv, " ")), m.width, "…"))
	}
	lines = append(lines, "")

	nameW := 4
	for _, s := range steps {
		nameW = max(nameW, ansi.StringWidth(s.Name))
	}
	nameW = min(nameW, 28)
	head := "  #  " + padRight("step", nameW) + "  nodes  at a time  changes"
	lines = append(lines, m.st.bold.Render(ansi.Truncate(head, m.width, "")))
	var rows []string
	for i, s := range steps {
		serial := "all"
		switch {
		case s.Once:
			serial = "once"
		case s.Serial > 0:
			serial = strconv.Itoa(s.Serial)
		}
		n := len(s.Nodes)
		if s.Once {
			n = 1
		}
		row := padLeft(strconv.Itoa(i+1), 3) + "  " + padRight(ansi.Truncate(s.Name, nameW, "…"), nameW) + "  " +
			padLeft(strconv.Itoa(n), 5) + "  " + padRight(serial, 9) + "  "
		if s.Mutates {
			row += m.st.warn.Render("yes")
		} else {
			row += m.st.dim.Render("no ")
		}
		if s.Doc != "" {
			row += "  " + m.st.dim.Render(firstLine(s.Doc))
		}
		rows = append(rows, ansi.Truncate(row, m.width, "…"))
	}
	avail := max(m.height-len(lines)-3, 1)
	m.planOffset = min(m.planOffset, max(len(rows)-avail, 0))
	lines = append(lines, rows[m.planOffset:min(m.planOffset+avail, len(rows))]...)
	for len(lines) < m.height-2 {
		lines = append(lines, "")
	}
	note := "steps marked yes change the nodes; they record how to undo before they act"
	if m.check() {
		note = "check mode: steps only report what they would change"
	}
	lines = append(lines, m.st.dim.Render(ansi.Truncate(note, m.width, "…")), m.footer())
	return strings.Join(lines, "\n")
}

// nodeList names the nodes by role on one line, cut to the width.
func (m *model) nodeList(nodes []runner.NodeInfo) string {
	var parts []string
	for _, role := range []string{"server", "agent"} {
		var names []string
		for _, n := range nodes {
			if n.Role == role {
				names = append(names, n.Name)
			}
		}
		if len(names) > 0 {
			parts = append(parts, m.st.bold.Render(role+"s")+" "+strings.Join(names, " "))
		}
	}
	return ansi.Truncate(strings.Join(parts, m.st.dim.Render(" · ")), m.width, "…")
}

func padLeft(s string, w int) string {
	if n := ansi.StringWidth(s); n < w {
		return strings.Repeat(" ", w-n) + s
	}
	return s
}

// renderSummary is the screen after RunDone.
func (m *model) renderSummary() string {
	lines := []string{m.titleBar(), ""}
	var body []sumLine
	for _, l := range m.summaryLines(true) {
		body = append(body, wrapLine(l, m.width)...)
	}
	avail := max(m.height-3, 1)
	m.sumOffset = min(m.sumOffset, max(len(body)-avail, 0))
	for _, l := range body[m.sumOffset:min(m.sumOffset+avail, len(body))] {
		lines = append(lines, m.styleSummary(l))
	}
	for len(lines) < m.height-1 {
		lines = append(lines, "")
	}
	return strings.Join(append(lines, m.footer()), "\n")
}

// wrapLine wraps a summary line to w columns, continuation lines indented.
func wrapLine(l sumLine, w int) []sumLine {
	if ansi.StringWidth(l.text) <= w || w < 20 {
		return []sumLine{l}
	}
	indent := len(l.text) - len(strings.TrimLeft(l.text, " ")) + 4
	parts := strings.Split(ansi.Wrap(l.text, w, ""), "\n")
	out := []sumLine{{l.kind, parts[0]}}
	rest := strings.Join(parts[1:], " ")
	for _, p := range strings.Split(ansi.Wrap(rest, w-indent, ""), "\n") {
		out = append(out, sumLine{l.kind, strings.Repeat(" ", indent) + p})
	}
	return out
}

func (m *model) styleSummary(l sumLine) string {
	switch l.kind {
	case sumHeading:
		return m.st.bold.Render(l.text)
	case sumStatus:
		return m.statusLine(l.text)
	case sumFail:
		return m.st.bad.Render(l.text)
	case sumNext:
		return m.st.flash.Render(l.text)
	}
	return l.text
}

func (m *model) statusLine(s string) string {
	if m.done == nil {
		return m.st.warn.Render(s)
	}
	switch m.done.Status {
	case "ok":
		return m.st.good.Render(s)
	case "failed":
		return m.st.bad.Render(s)
	}
	return m.st.warn.Render(s)
}

// renderModal draws the dialog box of the open modal.
func (m *model) renderModal() string {
	inner := min(max(m.width-8, 20), 64)
	wrap := func(s string) string { return ansi.Wordwrap(s, inner, "") }
	var parts []string
	box := m.st.modal
	switch m.modal {
	case modalPrompt:
		q := m.prompts[0].q
		title := "Confirm"
		if q.Destructive {
			title = "Confirm — this is destructive"
			box = m.st.danger
		}
		parts = append(parts, m.st.bold.Render(title))
		where := q.Node
		steps := m.grid.Steps()
		if q.Step >= 0 && q.Step < len(steps) {
			where += " · step " + strconv.Itoa(q.Step+1) + " " + steps[q.Step].Name
		}
		if where != "" {
			parts = append(parts, m.st.dim.Render(wrap(where)))
		}
		parts = append(parts, "", wrap(logpane.Clean(q.Question)), "")
		def := "No"
		if promptDefault(q) {
			def = "Yes"
		}
		parts = append(parts, m.st.bold.Render("y")+" yes   "+m.st.bold.Render("n")+" no   "+m.st.bold.Render("enter")+" "+def)
		if n := len(m.prompts) - 1; n > 0 {
			parts = append(parts, m.st.dim.Render(strconv.Itoa(n)+" more waiting"))
		}
	case modalAbort:
		box = m.st.danger
		parts = append(parts, m.st.bold.Render("Abort the run?"), "",
			wrap("Running commands finish and nothing new starts. Steps that already ran keep their results; the run can be resumed from its journal."), "",
			m.st.bold.Render("y")+" abort   "+m.st.bold.Render("n/enter")+" keep running",
			m.st.dim.Render(wrap("ctrl+c: abort now and cancel running commands")))
	case modalHelp:
		parts = append(parts, m.st.bold.Render("Keys"), "", m.help.FullHelpView(m.helpFor().full), "",
			m.st.dim.Render("any key closes"))
	}
	return box.Render(strings.Join(parts, "\n"))
}
