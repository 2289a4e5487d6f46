// Package grid is the node × step table of a run: one row per node (servers,
// then agents, then any other role), one column per step, one cell per step
// that runs on the node. It keeps the state of every cell and renders only the
// rows that fit on screen, so a thousand nodes cost no more than forty.
package grid

import (
	"strconv"
	"strings"
	"time"

	"charm.land/lipgloss/v2"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/internal/paint"
)

// Cell is the state of one step on one node.
type Cell struct {
	State    State
	Started  time.Time
	Duration time.Duration
	Error    string // first line of the error when failed
	Reason   string // why skipped
}

// Styles are the lipgloss styles of the grid.
type Styles struct {
	States       [NumStates]lipgloss.Style
	Name         lipgloss.Style
	NameSelected lipgloss.Style
	CellSelected lipgloss.Style
	Group        lipgloss.Style
	Header       lipgloss.Style
	HeaderSel    lipgloss.Style
}

// Spinner frames of a running cell.
var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Grid is the table model. The zero value is not usable; call New.
type Grid struct {
	steps   []runner.StepInfo
	nodes   []runner.NodeInfo
	nodeIdx map[string]int
	cells   []Cell // len(nodes)*len(steps), row-major
	once    []int  // per step: row of the single cell of a once step, else -1
	counts  [NumStates]int

	rows    []int  // node indices shown, in display order
	lines   []line // display lines: group headings and rows
	rowLine []int  // rows[i] is at lines[rowLine[i]]
	filter  []string
	dirty   bool // rows need recomputing (filter on a status that changed)

	sel     int // index into rows
	selNode int // node index of the selection, kept across filters
	col     int
	offset  int // first display line shown
	colOff  int // first step column shown

	width, height int
	nameMax       int // widest node name
	styles        Styles
	pens          pens
	cache         [NumStates][2]string // rendered static cells, [state][selected]
	labels        []string             // abbreviated step names for cacheW
	cacheW        int
}

// pens are the styles captured for fast painting of one-line pieces.
type pens struct {
	name, nameSel, group, header, headerSel, running, runningSel paint.Pen
}

type line struct {
	node  int    // -1 for a group heading
	group string // heading text, with the count of rows shown
}

// New builds a grid for the plan's steps and nodes, every applicable cell
// pending.
func New(steps []runner.StepInfo, nodes []runner.NodeInfo) *Grid {
	g := &Grid{
		steps:   append([]runner.StepInfo(nil), steps...),
		nodes:   append([]runner.NodeInfo(nil), nodes...),
		nodeIdx: make(map[string]int, len(nodes)),
		cells:   make([]Cell, len(nodes)*len(steps)),
		once:    make([]int, len(steps)),
	}
	g.counts[NA] = len(g.cells)
	for i, n := range g.nodes {
		g.nodeIdx[n.Name] = i
		g.nameMax = max(g.nameMax, paint.Width(n.Name))
	}
	for s, st := range g.steps {
		g.once[s] = -1
		for _, name := range st.Nodes {
			r, ok := g.nodeIdx[name]
			if !ok {
				continue
			}
			if st.Once {
				g.once[s] = r
				g.set(r, s, Pending)
				break
			}
			g.set(r, s, Pending)
		}
	}
	g.selNode = -1
	g.refilter()
	return g
}

// set changes a cell's state and keeps the counts.
func (g *Grid) set(r, s int, st State) {
	c := &g.cells[r*len(g.steps)+s]
	g.counts[c.State]--
	c.State = st
	g.counts[st]++
	if len(g.filter) > 0 {
		g.dirty = true
	}
}

// Steps returns the steps (columns).
func (g *Grid) Steps() []runner.StepInfo { return g.steps }

// Nodes returns the nodes (rows) in plan order.
func (g *Grid) Nodes() []runner.NodeInfo { return g.nodes }

// NodeIndex returns the row of a node, adding a row for a node the plan did
// not list.
func (g *Grid) NodeIndex(name string) int {
	if r, ok := g.nodeIdx[name]; ok {
		return r
	}
	r := len(g.nodes)
	g.nodes = append(g.nodes, runner.NodeInfo{Name: name})
	g.nodeIdx[name] = r
	g.nameMax = max(g.nameMax, paint.Width(name))
	g.cells = append(g.cells, make([]Cell, len(g.steps))...)
	g.counts[NA] += len(g.steps)
	g.dirty = true
	return r
}

// cellFor finds the cell of an event, making it applicable if the plan did
// not expect it. It returns -1 for a step index out of range.
func (g *Grid) cellFor(step int, node string) (r int, ok bool) {
	if step < 0 || step >= len(g.steps) {
		return -1, false
	}
	r = g.NodeIndex(node)
	if g.steps[step].Once && g.once[step] != r {
		if old := g.once[step]; old >= 0 {
			prev := g.cells[old*len(g.steps)+step]
			g.set(old, step, NA)
			g.cells[old*len(g.steps)+step] = Cell{}
			g.cells[r*len(g.steps)+step] = prev
			g.counts[NA]--
			g.counts[prev.State]++
		}
		g.once[step] = r
	}
	if g.cells[r*len(g.steps)+step].State == NA {
		g.set(r, step, Pending)
	}
	return r, true
}

