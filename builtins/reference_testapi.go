package builtins

// This file holds the reference entries of the playbook test API: the
// assert module and the fake module of builtins/k3stest (see Reference).

const checkTest = "Test API: check mode does not apply."

var msgParam = RefParam{Name: "msg", Type: "str", Default: `""`, Doc: "prefix of the failure message"}

func assertSection() RefSection {
	return RefSection{
		Name:   "assert",
		Title:  "The assert module",
		Module: "assert",
		Doc: "For playbook tests (*_test.star) and playbooks alike: a failed assertion fails with the message " +
			"and the file:line of the call.",
		Entries: []RefEntry{
			{
				Name: "assert.eq", When: WhenAny, Returns: "None", Summary: "got == want",
				Params:  []RefParam{{Name: "got", Type: "any", Doc: "the value"}, {Name: "want", Type: "any", Doc: "the expected value"}, msgParam},
				Check:   checkTest,
				Example: `assert.eq(r.status, "ok", r.error)`,
			},
			{
				Name: "assert.ne", When: WhenAny, Returns: "None", Summary: "x != y",
				Params:  []RefParam{{Name: "x", Type: "any", Doc: "one value"}, {Name: "y", Type: "any", Doc: "the other"}, msgParam},
				Check:   checkTest,
				Example: `assert.ne(c.disk_ca("server-1"), before)`,
			},
			{
				Name: "assert.true", When: WhenAny, Returns: "None", Summary: "cond is true",
				Params:  []RefParam{{Name: "cond", Type: "any", Doc: "the condition"}, msgParam},
				Check:   checkTest,
				Example: `assert.true("agents/agent-2" not in r.statuses)`,
			},
			{
				Name: "assert.contains", When: WhenAny, Returns: "None", Summary: "x in container",
				Params:  []RefParam{{Name: "container", Type: "any", Doc: "a list, dict or string"}, {Name: "x", Type: "any", Doc: "what it must hold"}, msgParam},
				Check:   checkTest,
				Example: `assert.contains(r.output, "agent-1 | host agent-1")`,
			},
			{
				Name: "assert.fails", When: WhenAny, Returns: "str", Summary: "fn() fails with an error containing pattern; returns the error",
				Params:  []RefParam{{Name: "fn", Type: "callable", Doc: "a function of no arguments"}, {Name: "pattern", Type: "str", Doc: "a substring of the error"}},
				Check:   checkTest,
				Example: `assert.fails(lambda: k3s.rotate_ca("agent-1", "/x"), "is an agent")`,
			},
		},
	}
}

func fakeSection() RefSection {
	entries := []RefEntry{{
		Name: "fake.cluster", When: WhenTest, Returns: "fake_cluster",
		Summary: "a K3s cluster in miniature: files, datastore, restarts, faults",
		Doc: "Nodes are server-1..N and agent-1..M. The fake answers K3s's own commands (k3s, systemctl, " +
			"journalctl, the files under the data dir); another command fails with 127 until cluster.on stubs it.",
		Params: []RefParam{
			{Name: "servers", Type: "int", Default: "3", Doc: "server count"},
			{Name: "agents", Type: "int", Default: "2", Doc: "agent count (0: none)"},
			{Name: "version", Type: "str", Default: `""`, Doc: "every node's K3s version (\"\": v1.30.10+k3s1)"},
			{Name: "scenario", Type: "str", Default: `""`, Doc: "\"init-replaced\" (default: server-1 joins through server-2) or \"cluster-init\""},
			{Name: "secure_token", Type: "bool", Default: "False", Doc: "configure the nodes with K10<hash>::server:<password>"},
			{Name: "server_source", Type: "dict[str, str]", Default: "{}", Doc: "per server, where `server` is set: config, dropin, unit or env"},
			{Name: "node_versions", Type: "dict[str, str]", Default: "{}", Doc: "per node K3s versions"},
			{Name: "bootstrap_bug", Type: "bool", Default: "False", Doc: "servers serve bootstrap data from disk whatever their version (bug #11233)"},
			{Name: "labels", Type: "dict[str, dict[str, str]]", Default: "{}", Doc: "inventory labels per node"},
			{Name: "groups", Type: "dict[str, list[str]]", Default: "{}", Doc: "inventory groups per node"},
			{Name: "leaf_age_days", Type: "dict[str, int]", Default: "{}", Doc: "per node: its leaf certificates look issued that many days ago (expiring 365 days after), as after that long without a restart"},
		},
		Check:   checkTest,
		Example: `c = fake.cluster(servers = 1, agents = 2, labels = {"agent-1": {"zone": "a"}})`,
	}}
	entries = append(entries, clusterRunEntries()...)
	entries = append(entries, clusterLookEntries()...)
	entries = append(entries, clusterK8sEntries()...)
	return RefSection{
		Name:    "fake",
		Title:   "The fake module (playbook tests)",
		Module:  "fake",
		Class:   "FakeCluster",
		Doc:     "Only in *_test.star files run by `caretaker test`: fake.cluster and the methods of the cluster it returns, and fake.b64encode/b64decode.",
		Entries: entries,
	}
}

