package builtins

// This file holds the reference entries of the globals, the node value
// and the json module (see Reference).

func globalsSection() RefSection {
	return RefSection{
		Name:  "globals",
		Title: "Globals",
		Doc: "Predeclared in every playbook and module. step, param and describe declare the playbook " +
			"while it loads (its top level); the others are called from step bodies (nodes and log also at load time).",
		Entries: append(loadEntries(), stepEntries()...),
	}
}

// loadEntries are the builtins of a playbook's top level (package runner).
func loadEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "describe", When: WhenLoad, Returns: "None",
			Summary: "the playbook's one-paragraph description",
			Doc: "Sets the description `caretaker playbooks` lists and the plan shows. The first call wins. " +
				"cluster_lock=False makes runs of the playbook take only the controller's local lock: for playbooks " +
				"that stop or replace the datastore the cluster lock lives in (restore-datastore).",
			Params: []RefParam{
				{Name: "text", Type: "str", Doc: "the description"},
				{Name: "cluster_lock", Type: "bool", Default: "True", Doc: "take the cluster lock (in the datastore) besides the local one"},
			},
			Check:   checkNoNodes,
			Example: `describe("Restart the agents of a zone, one at a time.")`,
		},
		{
			Name: "param", When: WhenLoad, Returns: "any",
			Summary: "declare a parameter (-p name=value) and return its value",
			Doc: "Returns the -p value converted to the parameter's type and checked, or the default (checked " +
				"the same way), so that plan and --check refuse a bad value before any node is touched. The type " +
				"is the default's (str, bool, int, float, list) unless type= says duration (\"90s\", \"3m\"), file " +
				"(a readable file on the controller; the value becomes its absolute path), pem-cert or pem-key. " +
				"An empty string means \"not given\" for the file types.",
			Params: []RefParam{
				{Name: "name", Type: "str", Doc: "the parameter's name, as in -p name=value"},
				{Name: "default", Type: "any", Doc: "the default; its type is the parameter's unless type= is given"},
				{Name: "doc", Type: "str", Default: `""`, Doc: "one line for plan and `caretaker docs PLAYBOOK`"},
				{Name: "choices", Type: "list[str]", Default: "[]", Doc: "the values allowed (strings)"},
				{Name: "type", Type: "str", Default: `""`, Doc: "duration, file, pem-cert or pem-key (or string, int, float, bool, list)"},
				{Name: "min", Type: "int | float | str | None", Default: "None", Doc: "lower bound of an int, float or duration"},
				{Name: "max", Type: "int | float | str | None", Default: "None", Doc: "upper bound of an int, float or duration"},
				{Name: "resumable", Type: "bool | None", Default: "None", Doc: "may `caretaker resume RUN -p` change it after changes were made? (default: durations only)"},
			},
			Check:   checkNoNodes,
			Example: "wait = param(\"wait\", \"30s\", type = \"duration\", min = \"5s\",\n             doc = \"pause between nodes\")",
		},
		{
			Name: "step", When: WhenLoad, Returns: "None",
			Summary: "declare a step: body(node) runs on every target node",
			Doc: "Steps run in the order declared. nodes is a selector: all, servers, agents, group:NAME, " +
				"label:K=V, a node name, or a list of them; a group: or label: selector that matches no node " +
				"is refused when the playbook loads (the message lists the cluster's groups and labels), unless " +
				"allow_empty=True says the step may have no target (it then does nothing). serial=N runs N nodes at a time (0: all at once); " +
				"once=True runs the body once, on the first target node. What the body returns is the step's " +
				"result on that node (result(step, node)).",
			Params: []RefParam{
				{Name: "name", Type: "str", Doc: "unique step name"},
				{Name: "body", Type: "callable", Doc: "a function of one argument, the node"},
				{Name: "nodes", Type: "selector", Default: `"all"`, Doc: "the target nodes"},
				{Name: "serial", Type: "int", Default: "0", Doc: "nodes in flight at once (0: all)"},
				{Name: "once", Type: "bool", Default: "False", Doc: "run once, on the first target node"},
				{Name: "mutates", Type: "bool", Default: "True", Doc: "False: a read-only step (no cluster lock needed for it, shown as such)"},
				{Name: "timeout", Type: "str", Default: `""`, Doc: "a duration per node such as \"5m\" (\"\": none)"},
				{Name: "doc", Type: "str", Default: `""`, Doc: "one line shown in the plan"},
				{Name: "allow_empty", Type: "bool", Default: "False", Doc: "True: a group: or label: selector may match no node (the step does nothing then)"},
			},
			Check:   "Declares only. Under --check the step still runs; the mutating calls in its body report `would ...`.",
			Example: "step(\"restart agents\", restart, nodes = \"label:zone=a\",\n     serial = 1, timeout = \"5m\")",
		},
	}
}