// Start marks a cell running.
func (g *Grid) Start(e runner.StepStarted) {
	r, ok := g.cellFor(e.Step, e.Node)
	if !ok {
		return
	}
	g.set(r, e.Step, Running)
	g.cells[r*len(g.steps)+e.Step].Started = e.At
}

// Done records a cell's final status.
func (g *Grid) Done(e runner.StepDone) {
	r, ok := g.cellFor(e.Step, e.Node)
	if !ok {
		return
	}
	st := StateOf(e.Status)
	if st == NA {
		st = Failed
	}
	g.set(r, e.Step, st)
	c := &g.cells[r*len(g.steps)+e.Step]
	c.Duration = e.Duration
	c.Error = firstLine(e.Error)
	c.Reason = e.Reason
	if c.Started.IsZero() && !e.At.IsZero() {
		c.Started = e.At.Add(-e.Duration)
	}
}

// Cell returns the cell of a node (row) and step; ok is false out of range.
func (g *Grid) Cell(r, s int) (Cell, bool) {
	if r < 0 || r >= len(g.nodes) || s < 0 || s >= len(g.steps) {
		return Cell{}, false
	}
	return g.cells[r*len(g.steps)+s], true
}

// Count returns how many cells are in a state.
func (g *Grid) Count(s State) int { return g.counts[s] }

// Progress returns the finished and total countable cells.
func (g *Grid) Progress() (done, total int) {
	for _, s := range States {
		total += g.counts[s]
		if s.Final() {
			done += g.counts[s]
		}
	}
	return done, total
}

// SetStyles sets the styles.
func (g *Grid) SetStyles(s Styles) {
	g.styles = s
	g.cacheW = -1
	g.pens = pens{
		name: paint.NewPen(s.Name), nameSel: paint.NewPen(s.NameSelected), group: paint.NewPen(s.Group),
		header: paint.NewPen(s.Header), headerSel: paint.NewPen(s.HeaderSel),
		running: paint.NewPen(s.States[Running]), runningSel: paint.NewPen(s.CellSelected.Inherit(s.States[Running])),
	}
}

// SetSize sets the space the grid may use, including its header line.
func (g *Grid) SetSize(w, h int) {
	g.width, g.height = max(w, 10), max(h, 2)
	g.scroll()
}

// Width returns the width set last.
func (g *Grid) Width() int { return g.width }

// Height returns the height set last, the header line included.
func (g *Grid) Height() int { return g.height }

// Selected returns the selected node row (-1 if no row is shown) and step.
func (g *Grid) Selected() (row, step int) {
	if len(g.rows) == 0 {
		return -1, g.col
	}
	return g.rows[g.sel], g.col
}

// Shown returns how many nodes pass the filter.
func (g *Grid) Shown() int { return len(g.rows) }

// Move moves the selection by d rows, clamped.
func (g *Grid) Move(d int) {
	if len(g.rows) == 0 {
		return
	}
	g.sel = min(max(g.sel+d, 0), len(g.rows)-1)
	g.selNode = g.rows[g.sel]
	g.scroll()
}

// MoveCol moves the step cursor by d columns, clamped.
func (g *Grid) MoveCol(d int) {
	g.col = min(max(g.col+d, 0), len(g.steps)-1)
	g.scroll()
}

// Select selects a node and a step if the node is shown.
func (g *Grid) Select(row, step int) bool {
	for i, r := range g.rows {
		if r == row {
			g.sel, g.selNode = i, r
			if step >= 0 && step < len(g.steps) {
				g.col = step
			}
			g.scroll()
			return true
		}
	}
	return false
}

// NextFailed moves the selection to the next failed cell after the selected
// one (row by row, wrapping) and reports whether there is one.
func (g *Grid) NextFailed() bool {
	n, s := len(g.rows), len(g.steps)
	if n == 0 || s == 0 {
		return false
	}
	start := g.sel*s + g.col
	for k := 1; k <= n*s; k++ {
		p := (start + k) % (n * s)
		i, c := p/s, p%s
		if g.cells[g.rows[i]*s+c].State == Failed {
			g.sel, g.selNode, g.col = i, g.rows[i], c
			g.scroll()
			return true
		}
	}
	return false
}

// SetFilter shows only nodes matching every word of q: a word matches a
// node whose name contains it, whose role is it, or that has a cell in the
// status it names ("failed", "running", ...).
func (g *Grid) SetFilter(q string) {
	g.filter = strings.Fields(strings.ToLower(q))
	g.refilter()
}

// Filter returns the filter words.
func (g *Grid) Filter() string { return strings.Join(g.filter, " ") }

