package runner

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.starlark.net/starlark"
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

// UndoPlan builds the plan of an undo run for a journaled run: one step
// per recorded undo action, the latest first, each on the node the change
// was made on. cluster is the run's cluster from the inventory. It fails
// when the run recorded nothing to undo, when a node is no longer in the
// inventory, or when an action's kind is unknown to this caretaker.
func UndoPlan(rec *RunRecord, cluster *Cluster) (*Plan, error) {
	if len(rec.Undos) == 0 {
		return nil, fmt.Errorf("run %s recorded no undo actions: nothing to undo", rec.Meta.RunID)
	}
	byName := map[string]*Node{}
	for _, n := range cluster.Nodes {
		byName[n.Name] = n
	}
	plan := &Plan{
		Playbook:    "undo-" + rec.Meta.Playbook,
		File:        rec.Path,
		Description: fmt.Sprintf("undo the recorded changes of run %s (%s), latest first", rec.Meta.RunID, rec.Meta.Playbook),
		Cluster:     cluster,
	}
	var unknown []string
	seen := map[string]bool{}
	for i := len(rec.Undos) - 1; i >= 0; i-- {
		u := rec.Undos[i]
		n := byName[u.Node]
		if n == nil {
			return nil, fmt.Errorf("undo action #%d (%s) of run %s is for node %q, which is not in cluster %q of the inventory: %w", u.Seq, u.Kind, rec.Meta.RunID, u.Node, cluster.Name, ErrBadInput)
		}
		fn, ok := lookupUndo(u.Kind)
		if !ok {
			unknown = append(unknown, u.Kind)
			continue
		}
		if !seen[n.Name] {
			seen[n.Name] = true
			plan.Nodes = append(plan.Nodes, n)
		}
		stepName := rec.Meta.stepName(u.Step)
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
			Nodes:    []*Node{n},
			Serial:   1,
			Mutates:  true,
			Doc:      fmt.Sprintf("undo of step %q on %s, recorded %s", stepName, n.Name, u.At.Local().Format("2006-01-02 15:04:05")),
			Body:     body,
		})
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("run %s recorded undo actions this caretaker does not know (%s; it knows %s): use the caretaker version that made the run: %w",
			rec.Meta.RunID, strings.Join(unknown, ", "), strings.Join(UndoKinds(), ", "), ErrBadInput)
	}
	return plan, nil
}