// stepEntries are the Core builtins (core.go).
func stepEntries() []RefEntry {
	return append(stepOutputEntries(), stepStateEntries()...)
}

func stepOutputEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "log", When: WhenAny, Returns: "None",
			Summary: "a line in the node's output (stream log)",
			Doc:     "The arguments are joined with spaces (strings as they are, other values as str() would). At load time it prints like print().",
			Params:  []RefParam{{Name: "args", Type: "any", Variadic: true, Doc: "values to print"}},
			Check:   checkNoNodes,
			Example: `log("restarting", node.name)`,
		},
		{
			Name: "fail", When: WhenAny, Returns: "None",
			Summary: "fail the step on this node with a message",
			Params: []RefParam{{Name: "msg", Type: "str", Doc: "why"},
				{Name: "kind", Type: "str", Default: `""`, Doc: `"drift": the cluster works but needs maintenance (CA drift, expiring certificates); a run whose failures are all drift exits 4`}},
			Check:   checkNoNodes,
			Example: `fail("%s did not come back" % node.name)`,
		},
		{
			Name: "skip", When: WhenStep, Returns: "None",
			Summary: "end the step on this node as skipped",
			Params:  []RefParam{{Name: "reason", Type: "str", Default: `"skipped by the playbook"`, Doc: "shown as the reason"}},
			Check:   checkNoNodes,
			Example: `if node.role == "agent": skip("servers only")`,
		},
		{
			Name: "sleep", When: WhenStep, Returns: "None",
			Summary: "wait; returns early (failing) when the run stops",
			Params:  []RefParam{{Name: "duration", Type: "duration", Doc: "\"5s\", \"2m\" or a number of seconds"}},
			Check:   "Sleeps under --check too.",
			Example: `sleep("10s")`,
		},
		{
			Name: "confirm", When: WhenStep, Returns: "bool",
			Summary: "ask the operator a yes/no question",
			Doc: "The terminal UI shows a modal; --yes answers yes. Without a terminal and without --yes it fails " +
				"at once. destructive=True marks the question as one about a change.",
			Params: []RefParam{
				{Name: "question", Type: "str", Doc: "the question"},
				{Name: "default", Type: "bool", Default: "False", Doc: "the answer Enter gives"},
				{Name: "destructive", Type: "bool", Default: "True", Doc: "the question is about a change"},
			},
			Check:   "Nobody is asked under --check: it returns True.",
			Example: `if not confirm("restart %s?" % node.name): skip("operator said no")`,
		},
		{
			Name: "note", When: WhenStep, Returns: "None",
			Summary: "a line for the run's summary",
			Doc:     "Notes are printed after the run (and sent as note events): backups taken, files to pick up, what to refresh.",
			Params:  []RefParam{{Name: "text", Type: "str", Doc: "the line"}},
			Check:   checkNoNodes,
			Example: `note("backup of %s is in %s" % (node.name, b.local_dir))`,
		},
		{
			Name: "redact", When: WhenStep, Returns: "None",
			Summary: "never show a secret in output, errors, notes or events",
			Params:  []RefParam{{Name: "secret", Type: "str", Doc: "replaced by <redacted> everywhere from now on"}},
			Check:   checkNoNodes,
			Example: `redact(token)`,
		},
	}
}

func stepStateEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "share", When: WhenStep, Returns: "None",
			Summary: "pass a value to later steps and other nodes",
			Doc:     "The value is frozen. shared(key) reads it.",
			Params:  []RefParam{{Name: "key", Type: "str", Doc: "the key"}, {Name: "value", Type: "any", Doc: "the value"}},
			Check:   checkNoNodes,
			Example: `share("ca_path", staged.path)`,
		},
		{
			Name: "shared", When: WhenStep, Returns: "any",
			Summary: "a value share() stored, or a default",
			Params:  []RefParam{{Name: "key", Type: "str", Doc: "the key"}, {Name: "default", Type: "any", Default: "None", Doc: "returned when nothing was shared"}},
			Check:   checkNoNodes,
			Example: `path = shared("ca_path")`,
		},
		{
			Name: "result", When: WhenStep, Returns: "any",
			Summary: "what a step body returned on a node",
			Params: []RefParam{
				{Name: "step", Type: "str", Doc: "the step's name"},
				{Name: "node", Type: "node | str", Doc: "a node value or a node name"},
			},
			Check:   checkNoNodes,
			Example: `facts = result("facts", node)`,
		},
		{
			Name: "nodes", When: WhenAny, Returns: "list[node]",
			Summary: "the run's nodes matching a selector",
			Doc:     "Servers first, then agents, each in inventory order (the order serial steps take them in). While the playbook loads: the nodes the run will have (--limit applied).",
			Params:  []RefParam{{Name: "selector", Type: "selector", Default: `"all"`, Doc: "all, servers, agents, group:NAME, label:K=V, a name, or a list"}},
			Check:   checkNoNodes,
			Example: `for s in nodes("servers"): log(s.name)`,
		},
		{
			Name: "check_mode", When: WhenStep, Returns: "bool",
			Summary: "True under --check",
			Check:   "Returns True under --check.",
			Example: `if check_mode(): log("rehearsal")`,
		},
		{
			Name: "run_id", When: WhenStep, Returns: "str",
			Summary: "the run's ID (as `caretaker runs` lists it)",
			Check:   checkNoNodes,
			Example: `name = "pre-" + run_id()`,
		},
		{
			Name: "struct", When: WhenAny, Returns: "struct",
			Summary: "an immutable struct of the keyword arguments",
			Params:  []RefParam{{Name: "fields", Type: "kwargs", Variadic: true, Doc: "name=value pairs"}},
			Check:   checkNoNodes,
			Example: `return struct(host = lines[0], state = lines[-1])`,
		},
	}
}

func nodeSection() RefSection {
	return RefSection{
		Name:  "node",
		Title: "The node value",
		Class: "Node",
		Doc: "What a step body receives (and nodes() returns): one node of the inventory, with attributes " +
			"describing it and methods that act on it over its SSH connection.",
		Entries: append(nodeAttrEntries(), nodeMethodEntries()...),
	}
}

// nodeAttr is a node attribute's entry.
func nodeAttr(name, typ, summary string) RefEntry {
	return RefEntry{Name: "node." + name, Attr: true, When: WhenAny, Returns: typ, Summary: summary, Check: checkNoNodes}
}

