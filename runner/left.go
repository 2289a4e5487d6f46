package runner

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
)

// NodeLeft says where a run that did not end ok (stopped with Ctrl-C, by
// its window, or failed) left one node, from what this attempt did there:
// the steps it finished, the step that did not finish and what that step
// had changed before it ended, the changes recorded for undo that are not
// put back yet, and the steps `caretaker resume` runs there. It is built
// from the same records the journal keeps (step results, undo records)
// plus each change a builtin made (Env.Wet), so the summary says exactly
// what state the node is in.
type NodeLeft struct {
	Node string `json:"node"`
	// Done are the steps that ended ok or changed on the node.
	Done []string `json:"done,omitempty"`
	// Stopped is the step that started on the node and did not finish
	// (""), and How how it ended ("stopped by the operator", "failed (see
	// above)", "did not finish").
	Stopped string `json:"stopped,omitempty"`
	How     string `json:"how,omitempty"`
	// Changes are what that step changed before it ended, in order (each
	// mutating builtin's description; "(failed: ...)" when it failed).
	Changes []string `json:"changes,omitempty"`
	// Standing are this attempt's changes recorded for undo and not put
	// back yet, described by their kind (RegisterUndoDescription).
	Standing []string `json:"standing,omitempty"`
	// Resume are the steps resume runs on the node, in order; the stopped
	// step is retried from its start.
	Resume []string `json:"resume,omitempty"`
}

type cellKey struct {
	step int
	node string
}

// undoNote is one undo record of this attempt, for NodeLeft.Standing.
type undoNote struct {
	node, kind, desc string
	resolved         bool
}

// leftLog is what a run remembers for NodeLeft.
type leftLog struct {
	mu      sync.Mutex
	started map[cellKey]bool
	status  map[cellKey]StepDone
	changes map[cellKey][]string
	undos   []*undoNote
}

