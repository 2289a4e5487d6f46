package builtins

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/caretaker/caretaker/runner"
)

// The undo actions the k3s builtins record, replayed by `caretaker undo`.
// Each is idempotent: the records they read say what is already done.
func init() {
	runner.RegisterUndo("k3s.restore_server", undoEdits("k3s.restore_server", "strip"))
	runner.RegisterUndo("k3s.restore_token", undoEdits("k3s.restore_token", "token"))
	runner.RegisterUndo("k3s.restore", undoRestore)
}

// undoCall is the k3sCall of an undo step: the node the change was made on.
func undoCall(env *runner.Env, name string) (*k3sCall, error) {
	if env.Node == nil || env.Exec == nil {
		return nil, fmt.Errorf("%s: undo needs the node the change was made on", name)
	}
	return &k3sCall{env: env, node: env.Node, ex: env.Exec, name: name}, nil
}

// undoEdits puts back every unrestored edit record of kind on the node
// (strip_server's or update_token's), byte for byte.
func undoEdits(name, kind string) runner.UndoFunc {
	return func(ctx context.Context, env *runner.Env, data []byte) error {
		c, err := undoCall(env, name)
		if err != nil {
			return err
		}
		_, err = c.restoreRecords(kind)
		return err
	}
}

// undoRestore puts back the safety backup k3s.restore took before it
// overwrote files.
func undoRestore(ctx context.Context, env *runner.Env, data []byte) error {
	c, err := undoCall(env, "k3s.restore")
	if err != nil {
		return err
	}
	var d struct {
		Backup string `json:"backup"`
	}
	if err := json.Unmarshal(data, &d); err != nil || d.Backup == "" {
		return fmt.Errorf("k3s.restore undo: the record names no safety backup: %s", data)
	}
	_, err = c.restoreBackup(d.Backup, false)
	return err
}