func nodeAttrEntries() []RefEntry {
	return []RefEntry{
		nodeAttr("name", "str", "the node's inventory name"),
		nodeAttr("address", "str", "the address SSH connects to"),
		nodeAttr("role", "str", "server or agent"),
		nodeAttr("cluster", "str", "the name of the node's cluster"),
		nodeAttr("groups", "list[str]", "the node's inventory groups"),
		nodeAttr("labels", "dict[str, str]", "the node's inventory labels"),
		nodeAttr("sudo", "bool", "commands and file writes go through sudo -n"),
		nodeAttr("data_dir", "str", "K3s's data directory (default /var/lib/rancher/k3s)"),
		nodeAttr("server_dir", "str", "data_dir + \"/server\""),
		nodeAttr("config_file", "str", "K3s's config.yaml (drop-ins: config.yaml.d/*.yaml)"),
		nodeAttr("unit_file", "str", "the systemd unit of K3s"),
		nodeAttr("env_files", "list[str]", "the unit's environment files"),
		nodeAttr("service", "str", "the systemd service: k3s or k3s-agent"),
		nodeAttr("kubeconfig", "str", "the admin kubeconfig K3s writes (servers)"),
		nodeAttr("etcd_endpoint", "str", "etcd's client address, dialed from the node through SSH"),
		nodeAttr("supervisor_endpoint", "str", "the supervisor's address (:6443), dialed from the node through SSH"),
	}
}

func nodeMethodEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "node.run", When: WhenStep, Returns: "result",
			Summary: "run a shell command (sh -c) on the node",
			Doc: "A command is assumed to change the node: say changes=False for a read-only one. check=True fails " +
				"the step on a non-zero exit. undo=\"CMD\" records CMD in the journal before cmd runs; `caretaker undo RUN` " +
				"runs it on the node (same sudo): it must be safe whether cmd ran, ran partly or not at all, and hold no secret.",
			Params: []RefParam{
				{Name: "cmd", Type: "str", Doc: "the command line, run with sh -c"},
				{Name: "changes", Type: "bool", Default: "True", Doc: "the command changes the node"},
				{Name: "sudo", Type: "bool | None", Default: "None", Doc: "run through sudo -n (None: the node's sudo setting)"},
				{Name: "check", Type: "bool", Default: "True", Doc: "fail the step on a non-zero exit"},
				{Name: "stdin", Type: "str | None", Default: "None", Doc: "text for the command's standard input"},
				{Name: "timeout", Type: "str", Default: `""`, Doc: "a duration such as \"30s\" (\"\": the inventory's command_timeout)"},
				{Name: "quiet", Type: "bool", Default: "False", Doc: "do not show the command's output"},
				{Name: "undo", Type: "str", Default: `""`, Doc: "a command that reverses this one, for `caretaker undo`"},
			},
			Check: "changes=False commands run for real. The others report `would run ...` and return " +
				"code 0 with empty stdout and stderr (ok=True); undo= reports `would record undo ...`.",
			Example: "r = node.run(\"systemctl is-active \" + node.service,\n             changes = False, check = False)",
		},
		{
			Name: "node.read", When: WhenStep, Returns: "str",
			Summary: "a file's content; fails when it is missing",
			Params:  []RefParam{{Name: "path", Type: "str", Doc: "the file on the node"}},
			Check:   checkReadOnly,
			Example: `cfg = node.read(node.config_file)`,
		},
		{
			Name: "node.write", When: WhenStep, Returns: "bool",
			Summary: "write a file atomically; True if its content changed",
			Doc:     "An existing file keeps its mode and owner. Writing what the file already holds changes nothing. Not undone by `caretaker undo`.",
			Params: []RefParam{
				{Name: "path", Type: "str", Doc: "the file on the node"},
				{Name: "data", Type: "str", Doc: "the new content"},
				{Name: "mode", Type: "int", Default: "0o644", Doc: "the mode of a new file"},
			},
			Check:   "Reports `would write PATH on NODE (N bytes)` and returns True when the content would change (False when it already matches).",
			Example: `node.write("/etc/motd", "managed by caretaker\n")`,
		},
		{
			Name: "node.exists", When: WhenStep, Returns: "bool",
			Summary: "whether a path exists on the node",
			Params:  []RefParam{{Name: "path", Type: "str", Doc: "the path on the node"}},
			Check:   checkReadOnly,
			Example: `if node.exists(node.server_dir + "/token"): ...`,
		},
		{
			Name: "node.stat", When: WhenStep, Returns: "stat | None",
			Summary: "a path's size, mode, mtime and owner, or None",
			Params:  []RefParam{{Name: "path", Type: "str", Doc: "the path on the node"}},
			Check:   checkReadOnly,
			Example: `st = node.stat(node.config_file)`,
		},
	}
}

