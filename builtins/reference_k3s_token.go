package builtins

import (
	"reflect"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

// This file holds the reference entries of the server token rotation
// builtins (the rotate-token playbook) and their result structs.

var tokenFileParam = RefParam{Name: "token_file", Type: "str", Doc: "the new token's file on the controller (new_token's file; \"\" only under --check, for a token that would be generated)"}

func k3sRotateTokenEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "k3s.check_token_file", When: WhenAny, Returns: "None",
			Params:  []RefParam{{Name: "path", Type: "str", Doc: "a file on the controller holding the new token"}},
			Summary: "fail unless path is a usable new server token file (call it at the top level: bad input, exit 2)",
			Doc: "The file must be regular and neither group- nor world-accessible (chmod 600); it holds one token, the " +
				"password part only: 16 to 256 letters, digits or - . _ ~ + / =, not a kubeadm-style bootstrap token " +
				"(k3s#12982), not starting with K10 (a full token), without ':'. The error never quotes the token.",
			Check:   checkReadOnly,
			Example: "if new_token_file:\n    k3s.check_token_file(new_token_file)",
		},
		{
			Name: "k3s.new_token", When: WhenStep, Returns: "new_token",
			Params:  []RefParam{nodeParam, {Name: "file", Type: "str", Default: `""`, Doc: "a file holding the new token (\"\": generate one)"}},
			Summary: "the new token of a server token rotation, saved 0600 on the controller",
			Doc: "On a server: this run's token when an earlier attempt saved one, else the token in file, else a random " +
				"one (64 hex digits). It is saved with the token the datastore opens with now to the run's backup directory " +
				"(DIR/backups/RUN/datastore/new-token and old-token, 0600) before anything uses it. The token itself is never " +
				"a Starlark value: pass the file.",
			Check:   "Validates for real; reports `would save the new token ...` and returns new_token with planned=True (file is the given file, or \"\" for a generated token).",
			Example: "t = k3s.new_token(node, file = new_token_file)\nk3s.rotate_token(node, t.file)",
		},
		{
			Name: "k3s.token_status", When: WhenStep, Returns: "token_status",
			Params: []RefParam{
				{Name: "nodes", Type: "selector | None", Default: "None", Doc: "the nodes (None: every node of the run)"},
				{Name: "token_file", Type: "str", Default: `""`, Doc: "the new token's file, if known (\"\": this run's, when an earlier attempt saved one)"},
				{Name: "quiet", Type: "bool", Default: "False", Doc: "do not print the table"},
			},
			Summary: "every node's configured token and every server's SD/token against the datastore's key",
			Doc: "Tells a cluster that runs with one token (consistent) from a token rotation in progress (rotated: the " +
				"datastore opens with token_file's token; stale: the nodes that do not run with it) and names an earlier " +
				"run's token file that opens the datastore.",
			Check:   checkReadOnly,
			Example: "st = k3s.token_status(nodes(), token_file = new_token_file)\nif not st.consistent: fail(st.table)",
		},
		{
			Name: "k3s.rotate_token", When: WhenStep, Returns: "rotate_token",
			Params:  []RefParam{nodeRequired, tokenFileParam},
			Summary: "k3s token rotate on a server, to the token in token_file",
			Doc: "Unless the datastore already opens with the new token: runs `k3s token rotate` with the old token (the " +
				"server's SD/token) and the new one on stdin (never in the command line caretaker sends), then checks that the " +
				"datastore holds the bootstrap data under the new token's key only. The undo record is a note: the way back " +
				"is another rotation, to the old token.",
			Check:   "Reports `would run on NODE: k3s token rotate ...` and returns rotate_token with planned=True; nothing is rotated.",
			Example: "k3s.rotate_token(node, shared(\"token_file\"))",
		},
		{
			Name: "k3s.set_token", When: WhenStep, Returns: "token_set",
			Params:  []RefParam{nodeRequired, tokenFileParam},
			Summary: "the new token in every source the node takes its token from",
			Doc: "config.yaml and drop-ins, --token in the unit, K3S_TOKEN in env files and Environment=, a token file, or " +
				"on a server without a configured token SD/token itself: byte for byte except the token's password (a " +
				"K10<ca-hash>::user:password token keeps its hash and user). The originals are kept on the node. A server's " +
				"only once the datastore opens with the new token, an agent's only once the servers accept it; agents of " +
				"servers that set agent-token are left alone (unaffected=True).",
			Check:   "Reports `would put the new token ...` and returns token_set with the edits it would make; nothing is written.",
			Example: "r = k3s.set_token(node, tf)\nif r.unaffected: skip(r.reason)",
		},
		{
			Name: "k3s.verify_token", When: WhenStep, Returns: "token_check",
			Params:  []RefParam{nodeRequired, tokenFileParam, {Name: "fail", Type: "bool", Default: "True", Doc: "fail the step when the node does not run with it"}},
			Summary: "the node runs with the new token",
			Doc: "K3s is active and the node's configured token holds the new one; on a server also: its supervisor accepts " +
				"the new token (only a server restarted with it does), its SD/token holds it, and the datastore holds the " +
				"bootstrap data under its key only and opens with it.",
			Check:   "Reports `would verify ...` and returns token_check with planned=True.",
			Example: "k3s.verify_token(node, tf)",
		},
	}
}

