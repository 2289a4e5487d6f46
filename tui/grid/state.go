package grid

import "github.com/caretaker/caretaker/runner"

// State is the compact status of one cell.
type State uint8

// Cell states. NA marks a step that does not run on the node (the cell is
// blank and not counted).
const (
	NA State = iota
	Pending
	Running
	OK
	Changed
	Skipped
	Failed
	// NumStates is the number of states, for arrays indexed by State.
	NumStates
)

// States lists the countable states in display order.
var States = []State{Pending, Running, OK, Changed, Skipped, Failed}

// StateOf converts a runner status.
func StateOf(s runner.Status) State {
	switch s {
	case runner.StatusPending:
		return Pending
	case runner.StatusRunning:
		return Running
	case runner.StatusOK:
		return OK
	case runner.StatusChanged:
		return Changed
	case runner.StatusSkipped:
		return Skipped
	case runner.StatusFailed:
		return Failed
	}
	return NA
}

// Status converts back to the runner's status name ("" for NA).
func (s State) Status() runner.Status {
	switch s {
	case Pending:
		return runner.StatusPending
	case Running:
		return runner.StatusRunning
	case OK:
		return runner.StatusOK
	case Changed:
		return runner.StatusChanged
	case Skipped:
		return runner.StatusSkipped
	case Failed:
		return runner.StatusFailed
	}
	return ""
}

// Final reports whether the cell has finished.
func (s State) Final() bool { return s >= OK }

// Glyph is the one-column symbol of a state; statuses differ by shape, not
// only by colour, so the grid reads the same with NO_COLOR.
func (s State) Glyph() string {
	switch s {
	case Pending:
		return "·"
	case Running:
		return "⠿"
	case OK:
		return "✓"
	case Changed:
		return "●"
	case Skipped:
		return "-"
	case Failed:
		return "✗"
	}
	return " "
}
