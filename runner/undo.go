package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
)

// UndoFunc undoes one recorded change. It runs as the body of one step of
// an undo run (`caretaker undo RUN`): env is that step's Env, whose Node
// and Exec are the node the change was made on and whose Check is the
// undo run's check mode (mutations go through env.Wet as usual); data is
// exactly what the builtin passed to Env.Undo. ctx is env.Ctx. An UndoFunc
// must be idempotent: an interrupted undo run is repeated from the action
// it was in.
type UndoFunc func(ctx context.Context, env *Env, data []byte) error

var undoRegistry = struct {
	sync.RWMutex
	fns map[string]UndoFunc
}{fns: map[string]UndoFunc{}}

// RegisterUndo makes kind (the name a builtin passes to Env.Undo, e.g.
// "k3s.restore_server") replayable by `caretaker undo`. Builtins call it
// from an init function. It panics on an empty kind, a nil fn or a kind
// registered twice: those are programming errors.
func RegisterUndo(kind string, fn UndoFunc) {
	if kind == "" || fn == nil {
		panic("runner.RegisterUndo: empty kind or nil function")
	}
	undoRegistry.Lock()
	defer undoRegistry.Unlock()
	if _, dup := undoRegistry.fns[kind]; dup {
		panic("runner.RegisterUndo: kind " + kind + " registered twice")
	}
	undoRegistry.fns[kind] = fn
}

// UndoKinds lists the registered undo kinds, sorted.
func UndoKinds() []string {
	undoRegistry.RLock()
	defer undoRegistry.RUnlock()
	out := make([]string, 0, len(undoRegistry.fns))
	for k := range undoRegistry.fns {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func lookupUndo(kind string) (UndoFunc, bool) {
	undoRegistry.RLock()
	defer undoRegistry.RUnlock()
	fn, ok := undoRegistry.fns[kind]
	return fn, ok
}

// UndoAction is one recorded undo action of a run, as its journal keeps it.
type UndoAction struct {
	Seq      int
	Step     int
	StepName string
	Node     string
	Kind     string
	Data     []byte
	At       time.Time
}

// UndoRun is a journaled run whose recorded undo actions an undo run
// replays.
type UndoRun struct {
	RunID, Playbook, File string
	Actions               []UndoAction // in the order they were recorded
}

// UndoPlan builds the plan of an undo run for a journaled run: one step
// per recorded undo action, the latest first, each on the node the change
// was made on. cluster is the run's cluster from the inventory. It fails
// when the run recorded nothing to undo or when a node is no longer in the
// inventory. An action whose kind has no registered UndoFunc becomes a
// step that ends skipped with a note saying what was recorded.
func UndoPlan(rec UndoRun, cluster *inventory.Cluster) (*Plan, error) {
	if len(rec.Actions) == 0 {
		return nil, fmt.Errorf("run %s recorded no undo actions: nothing to undo", rec.RunID)
	}
	byName := map[string]*inventory.Node{}
	for _, n := range cluster.Nodes {
		byName[n.Name] = n
	}
	plan := &Plan{
		Playbook:    "undo-" + rec.Playbook,
		File:        rec.File,
		Description: fmt.Sprintf("undo the recorded changes of run %s (%s), latest first", rec.RunID, rec.Playbook),
		Cluster:     cluster,
	}
	var unknown []string
	seen := map[string]bool{}
	for i := len(rec.Actions) - 1; i >= 0; i-- {
		u := rec.Actions[i]
		n := byName[u.Node]
		if n == nil {
			return nil, fmt.Errorf("undo action #%d (%s) of run %s is for node %q, which is not in cluster %q of the inventory: %w", u.Seq, u.Kind, rec.RunID, u.Node, cluster.Name, errs.ErrBadInput)
		}
		fn, ok := lookupUndo(u.Kind)
		if !ok {
			fn = manualUndo(u.Kind)
			unknown = append(unknown, u.Kind)
		}
		if !seen[n.Name] {
			seen[n.Name] = true
			plan.Nodes = append(plan.Nodes, n)
		}
		stepName := u.StepName
		data := append([]byte(nil), u.Data...)
		body := starlark.NewBuiltin("undo", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			env, err := EnvFrom(th, "undo")
			if err != nil {
				return nil, err
			}
			if err := fn(env.Ctx, env, data); err != nil {
				return nil, err
			}
			return starlark.None, nil
		})
		plan.Steps = append(plan.Steps, &Step{
			Index:    len(plan.Steps),
			Name:     fmt.Sprintf("undo #%d %s", u.Seq, u.Kind),
			Selector: n.Name,
			Nodes:    []*inventory.Node{n},
			Serial:   1,
			Mutates:  true,
			Doc:      fmt.Sprintf("undo of step %q on %s, recorded %s", stepName, n.Name, u.At.Local().Format("2006-01-02 15:04:05")),
			Body:     body,
		})
	}
	if len(unknown) > 0 {
		plan.Description += fmt.Sprintf("; %d action(s) cannot be undone automatically (%s) and are only reported", len(unknown), strings.Join(dedupe(unknown), ", "))
	}
	return plan, nil
}

// manualUndo stands in for a kind without a registered UndoFunc: a record
// that only documents what was done (e.g. "k3s.rotate_ca", whose way back
// is a restore of the backup), or one written by another caretaker
// version. The step ends skipped and its data becomes a note for the
// operator.
func manualUndo(kind string) UndoFunc {
	return func(ctx context.Context, env *Env, data []byte) error {
		env.Note(fmt.Sprintf("%s: no automatic undo for %s; recorded: %s", env.nodeName(), kind, describeUndoData(data)))
		return Skip("cannot be undone automatically: see the note")
	}
}

// describeUndoData renders undo data for a note: its "how" field when it
// has one, else the JSON as recorded.
func describeUndoData(data []byte) string {
	var m map[string]any
	if json.Unmarshal(data, &m) == nil {
		if how, ok := m["how"].(string); ok && how != "" {
			return how
		}
	}
	if len(data) > 300 {
		return string(data[:300]) + "..."
	}
	return string(data)
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
