package k3sops

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/caretaker/caretaker/runner"
)

// The undo actions the K3s operations record, replayed by `caretaker
// undo`. Each is idempotent: the records they read say what is already
// done.
func init() {
	runner.RegisterUndo("k3s.restore_server", undoEdits("k3s.restore_server", "strip"))
	runner.RegisterUndo("k3s.restore_token", undoEdits("k3s.restore_token", "token"))
	runner.RegisterUndo("k3s.restore", undoRestore)
}

// undoTarget is the target of an undo step: the node the change was made
// on.
func undoTarget(env *runner.Env, op string) (*Target, error) {
	if env.Node == nil || env.Exec == nil {
		return nil, fmt.Errorf("%s: undo needs the node the change was made on", op)
	}
	return &Target{Run: env, Node: env.Node, Exec: env.Exec, Op: op}, nil
}

// undoEdits puts back every unrestored edit record of kind on the node
// (StripServer's or UpdateToken's), byte for byte.
func undoEdits(op, kind string) runner.UndoFunc {
	return func(ctx context.Context, env *runner.Env, data []byte) error {
		c, err := undoTarget(env, op)
		if err != nil {
			return err
		}
		_, err = c.restoreRecords(ctx, kind)
		return err
	}
}

// undoRestore puts back the safety backup Restore took before it
// overwrote files.
func undoRestore(ctx context.Context, env *runner.Env, data []byte) error {
	c, err := undoTarget(env, "k3s.restore")
	if err != nil {
		return err
	}
	var d struct {
		Backup string `json:"backup"`
	}
	if err := json.Unmarshal(data, &d); err != nil || d.Backup == "" {
		return fmt.Errorf("k3s.restore undo: the record names no safety backup: %s", data)
	}
	_, err = c.restoreBackup(ctx, d.Backup, false)
	return err
}
