package k3sops

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/caretaker/caretaker/runner"
)

// What each recorded change left on its node, in words, for the summary
// of a run that stopped (runner.NodeLeft.Standing).
func init() {
	runner.RegisterUndoDescription("k3s.restore_server", describeEdits("`server` removed from %s (the originals are kept on the node; restore_server, resume or undo puts it back)"))
	runner.RegisterUndoDescription("k3s.restore_token", describeEdits("the new CA hash written into the token in %s (the originals are kept on the node)"))
	runner.RegisterUndoDescription("k3s.rotate_ca", func([]byte) string {
		return "the datastore's CA set rotated here with k3s certificate rotate-ca (a rotation is not undone; resume finishes it)"
	})
	runner.RegisterUndoDescription("k3s.restore", func([]byte) string {
		return "files restored from a backup (undo puts back the safety backup taken first)"
	})
}

// describeEdits describes an edit record's undo data with format, whose
// %s is the edited files.
func describeEdits(format string) func([]byte) string {
	return func(data []byte) string {
		var d undoData
		if json.Unmarshal(data, &d) != nil || len(d.Files) == 0 {
			return ""
		}
		return fmt.Sprintf(format, strings.Join(d.Files, ", "))
	}
}