// Refresh recomputes the shown rows if a status filter may have changed
// them; call it once per batch of events.
func (g *Grid) Refresh() {
	if g.dirty {
		g.refilter()
	}
}

func (g *Grid) matches(r int) bool {
	n := g.nodes[r]
	name := strings.ToLower(n.Name)
	for _, w := range g.filter {
		if strings.Contains(name, w) || strings.EqualFold(n.Role, w) {
			continue
		}
		st := stateWord(w)
		found := false
		if st != NA {
			for s := range g.steps {
				cs := g.cells[r*len(g.steps)+s].State
				if cs == st || (st == NumStates && cs.Final()) {
					found = true
					break
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// stateWord reads a filter word as a state: a status name or a prefix of
// at least three letters ("fail", "run"); "done" means any final state.
// NA means the word names no state.
func stateWord(w string) State {
	if len(w) < 3 {
		return NA
	}
	if strings.HasPrefix("done", w) || strings.HasPrefix("finished", w) {
		return NumStates
	}
	for _, s := range States {
		if strings.HasPrefix(string(s.Status()), w) {
			return s
		}
	}
	return NA
}

func groupOf(role string) (int, string) {
	switch role {
	case "server":
		return 0, "servers"
	case "agent":
		return 1, "agents"
	case "":
		return 3, "other"
	}
	return 2, role
}

func (g *Grid) refilter() {
	g.dirty = false
	g.rows = g.rows[:0]
	g.lines = g.lines[:0]
	g.rowLine = g.rowLine[:0]
	// Group order: servers, agents, other roles by first appearance, no role.
	type grp struct {
		rank  int
		label string
		rows  []int
	}
	var groups []*grp
	byLabel := map[string]*grp{}
	for r, n := range g.nodes {
		if len(g.filter) > 0 && !g.matches(r) {
			continue
		}
		rank, label := groupOf(n.Role)
		gr := byLabel[label]
		if gr == nil {
			gr = &grp{rank: rank, label: label}
			byLabel[label] = gr
			groups = append(groups, gr)
		}
		gr.rows = append(gr.rows, r)
	}
	for rank := 0; rank <= 3; rank++ {
		for _, gr := range groups {
			if gr.rank != rank {
				continue
			}
			g.lines = append(g.lines, line{node: -1, group: gr.label + " (" + strconv.Itoa(len(gr.rows)) + ")"})
			for _, r := range gr.rows {
				g.rowLine = append(g.rowLine, len(g.lines))
				g.lines = append(g.lines, line{node: r})
				g.rows = append(g.rows, r)
			}
		}
	}
	g.sel = 0
	for i, r := range g.rows {
		if r == g.selNode {
			g.sel = i
		}
	}
	if len(g.rows) > 0 {
		g.selNode = g.rows[g.sel]
	}
	g.scroll()
}

// layout returns the name column width, the cell width (with its separator)
// and how many step columns fit.
func (g *Grid) layout() (nameW, cw, ncols int) {
	nameW = min(max(g.nameMax, 4), max(g.width/3, 8), 28)
	if len(g.lines) > g.height-1 {
		// room for the position ("120/1000") in the header
		nameW = max(nameW, 2*len(strconv.Itoa(len(g.rows)))+2)
	}
	avail := g.width - nameW - 1
	s := max(len(g.steps), 1)
	cw = min(max(avail/s, 4), g.longest()+1, 16)
	ncols = max(min(avail/cw, len(g.steps)), 1)
	return nameW, cw, ncols
}

// longest is the width of the longest step name (at least 5, room for a
// running cell's spinner and time).
func (g *Grid) longest() int {
	w := 5
	for _, s := range g.steps {
		w = max(w, paint.Width(s.Name))
	}
	return w
}

// NaturalWidth is the width the grid needs to show every step name whole
// (at most 16 columns per step).
func (g *Grid) NaturalWidth() int {
	return min(max(g.nameMax, 4), 28) + 1 + len(g.steps)*min(g.longest()+1, 16)
}

// scroll keeps the selection inside the window.
func (g *Grid) scroll() {
	body := g.height - 1
	if len(g.rows) > 0 && body > 0 {
		ln := g.rowLine[g.sel]
		top := ln
		if ln > 0 && g.lines[ln-1].node < 0 {
			top = ln - 1 // show the group heading with its first row
		}
		if top < g.offset {
			g.offset = top
		}
		if ln >= g.offset+body {
			g.offset = ln - body + 1
		}
		g.offset = max(min(g.offset, len(g.lines)-body), 0)
	} else {
		g.offset = 0
	}
	if g.width > 0 {
		_, _, ncols := g.layout()
		if g.col < g.colOff {
			g.colOff = g.col
		}
		if g.col >= g.colOff+ncols {
			g.colOff = g.col - ncols + 1
		}
		g.colOff = max(min(g.colOff, len(g.steps)-ncols), 0)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return strings.TrimSpace(s)
}