func jsonSection() RefSection {
	return RefSection{
		Name:   "json",
		Title:  "The json module",
		Module: "json",
		Doc:    "Starlark's json module (go.starlark.net/lib/json).",
		Entries: []RefEntry{
			{
				Name: "json.encode", When: WhenAny, Returns: "str", Summary: "a value as compact JSON",
				Params:  []RefParam{{Name: "x", Type: "any", Positional: true, Doc: "None, bool, int, float, str, list, tuple, dict or struct"}},
				Check:   checkNoNodes,
				Example: `log(json.encode({"node": node.name}))`,
			},
			{
				Name: "json.encode_indent", When: WhenAny, Returns: "str", Summary: "a value as indented JSON",
				Params: []RefParam{
					{Name: "x", Type: "any", Positional: true, Doc: "the value"},
					{Name: "prefix", Type: "str", Default: `""`, KwOnly: true, Doc: "prefix of each new line"},
					{Name: "indent", Type: "str", Default: `"\t"`, KwOnly: true, Doc: "unit of indentation"},
				},
				Check:   checkNoNodes,
				Example: `log(json.encode_indent(r.rows, indent = "  "))`,
			},
			{
				Name: "json.decode", When: WhenAny, Returns: "any", Summary: "parse JSON",
				Params: []RefParam{
					{Name: "x", Type: "str", Positional: true, Doc: "the JSON text"},
					{Name: "default", Type: "any", Default: "...", Doc: "returned instead of failing on bad JSON (when given)"},
				},
				Check:   checkNoNodes,
				Example: "r = node.run(\"k3s kubectl get node -o json\", changes = False)\ninfo = json.decode(r.stdout)",
			},
			{
				Name: "json.indent", When: WhenAny, Returns: "str", Summary: "re-indent JSON text",
				Params: []RefParam{
					{Name: "s", Type: "str", Positional: true, Doc: "the JSON text"},
					{Name: "prefix", Type: "str", Default: `""`, KwOnly: true, Doc: "prefix of each new line"},
					{Name: "indent", Type: "str", Default: `"\t"`, KwOnly: true, Doc: "unit of indentation"},
				},
				Check:   checkNoNodes,
				Example: `log(json.indent(text))`,
			},
		},
	}
}

// coreStructs are the structs of the globals and the node value.
func coreStructs() []RefStruct {
	return []RefStruct{
		{
			Name: "result", Summary: "what node.run returns",
			Fields: []RefField{
				{Name: "code", Type: "int", Doc: "the exit code (0 under --check for a command that changes the node)"},
				{Name: "ok", Type: "bool", Doc: "code == 0"},
				{Name: "stdout", Type: "str", Doc: "standard output"},
				{Name: "stderr", Type: "str", Doc: "standard error"},
			},
		},
		{
			Name: "stat", Summary: "what node.stat returns",
			Fields: []RefField{
				{Name: "path", Type: "str", Doc: "the path"},
				{Name: "size", Type: "int", Doc: "size in bytes"},
				{Name: "mode", Type: "int", Doc: "permission bits (e.g. 0o600)"},
				{Name: "mtime", Type: "float", Doc: "modification time, seconds since the epoch"},
				{Name: "is_dir", Type: "bool", Doc: "a directory"},
				{Name: "uid", Type: "int", Doc: "owner"},
				{Name: "gid", Type: "int", Doc: "group"},
			},
		},
	}
}