func (l *leftLog) event(ev Event) {
	switch ev.(type) {
	case StepStarted, StepDone:
	default:
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started == nil {
		l.started, l.status, l.changes = map[cellKey]bool{}, map[cellKey]StepDone{}, map[cellKey][]string{}
	}
	switch e := ev.(type) {
	case StepStarted:
		l.started[cellKey{e.Step, e.Node}] = true
	case StepDone:
		l.status[cellKey{e.Step, e.Node}] = e
	}
}

func (l *leftLog) change(step int, node, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changes == nil {
		l.changes = map[cellKey][]string{}
	}
	k := cellKey{step, node}
	l.changes[k] = append(l.changes[k], what)
}

func (l *leftLog) undo(node, kind string, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.undos = append(l.undos, &undoNote{node: node, kind: kind, desc: describeUndo(kind, data)})
}

func (l *leftLog) resolve(node, kind string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.undos {
		if u.node == node && u.kind == kind {
			u.resolved = true
		}
	}
}

// wetDepth counts the Env.Wet calls running on an Env: while a change is
// being made, a graceful stop does not interrupt the builtin making it
// (CheckStop), so a restart that was issued is also waited for.
type wetDepth struct{ n atomic.Int32 }

// ResolveUndo says that the undo records of kind this attempt made on
// node are put back (e.g. restore_server put back what strip_server
// removed): a stopped run's summary no longer lists them as standing.
func (e *Env) ResolveUndo(node, kind string) { e.run.left.resolve(node, kind) }

var undoDescriptions = struct {
	sync.RWMutex
	fns map[string]func(data []byte) string
}{fns: map[string]func([]byte) string{}}

// RegisterUndoDescription says in words what a change recorded with kind
// left on its node ("`server` removed from /etc/rancher/k3s/config.yaml"),
// for the summary of a stopped run. Builtins call it from an init
// function; a kind without one is described by its name.
func RegisterUndoDescription(kind string, fn func(data []byte) string) {
	undoDescriptions.Lock()
	defer undoDescriptions.Unlock()
	undoDescriptions.fns[kind] = fn
}

func describeUndo(kind string, data []byte) string {
	undoDescriptions.RLock()
	fn := undoDescriptions.fns[kind]
	undoDescriptions.RUnlock()
	if fn != nil {
		if s := fn(data); s != "" {
			return s
		}
	}
	return "a change recorded as " + kind
}

// nodesLeft builds RunDone.Left: one entry per node of the plan.
func (r *Run) nodesLeft() []NodeLeft {
	l := &r.st.left
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []NodeLeft
	for _, n := range r.plan.Nodes {
		nl := NodeLeft{Node: n.Name}
		for _, s := range r.plan.Steps {
			targets := s.Nodes
			if s.Once && len(targets) > 1 {
				targets = targets[:1]
			}
			if !containsNode(targets, n.Name) {
				continue
			}
			k := cellKey{s.Index, n.Name}
			d, ended := l.status[k]
			switch {
			case ended && (d.Status == StatusOK || d.Status == StatusChanged):
				nl.Done = append(nl.Done, s.Name)
				if !s.Mutates {
					nl.Resume = append(nl.Resume, s.Name+" (read-only: runs again)")
				}
				continue
			case l.started[k] && (!ended || d.Status == StatusFailed):
				nl.Stopped, nl.How = s.Name, stopHow(d, ended)
				nl.Changes = append([]string(nil), l.changes[k]...)
				nl.Resume = append(nl.Resume, s.Name+" (again from its start)")
				continue
			}
			if r.opts.Done != nil && s.Mutates && r.opts.Done(s.Index, n.Name) {
				continue // done in an earlier attempt: resume skips it
			}
			nl.Resume = append(nl.Resume, s.Name)
		}
		for _, u := range l.undos {
			if u.node == n.Name && !u.resolved {
				nl.Standing = append(nl.Standing, r.st.redact(u.desc))
			}
		}
		for i := range nl.Changes {
			nl.Changes[i] = r.st.redact(nl.Changes[i])
		}
		out = append(out, nl)
	}
	return out
}

// stopHow says how a step that started on a node ended without
// finishing: the failure itself is in the summary's FAILED lines.
func stopHow(d StepDone, ended bool) string {
	switch {
	case !ended:
		return "did not finish"
	case d.Kind == errs.KindAborted || strings.Contains(d.Error, "not starting new work"):
		return "stopped by the operator"
	}
	return "failed (see above)"
}

func containsNode(nodes []*inventory.Node, name string) bool {
	for _, n := range nodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

// LeftSummary is the part of Summary that says where a stopped run left
// each node ("" when RunDone.Left is empty), for printers with a summary
// of their own (the terminal UI).
func LeftSummary(e RunDone) string {
	if len(e.Left) == 0 {
		return ""
	}
	var b strings.Builder
	writeLeft(&b, e)
	return b.String()
}

// writeLeft renders RunDone.Left for Summary.
func writeLeft(b *strings.Builder, e RunDone) {
	fmt.Fprintf(b, "  where this attempt left each node (`caretaker resume %s` continues, `caretaker undo %s` puts back what was recorded):\n", e.RunID, e.RunID)
	for _, nl := range e.Left {
		switch {
		case nl.Stopped != "" && len(nl.Changes) > 0:
			fmt.Fprintf(b, "    %s: step %s %s after: %s; the rest of that step did not run\n", nl.Node, nl.Stopped, nl.How, strings.Join(nl.Changes, "; "))
		case nl.Stopped != "":
			fmt.Fprintf(b, "    %s: step %s %s before it changed anything\n", nl.Node, nl.Stopped, nl.How)
		case len(nl.Done) > 0:
			fmt.Fprintf(b, "    %s: finished %s\n", nl.Node, strings.Join(nl.Done, ", "))
		default:
			fmt.Fprintf(b, "    %s: not touched by this attempt\n", nl.Node)
		}
		if nl.Stopped != "" && len(nl.Done) > 0 {
			fmt.Fprintf(b, "      finished before: %s\n", strings.Join(nl.Done, ", "))
		}
		if len(nl.Standing) > 0 {
			fmt.Fprintf(b, "      not put back yet: %s\n", strings.Join(nl.Standing, "; "))
		}
		if len(nl.Resume) > 0 {
			fmt.Fprintf(b, "      resume runs there: %s\n", strings.Join(nl.Resume, ", "))
		} else {
			fmt.Fprintf(b, "      resume has nothing left to do there\n")
		}
	}
}