func k3sRotateTokenStructs() []RefStruct {
	return []RefStruct{
		{Name: "new_token", Summary: "what k3s.new_token returns", goType: reflect.TypeFor[k3sops.NewTokenResult](), Fields: []RefField{
			{Name: "file", Doc: "the run's copy of the new token (0600; the given file or \"\" under --check)"},
			{Name: "old_file", Doc: "the token the datastore opened with before (0600)"},
			{Name: "source", Doc: "file, generated or earlier attempt"},
			{Name: "rotated", Doc: "the datastore already opens with the new token"},
			{Name: "planned", Doc: "under --check: nothing was saved"},
		}},
		{Name: "token_status", Summary: "what k3s.token_status returns", goType: reflect.TypeFor[k3sops.TokenStatusResult](), Fields: []RefField{
			{Name: "key", Doc: "the datastore's bootstrap key"},
			{Name: "via", Doc: "the server it was read through"},
			{Name: "rotated", Doc: "the datastore opens with token_file's token"},
			{Name: "consistent", Doc: "every server's SD/token and configured token open the datastore"},
			{Name: "stale", Doc: "the nodes whose token does not open it"},
			{Name: "rows", Doc: "one row per node"},
			{Name: "earlier_token_file", Doc: "an earlier run's new-token file that opens the datastore (when not consistent)"},
			{Name: "table", Doc: "the table token_status prints"},
		}},
		{Name: "token_row", Summary: "one node in k3s.token_status", goType: reflect.TypeFor[k3sops.TokenRow](), Fields: []RefField{
			{Name: "node", Doc: "the node"},
			{Name: "role", Doc: "server or agent"},
			{Name: "kind", Doc: "its configured token's kind: secure, short, file, bootstrap, invalid or none"},
			{Name: "configured", Doc: "current (opens the datastore), new, other, none, missing or agent-token"},
			{Name: "server_token", Doc: "a server's SD/token: current, new, other or missing; - on agents"},
		}},
		{Name: "rotate_token", Summary: "what k3s.rotate_token returns", goType: reflect.TypeFor[k3sops.RotateTokenResult](), Fields: []RefField{
			{Name: "changed", Doc: "k3s token rotate ran"},
			{Name: "key", Doc: "the datastore's bootstrap key afterwards"},
			{Name: "planned", Doc: "under --check: nothing was rotated"},
		}},
		{Name: "token_set", Summary: "what k3s.set_token returns", goType: reflect.TypeFor[k3sops.TokenSetResult](), Fields: []RefField{
			{Name: "changed", Doc: "files were (or under --check would be) edited"},
			{Name: "edits", Doc: "the edits"},
			{Name: "record", Doc: "the directory on the node that keeps the originals"},
			{Name: "token_kind", Doc: "secure, short, file, bootstrap, invalid or none"},
			{Name: "reason", Doc: "why it changed or did not"},
			{Name: "unaffected", Doc: "the node does not join with the server token (agent-token, bootstrap token)"},
		}},
		{Name: "token_check", Summary: "what k3s.verify_token returns", goType: reflect.TypeFor[k3sops.TokenCheck](), Fields: []RefField{
			{Name: "node", Doc: "the node"},
			{Name: "ok", Doc: "it runs with the new token"},
			{Name: "problems", Doc: "what is wrong"},
			{Name: "planned", Doc: "under --check: not checked"},
		}},
	}
}
