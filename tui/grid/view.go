package grid

import (
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/caretaker/caretaker/tui/internal/paint"
)

// View renders the header line and the visible rows. now and frame drive
// the elapsed time and spinner of running cells.
func (g *Grid) View(now time.Time, frame int) string {
	nameW, cw, ncols := g.layout()
	if g.cacheW != cw {
		g.buildCache(cw)
	}
	var b strings.Builder
	b.Grow((g.width + 16) * g.height)
	// Header: abbreviated step names, the cursor column highlighted.
	// The name column's header shows the position when rows are hidden.
	left := ""
	if len(g.lines) > g.height-1 && len(g.rows) > 0 {
		left = strconv.Itoa(g.sel+1) + "/" + strconv.Itoa(len(g.rows))
	}
	left = pad(paint.Truncate(left, nameW-1, ""), nameW-1)
	if g.colOff > 0 {
		left += "‹"
	} else {
		left += " "
	}
	b.WriteString(g.pens.header.Paint(left))
	b.WriteByte(' ')
	last := min(g.colOff+ncols, len(g.steps))
	for s := g.colOff; s < last; s++ {
		if s == g.col {
			b.WriteString(g.pens.headerSel.Paint(g.labels[s]))
		} else {
			b.WriteString(g.pens.header.Paint(g.labels[s]))
		}
		if s == last-1 && last < len(g.steps) {
			b.WriteString("›")
		} else {
			b.WriteByte(' ')
		}
	}
	selRow := -1
	if len(g.rows) > 0 {
		selRow = g.rows[g.sel]
	}
	body := g.height - 1
	for i := g.offset; i < len(g.lines) && i < g.offset+body; i++ {
		b.WriteByte('\n')
		ln := g.lines[i]
		if ln.node < 0 {
			b.WriteString(g.pens.group.Paint(paint.Truncate(ln.group, g.width, "…")))
			continue
		}
		r := ln.node
		name := pad(paint.Truncate(g.nodes[r].Name, nameW, "…"), nameW)
		if r == selRow {
			b.WriteString(g.pens.nameSel.Paint(name))
		} else {
			b.WriteString(g.pens.name.Paint(name))
		}
		b.WriteByte(' ')
		for s := g.colOff; s < last; s++ {
			c := g.cells[r*len(g.steps)+s]
			sel := 0
			if r == selRow && s == g.col {
				sel = 1
			}
			if c.State == Running {
				txt := spinner[frame%len(spinner)]
				if cw-1 >= 4 && !c.Started.IsZero() {
					txt += " " + Short(now.Sub(c.Started))
				}
				txt = pad(paint.Truncate(txt, cw-1, ""), cw-1)
				if sel == 1 {
					b.WriteString(g.pens.runningSel.Paint(txt))
				} else {
					b.WriteString(g.pens.running.Paint(txt))
				}
				b.WriteByte(' ')
				continue
			}
			b.WriteString(g.cache[c.State][sel])
		}
	}
	return b.String()
}

func (g *Grid) buildCache(cw int) {
	g.cacheW = cw
	g.labels = g.labels[:0]
	for _, st := range g.steps {
		g.labels = append(g.labels, pad(Abbrev(st.Name, cw-1), cw-1))
	}
	for s := range NumStates {
		txt := pad(State(s).Glyph(), cw-1)
		g.cache[s][0] = g.styles.States[s].Render(txt) + " "
		g.cache[s][1] = g.styles.CellSelected.Inherit(g.styles.States[s]).Render(txt) + " "
	}
}

// Abbrev shortens a step name to w columns: the whole name if it fits, else
// each word without its inner vowels (words after the first capitalised),
// cut with "…" as a last resort.
func Abbrev(name string, w int) string {
	if w <= 0 {
		return ""
	}
	if ansi.StringWidth(name) <= w {
		return name
	}
	words := strings.FieldsFunc(name, func(r rune) bool { return r == '_' || r == '-' || r == ' ' || r == '.' })
	var b strings.Builder
	for i, wd := range words {
		for j, r := range wd {
			if j == 0 && i > 0 {
				b.WriteString(strings.ToUpper(string(r)))
				continue
			}
			if j > 0 && strings.ContainsRune("aeiouAEIOU", r) {
				continue
			}
			b.WriteRune(r)
		}
	}
	s := b.String()
	if ansi.StringWidth(s) <= w {
		return s
	}
	return ansi.Truncate(s, w, "")
}

// Short formats a duration in at most three columns plus unit: 9s, 12m, 3h.
func Short(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Hour)) + "h"
}

func pad(s string, w int) string { return paint.PadRight(s, w) }
