package tui

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/grid"
	"github.com/caretaker/caretaker/tui/logpane"
)

// sumKind says how a summary line is styled on screen.
type sumKind int

const (
	sumText sumKind = iota
	sumStatus
	sumHeading
	sumFail
	sumNext
)

// sumLine is one line of the summary; the screen styles it by kind, the
// terminal copy prints its text.
type sumLine struct {
	kind sumKind
	text string
}

// summaryLines describes the run's outcome: status, counts, failed nodes
// with their first error line, notes, where the journal and state are, and
// what to do next.
func (m *model) summaryLines(inTUI bool) []sumLine {
	var out []sumLine
	add := func(k sumKind, format string, a ...any) { out = append(out, sumLine{k, fmt.Sprintf(format, a...)}) }
	blank := func() { out = append(out, sumLine{}) }

	d := m.done
	status := "not finished"
	if d != nil {
		status = d.Status
	}
	head := fmt.Sprintf("run %s after %s", status, formatDuration(m.elapsed()))
	if d == nil {
		head = "the TUI was closed before the run finished (" + formatDuration(m.elapsed()) + " in)"
	}
	if m.runID != "" {
		head += " · run " + m.runID
	}
	if m.check() {
		head += " · check mode, nothing was changed"
	}
	add(sumStatus, "%s", head)
	add(sumText, "%s", m.countsText())
	if d != nil && d.Error != "" {
		add(sumFail, "error: %s", firstLine(d.Error))
	}

	fails := m.failures()
	if len(fails) > 0 {
		blank()
		add(sumHeading, "failed (%d)", len(fails))
		w := 0
		for _, f := range fails {
			w = max(w, ansi.StringWidth(f.Node))
		}
		w = min(w, 24)
		for _, f := range fails {
			msg := firstLine(f.Error)
			if msg == "" {
				msg = "failed"
			}
			add(sumFail, "  %s  %s: %s", padRight(f.Node, w), f.StepName, msg)
		}
	}
	notes := m.notes
	if d != nil && len(d.Notes) > 0 {
		notes = d.Notes
	}
	if len(notes) > 0 {
		blank()
		add(sumHeading, "notes")
		for _, n := range notes {
			add(sumText, "  %s", logpane.Clean(n))
		}
	}
	if d != nil && (d.Journal != "" || d.StateDir != "") || m.savedPath != "" {
		blank()
	}
	if d != nil && d.Journal != "" {
		add(sumText, "journal    %s", d.Journal)
	}
	if d != nil && d.StateDir != "" {
		add(sumText, "state dir  %s (backups, archives)", d.StateDir)
	}
	if m.savedPath != "" {
		add(sumText, "log        %s", m.savedPath)
	}
	blank()
	add(sumHeading, "next")
	for _, n := range m.nextSteps(inTUI) {
		add(sumNext, "  %s", n)
	}
	return out
}

// failures lists failed cells: RunDone.Failed, or the grid's if it is empty.
func (m *model) failures() []runner.StepDone {
	if m.done != nil && len(m.done.Failed) > 0 {
		return m.done.Failed
	}
	var out []runner.StepDone
	steps := m.grid.Steps()
	for r, n := range m.grid.Nodes() {
		for s := range steps {
			if c, _ := m.grid.Cell(r, s); c.State == grid.Failed {
				out = append(out, runner.StepDone{Step: s, StepName: steps[s].Name, Node: n.Name, Status: runner.StatusFailed, Error: c.Error})
			}
		}
	}
	return out
}

func (m *model) countsText() string {
	counts := map[grid.State]int{}
	for _, s := range grid.States {
		counts[s] = m.grid.Count(s)
	}
	if m.done != nil && len(m.done.Counts) > 0 {
		clear(counts)
		for st, n := range m.done.Counts {
			counts[grid.StateOf(st)] += n
		}
	}
	var parts []string
	for _, s := range []grid.State{grid.OK, grid.Changed, grid.Skipped, grid.Failed} {
		parts = append(parts, s.Glyph()+" "+strconv.Itoa(counts[s])+" "+string(s.Status()))
	}
	if n := counts[grid.Pending] + counts[grid.Running]; n > 0 {
		parts = append(parts, "· "+strconv.Itoa(n)+" not run")
	}
	return strings.Join(parts, "   ")
}

// nextSteps says what the operator should do now; inTUI adds the keys.
func (m *model) nextSteps(inTUI bool) []string {
	resume := "caretaker resume " + m.runID
	if m.runID == "" {
		resume = "caretaker resume <run>"
	}
	d := m.done
	switch {
	case d == nil:
		return []string{
			"the run may still be stopping: wait for caretaker to exit",
			"then check the journal and continue with: " + resume,
		}
	case d.Status == "ok" && m.check():
		return []string{"nothing was changed: run again without --check to apply the plan"}
	case m.check():
		return []string{"nothing was changed; fix what the check found, then run the check again"}
	case d.Status == "ok":
		if len(m.notes)+len(d.Notes) > 0 {
			return []string{"all steps done; follow the notes above"}
		}
		return []string{"all steps done; nothing else to do"}
	case d.Status == "aborted":
		return []string{
			"the run was stopped; nodes are as the journal records them",
			"continue with: " + resume + " (finished steps are skipped)",
		}
	}
	read := "read the failed node's output (tab: grid, f: next failed, s: save log)"
	if !inTUI {
		read = "read the failed node's error above and its output in the journal"
		if m.savedPath != "" {
			read += " or the saved log"
		}
	}
	return []string{read, "fix the cause, then: " + resume + " (finished steps are skipped)"}
}

// summaryText is the summary as plain text for the terminal after exit;
// empty if the run never started.
func (m *model) summaryText() string {
	if m.phase == phasePlan {
		return ""
	}
	var b strings.Builder
	b.WriteString("caretaker " + m.title())
	if c := m.cluster(); c != "" {
		b.WriteString(" · cluster " + c)
	}
	b.WriteByte('\n')
	for _, l := range m.summaryLines(false) {
		b.WriteString(strings.TrimRight(l.text, " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// formatDuration prints 850ms, 4.2s, 3m12s, 1h02m.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return strconv.Itoa(int(d/time.Millisecond)) + "ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d/time.Second)%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d/time.Minute)%60)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func itoa(n int) string { return strconv.Itoa(n) }
