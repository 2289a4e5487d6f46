package builtins_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/builtins/k3stest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/journal"
)

// undoJournal keeps the undo records of a run in memory.
type undoJournal struct {
	mu    sync.Mutex
	undos []runner.UndoRecord
}

func (j *undoJournal) RecordUndo(_ context.Context, u runner.UndoRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.undos = append(j.undos, u)
	return nil
}

// runBuiltin runs one k3s builtin on a node of fc as a one-step run.
func runBuiltin(t *testing.T, fc *k3stest.Cluster, j runner.Journal, name, node string) runner.RunDone {
	t.Helper()
	var target *inventory.Node
	for _, n := range fc.Inventory.Nodes {
		if n.Name == node {
			target = n
		}
	}
	fn := builtins.K3s.Members[name].(*starlark.Builtin)
	body := starlark.NewBuiltin("body", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		return starlark.Call(th, fn, args, nil)
	})
	plan := &runner.Plan{Playbook: "t", Cluster: fc.Inventory, Nodes: fc.Inventory.Nodes,
		Steps: []*runner.Step{{Name: name, Nodes: []*inventory.Node{target}, Mutates: true, Body: body}}}
	run := runner.NewRun(plan, runner.RunOptions{Pool: fc.Pool(), NodeValue: builtins.NodeValue, Journal: j, StateDir: fc.StateDir})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done, err := run.Execute(ctx)
	if err != nil {
		t.Fatalf("%s on %s: %v %v", name, node, err, done.Failed)
	}
	return done
}

// TestK3sUndoActions: the undo actions strip_server and update_token record
// are registered and put the files back when `caretaker undo` replays them.
func TestK3sUndoActions(t *testing.T) {
	kinds := map[string]bool{}
	for _, k := range runner.UndoKinds() {
		kinds[k] = true
	}
	for _, k := range []string{"k3s.restore_server", "k3s.restore_token", "k3s.restore"} {
		if !kinds[k] {
			t.Errorf("undo kind %s is not registered", k)
		}
	}
	fc, err := k3stest.NewCluster(env, k3stest.Options{Servers: 2, Agents: -1, ServerSource: map[string]string{"server-2": "unit"}})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	unit := fc.Inventory.Nodes[1].K3s.UnitFile
	before, _ := fc.Execs["server-2"].File(unit)

	j := &undoJournal{}
	runBuiltin(t, fc, j, "strip_server", "server-2")
	after, _ := fc.Execs["server-2"].File(unit)
	if bytes.Equal(before, after) {
		t.Fatal("strip_server did not change the unit")
	}
	if len(j.undos) != 1 || j.undos[0].Kind != "k3s.restore_server" || j.undos[0].Node != "server-2" {
		t.Fatalf("undo records %+v, want one k3s.restore_server for server-2", j.undos)
	}

	rec := &journal.RunRecord{Meta: journal.RunMeta{RunID: "r1", Playbook: "t"}}
	for i, u := range j.undos {
		rec.Undos = append(rec.Undos, journal.Undo{Seq: i + 1, Node: u.Node, Kind: u.Kind, Data: u.Data, At: u.At})
	}
	plan, err := runner.UndoPlan(rec.UndoRun(), fc.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // twice: undo actions are idempotent
		run := runner.NewRun(plan, runner.RunOptions{Pool: fc.Pool(), NodeValue: builtins.NodeValue, StateDir: fc.StateDir})
		if done, err := run.Execute(context.Background()); err != nil {
			t.Fatalf("undo run %d: %v %v", i, err, done.Failed)
		}
		got, _ := fc.Execs["server-2"].File(unit)
		if !bytes.Equal(got, before) {
			t.Fatalf("undo run %d did not restore the unit byte for byte", i)
		}
	}
}