// clusterNode is the node argument of the cluster methods.
var clusterNode = RefParam{Name: "node", Type: "str", Doc: "a node name (server-1, agent-1, ...)"}

// clusterLook is a cluster method of one node argument.
func clusterLook(name, returns, summary, example string) RefEntry {
	return RefEntry{Name: "cluster." + name, When: WhenTest, Returns: returns, Summary: summary, Params: []RefParam{clusterNode}, Check: checkTest, Example: example}
}

func clusterRunEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "cluster.run", When: WhenTest, Returns: "fake_run",
			Summary: "run a playbook against the cluster (with --yes)",
			Doc:     "The playbook is read from the test's directory first, then from the shipped playbooks.",
			Params: []RefParam{
				{Name: "playbook", Type: "str", Doc: "the playbook's name"},
				{Name: "params", Type: "dict[str, any]", Default: "{}", Doc: "-p values"},
				{Name: "check", Type: "bool", Default: "False", Doc: "run with --check"},
				{Name: "limit", Type: "str", Default: `""`, Doc: "--limit selector"},
			},
			Check:   checkTest,
			Example: `r = c.run("rotate-ca", params = {"workaround": "auto"})`,
		},
		{
			Name: "cluster.call", When: WhenTest, Returns: "fake_call",
			Summary: "run fn(node) as the one step of a run on a node",
			Params: []RefParam{
				{Name: "fn", Type: "callable", Doc: "the step body"},
				{Name: "node", Type: "str", Default: `"server-1"`, Doc: "the node"},
				{Name: "check", Type: "bool", Default: "False", Doc: "run with --check"},
			},
			Check:   checkTest,
			Example: `r = c.call(lambda node: k3s.strip_server(node), node = "server-1")`,
		},
		{
			Name: "cluster.on", When: WhenTest, Returns: "None",
			Summary: "stub commands the fake does not know",
			Doc:     "Every command matching the regular expression gets that output and exit code. Later stubs win.",
			Params: []RefParam{
				{Name: "pattern", Type: "str", Doc: "a regular expression"},
				{Name: "stdout", Type: "str", Default: `""`, Doc: "standard output"},
				{Name: "stderr", Type: "str", Default: `""`, Doc: "standard error"},
				{Name: "code", Type: "int", Default: "0", Doc: "exit code"},
				{Name: "node", Type: "str", Default: `""`, Doc: "only on this node (\"\": every node)"},
			},
			Check:   checkTest,
			Example: `c.on("^touch /var/tmp/", code = 0)`,
		},
		{
			Name: "cluster.fault", When: WhenTest, Returns: "None",
			Summary: "inject a fault: fail-start (K3s does not start) or clear",
			Params:  []RefParam{clusterNode, {Name: "kind", Type: "str", Doc: "fail-start or clear"}},
			Check:   checkTest,
			Example: `c.fault("server-2", "fail-start")`,
		},
		{
			Name: "cluster.write", When: WhenTest, Returns: "None",
			Summary: "write a file on a node (keeps an existing file's mode)",
			Params:  []RefParam{clusterNode, {Name: "path", Type: "str", Doc: "the file"}, {Name: "data", Type: "str", Doc: "its content"}},
			Check:   checkTest,
			Example: `c.write("agent-1", "/etc/motd", "hi\n")`,
		},
		{
			Name: "cluster.password", When: WhenTest, Returns: "str",
			Summary: "the password of the token the datastore is encrypted with now (changes with k3s token rotate)",
			Check:   checkTest, Example: `assert.ne(c.password(), old)`,
		},
		{
			Name: "cluster.controller_file", When: WhenTest, Returns: "str",
			Summary: "write a file on the controller (a -p file parameter) and return its path",
			Params: []RefParam{{Name: "data", Type: "str", Doc: "its content"},
				{Name: "mode", Type: "int", Default: "0o600", Doc: "its permission bits"}},
			Check:   checkTest,
			Example: `f = c.controller_file("New-token-0123456789\n")`,
		},
		{
			Name: "cluster.local", When: WhenTest, Returns: "fake_local | None",
			Summary: "a controller file's content and mode (None when it does not exist)",
			Params:  []RefParam{{Name: "path", Type: "str", Doc: "the file"}},
			Check:   checkTest,
			Example: `assert.eq(c.local(f).mode, 0o600)`,
		},
		{
			Name: "cluster.nodes", Attr: true, When: WhenTest, Returns: "list[str]",
			Summary: "the node names", Check: checkTest, Example: `assert.eq(len(c.nodes), 3)`,
		},
	}
}

func clusterLookEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "cluster.read", When: WhenTest, Returns: "str | None",
			Summary: "a file's content on a node, or None",
			Params:  []RefParam{clusterNode, {Name: "path", Type: "str", Doc: "the file"}},
			Check:   checkTest,
			Example: `cfg = c.read("server-1", "/etc/rancher/k3s/config.yaml")`,
		},
		clusterLook("sources", "dict[str, str]", "the node's config sources: {path: content}", `src = c.sources("server-2")`),
		clusterLook("files", "dict[str, str]", "every file of the node: {path: \"sha256 mode\"}", `before = c.files("server-1")`),
		{
			Name: "cluster.datastore_ca", When: WhenTest, Returns: "str | None",
			Summary: "sha256 of the datastore's server CA", Check: checkTest,
			Example: `assert.eq(c.disk_ca("agent-1"), c.datastore_ca())`,
		},
		clusterLook("disk_ca", "str | None", "sha256 of the server CA on the node's disk (an agent's server-ca.crt)", `assert.eq(c.disk_ca("server-2"), c.datastore_ca())`),
		clusterLook("served_ca", "str | None", "sha256 of what the node's supervisor serves on /cacerts", `assert.eq(c.served_ca("server-1"), c.datastore_ca())`),
		clusterLook("state", "str", "K3s's service state on the node (active, failed, ...)", `assert.eq(c.state("server-2"), "active")`),
		clusterLook("restarts", "int", "how often K3s was restarted on the node", `assert.eq(c.restarts("agent-1"), 1)`),
		clusterLook("reloads", "int", "how often systemd was reloaded on the node", `assert.eq(c.reloads("server-1"), 0)`),
		clusterLook("calls", "list[str]", "the commands run on the node", `assert.contains(c.calls("server-1"), "systemctl daemon-reload")`),
		clusterLook("paths", "fake_paths", "the node's K3s paths", `p = c.paths("server-1")`),
	}
}

