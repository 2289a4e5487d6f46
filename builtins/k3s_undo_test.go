package builtins_test

import (
	"bytes"
	"context"
	"io"
	"strings"
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
	mu       sync.Mutex
	undos    []runner.UndoRecord
	recorded func() // called after each record, when set
}

func (j *undoJournal) RecordUndo(_ context.Context, u runner.UndoRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.undos = append(j.undos, u)
	if j.recorded != nil {
		j.recorded()
	}
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

// TestNodeRunUndo: node.run(cmd, undo=CMD) records CMD before cmd runs
// (not in check mode), and an undo run replays it on the node.
func TestNodeRunUndo(t *testing.T) {
	fc, err := k3stest.NewCluster(env, k3stest.Options{Servers: 1, Agents: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	var order []string
	ex := fc.Execs["server-1"]
	ex.OnFunc(`^echo on > /etc/flag$`, func(string, []byte, io.Writer, io.Writer) int { order = append(order, "do"); return 0 })
	ex.OnFunc(`^rm -f /etc/flag$`, func(string, []byte, io.Writer, io.Writer) int { order = append(order, "undo"); return 0 })
	j := &undoJournal{recorded: func() { order = append(order, "recorded") }}
	step := func(check bool) runner.RunDone {
		body := starlark.NewBuiltin("body", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
			run, err := args[0].(*builtins.Node).Attr("run")
			if err != nil {
				return nil, err
			}
			return starlark.Call(th, run, starlark.Tuple{starlark.String("echo on > /etc/flag")}, []starlark.Tuple{{starlark.String("undo"), starlark.String("rm -f /etc/flag")}})
		})
		plan := &runner.Plan{Playbook: "t", Cluster: fc.Inventory, Nodes: fc.Inventory.Nodes,
			Steps: []*runner.Step{{Name: "flag", Nodes: fc.Inventory.Nodes, Mutates: true, Body: body}}}
		done, err := runner.NewRun(plan, runner.RunOptions{Pool: fc.Pool(), NodeValue: builtins.NodeValue, Journal: j, StateDir: fc.StateDir, Check: check}).Execute(context.Background())
		if err != nil {
			t.Fatalf("run (check=%v): %v %v", check, err, done.Failed)
		}
		return done
	}
	step(true)
	if len(j.undos) != 0 || len(order) != 0 {
		t.Fatalf("check mode recorded %v and ran %v", j.undos, order)
	}
	step(false)
	if strings.Join(order, ",") != "recorded,do" || len(j.undos) != 1 || j.undos[0].Kind != "node.run" {
		t.Fatalf("want the undo recorded before the command: order %v, records %+v", order, j.undos)
	}
	rec := &journal.RunRecord{Meta: journal.RunMeta{RunID: "r1", Playbook: "t"}}
	rec.Undos = append(rec.Undos, journal.Undo{Seq: 1, Node: "server-1", Kind: "node.run", Data: j.undos[0].Data, At: j.undos[0].At})
	plan, err := runner.UndoPlan(rec.UndoRun(), fc.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	if done, err := runner.NewRun(plan, runner.RunOptions{Pool: fc.Pool(), NodeValue: builtins.NodeValue, StateDir: fc.StateDir}).Execute(context.Background()); err != nil {
		t.Fatalf("undo run: %v %v", err, done.Failed)
	}
	if strings.Join(order, ",") != "recorded,do,undo" {
		t.Errorf("undo run did not run the recorded command: %v", order)
	}
}
