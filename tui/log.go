package tui

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/google/renameio/v2"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui/logpane"
)

// logStore keeps every line of the run: per node for the output pane, and
// in arrival order for 's' (save log). Slices only grow, so a snapshot (the
// slice headers) can be written out by another goroutine while events keep
// arriving.
type logStore struct {
	nodes [][]logpane.Line // by grid row; lines of run-wide messages go to run
	run   []logpane.Line
	order []logRef
}

// logRef places one line in time: row -1 is the run-wide list.
type logRef struct {
	at   int64 // unix nanoseconds
	row  int32
	idx  int32
	step int32 // -1: not tied to a step
}

func newLogStore(nodes int) logStore {
	return logStore{nodes: make([][]logpane.Line, nodes)}
}

// add appends a line for a node row (-1: the run).
func (s *logStore) add(row, step int, at time.Time, l logpane.Line) {
	var idx int
	if row < 0 {
		idx = len(s.run)
		s.run = append(s.run, l)
	} else {
		for row >= len(s.nodes) {
			s.nodes = append(s.nodes, nil)
		}
		idx = len(s.nodes[row])
		s.nodes[row] = append(s.nodes[row], l)
	}
	var ns int64
	if !at.IsZero() {
		ns = at.UnixNano()
	}
	s.order = append(s.order, logRef{at: ns, row: int32(row), idx: int32(idx), step: int32(step)})
}

// lines returns a node's lines (nil for an unknown row).
func (s *logStore) lines(row int) []logpane.Line {
	if row < 0 || row >= len(s.nodes) {
		return nil
	}
	return s.nodes[row]
}

// snapshot is a consistent, read-only view of the log for writing it out.
type snapshot struct {
	nodes []string
	steps []string
	rows  [][]logpane.Line
	run   []logpane.Line
	order []logRef
}

func (m *model) snapshot() snapshot {
	sn := snapshot{
		rows:  append([][]logpane.Line(nil), m.log.nodes...),
		run:   m.log.run,
		order: m.log.order,
	}
	for _, n := range m.grid.Nodes() {
		sn.nodes = append(sn.nodes, n.Name)
	}
	for _, st := range m.grid.Steps() {
		sn.steps = append(sn.steps, st.Name)
	}
	return sn
}

var kindName = map[logpane.Kind]string{
	logpane.Stdout: runner.StreamStdout, logpane.Stderr: runner.StreamStderr,
	logpane.Log: runner.StreamLog, logpane.Check: runner.StreamCheck,
	logpane.StepStart: "step", logpane.StepOK: "step", logpane.StepFail: "step",
	logpane.Info: "info",
}

// render writes one line per entry: time, node, step, stream, text.
func (sn snapshot) render() []byte {
	var b bytes.Buffer
	for _, r := range sn.order {
		var l logpane.Line
		node := "-"
		if r.row < 0 {
			l = sn.run[r.idx]
		} else {
			l = sn.rows[r.row][r.idx]
			if int(r.row) < len(sn.nodes) {
				node = sn.nodes[r.row]
			}
		}
		ts := "-"
		if r.at != 0 {
			ts = time.Unix(0, r.at).UTC().Format("2006-01-02T15:04:05.000Z")
		}
		step := "-"
		if r.step >= 0 && int(r.step) < len(sn.steps) {
			step = fmt.Sprintf("%d:%s", r.step+1, sn.steps[r.step])
		}
		fmt.Fprintf(&b, "%s %s %s %s %s\n", ts, node, step, kindName[l.Kind], strings.TrimRight(l.Text, " "))
	}
	return b.Bytes()
}

// savedMsg reports the outcome of a save.
type savedMsg struct {
	path  string
	lines int
	err   error
}

// saveLog writes the log to path (0600: output may name internal hosts and
// paths) atomically, off the update loop.
func (m *model) saveLog(path string) tea.Cmd {
	sn, ctx := m.snapshot(), m.ctx
	return func() tea.Msg {
		return saveSnapshot(ctx, sn, path)
	}
}

func saveSnapshot(ctx context.Context, sn snapshot, path string) savedMsg {
	if err := ctx.Err(); err != nil {
		return savedMsg{path: path, err: err}
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if err := renameio.WriteFile(path, sn.render(), 0o600); err != nil {
		return savedMsg{path: path, err: fmt.Errorf("save log to %s: %w (choose another path with s)", path, err)}
	}
	return savedMsg{path: path, lines: len(sn.order)}
}

// defaultLogPath is offered by 's' when Options.LogPath is empty.
func (m *model) defaultLogPath() string {
	if m.opts.LogPath != "" {
		return m.opts.LogPath
	}
	id := m.runID
	if id == "" {
		id = m.now().Format("20060102-150405")
	}
	return "caretaker-" + id + ".log"
}