// clusterK8sEntries are the fake cluster's Kubernetes API for tests of
// k8s steps, and the base64 helpers its objects need.
func clusterK8sEntries() []RefEntry {
	str := RefParam{Name: "s", Type: "str", Doc: "the string"}
	return []RefEntry{
		{
			Name: "cluster.k8s_apply", When: WhenTest, Returns: "dict",
			Summary: "create or replace one object of the cluster's Kubernetes API; returns it as stored",
			Doc: "The fake cluster's servers serve the lab's simulated Kubernetes API (lab/README.md \"Kubernetes API\"): " +
				"the kinds k8s.* works on, the simulated controllers (kube-root-ca.crt, token Secrets, workload status; " +
				"the annotation lab.caretaker.dev/never-ready: \"true\" keeps a workload's rollout from completing). " +
				"The object is written straight into the cluster's store, as kubectl apply would through any server, also while " +
				"no server runs: apiVersion and kind are required, a namespaced object without a namespace goes to \"default\", " +
				"an existing object is replaced (its status kept; resourceVersion ignored). Fields are as the API has them: " +
				"caBundle and Secret data are base64 (fake.b64encode).",
			Params:  []RefParam{{Name: "obj", Type: "dict", Doc: "the object: apiVersion, kind, metadata, ..."}},
			Check:   checkTest,
			Example: `c.k8s_apply({"apiVersion": "v1", "kind": "Namespace", "metadata": md})`,
		},
		{
			Name: "cluster.k8s_get", When: WhenTest, Returns: "dict | None",
			Summary: "one object of the cluster's Kubernetes API, or None",
			Doc:     "Read straight from the cluster's store. kind as kubectl takes it (\"deployments\", \"deploy\", \"Deployment\").",
			Params: []RefParam{{Name: "kind", Type: "str", Doc: "the kind"}, {Name: "name", Type: "str", Doc: "the object's name"},
				{Name: "namespace", Type: "str", Default: `""`, Doc: "its namespace (\"\" for cluster-scoped kinds)"}},
			Check:   checkTest,
			Example: `d = c.k8s_get("deployments", "web", namespace = "apps")`,
		},
		{
			Name: "fake.b64encode", When: WhenTest, Returns: "str", Summary: "standard base64 of a string",
			Doc: "For the base64 fields of API objects (caBundle, Secret data).", Params: []RefParam{str}, Check: checkTest,
			Example: `cfg = {"caBundle": fake.b64encode(ca_pem)}`,
		},
		{
			Name: "fake.b64decode", When: WhenTest, Returns: "str", Summary: "a base64 string decoded",
			Params: []RefParam{str}, Check: checkTest,
			Example: `assert.contains(fake.b64decode(bundle), new_ca)`,
		},
	}
}

// fakeStructs are the structs of the fake module.
func fakeStructs() []RefStruct {
	return []RefStruct{
		{Name: "fake_cluster", Summary: "what fake.cluster returns; its methods are the cluster.* entries"},
		{Name: "fake_run", Summary: "what cluster.run returns", Fields: []RefField{
			{Name: "status", Type: "str", Doc: "ok, failed or aborted (error: the playbook did not load)"},
			{Name: "error", Type: "str", Doc: "why it failed, with the first failure"},
			{Name: "statuses", Type: "dict[str, str]", Doc: "\"step/node\" → ok, changed, skipped or failed"},
			{Name: "errors", Type: "dict[str, str]", Doc: "\"step/node\" → error or skip reason"},
			{Name: "kinds", Type: "dict[str, str]", Doc: "\"step/node\" → the kind of a failure: drift, unreachable, timeout, ..."},
			{Name: "output", Type: "list[str]", Doc: "output lines, \"node | text\""},
			{Name: "notes", Type: "list[str]", Doc: "the run's notes"},
		}},
		{Name: "fake_call", Summary: "what cluster.call returns", Fields: []RefField{
			{Name: "status", Type: "str", Doc: "ok, changed, skipped or failed"},
			{Name: "value", Type: "any", Doc: "what fn returned"},
			{Name: "error", Type: "str", Doc: "the error or skip reason"},
			{Name: "output", Type: "list[str]", Doc: "output lines, \"node | text\""},
			{Name: "notes", Type: "list[str]", Doc: "the run's notes"},
		}},
		{Name: "fake_local", Summary: "what cluster.local returns", Fields: []RefField{
			{Name: "data", Type: "str", Doc: "the file's content"},
			{Name: "mode", Type: "int", Doc: "its permission bits"},
		}},
		{Name: "fake_paths", Summary: "what cluster.paths returns", Fields: []RefField{
			{Name: "data_dir", Type: "str", Doc: "K3s's data directory"},
			{Name: "server_dir", Type: "str", Doc: "data_dir/server"},
			{Name: "config_file", Type: "str", Doc: "config.yaml"},
			{Name: "unit_file", Type: "str", Doc: "the systemd unit"},
			{Name: "env_file", Type: "str", Doc: "the unit's environment file"},
		}},
	}
}
