package builtins

import (
	"reflect"

	"github.com/caretaker/caretaker/builtins/k8sops"
)

// This file holds the reference entries of the k8s module and its result
// structs (see Reference).

// serverParam is the optional server the API is reached through.
var serverParam = RefParam{Name: "node", Type: "node | str | None", Default: "None",
	Doc: "the server to go through (None: the step's node when it is a server, else the first server that answers)"}

// kindParam is the kind argument of the object builtins.
var kindParam = RefParam{Name: "kind", Type: "str",
	Doc: "as kubectl takes it: \"deployments\", \"deployment\", \"deploy\", \"Deployment\", \"apiservices.apiregistration.k8s.io\""}

// previousRootsParam is the previous roots the trust builtins take.
var previousRootsParam = RefParam{Name: "previous_roots", Type: "list[str]", Default: "[]",
	Doc: "sha256 of the roots before the rotation (k3s.datastore().server_ca.roots taken before it); the previous roots a cross-signed bundle still holds are found without it"}

// expectParam makes the trust builtins plan in check mode.
var expectParam = RefParam{Name: "expect", Type: "str", Default: `""`,
	Doc: "the sha256 of the server CA bundle the rotation goes to: while the servers do not hold it yet (--check), everything is judged as it will be after the rotation"}

func k8sSection() RefSection {
	return RefSection{
		Name:   "k8s",
		Title:  "The k8s module",
		Module: "k8s",
		Doc: "The Kubernetes API of the run's cluster, as its admin: a server's own admin client certificate " +
			"(SD/tls/client-admin.*, held in memory, never written), through that server's SSH connection to its " +
			":6443. Changes go through check mode and record their undo first (a merge patch that puts back what " +
			"they replaced); rollout restarts cannot be undone and record nothing.",
		Entries: append(k8sObjectEntries(), k8sTrustEntries()...),
	}
}

func k8sObjectEntries() []RefEntry {
	ns := RefParam{Name: "namespace", Type: "str", Default: `""`, Doc: "the namespace (\"\" for cluster-scoped kinds)"}
	return []RefEntry{
		{
			Name: "k8s.get", When: WhenStep, Returns: "dict | None",
			Params:  []RefParam{kindParam, {Name: "name", Type: "str", Doc: "the object's name"}, ns, serverParam},
			Summary: "one API object as a dict, or None when it does not exist",
			Check:   checkReadOnly,
			Example: "d = k8s.get(\"deployments\", \"web\", namespace = \"shop\")\nif d: log(d[\"status\"][\"readyReplicas\"])",
		},
		{
			Name: "k8s.list", When: WhenStep, Returns: "list[dict]",
			Params: []RefParam{kindParam, {Name: "namespace", Type: "str", Default: `""`, Doc: "one namespace (\"\": every namespace)"},
				{Name: "selector", Type: "str", Default: `""`, Doc: "a label selector (\"app=web\", \"tier in (a,b)\")"}, serverParam},
			Summary: "the objects of a kind, sorted by namespace and name",
			Check:   checkReadOnly,
			Example: "for s in k8s.list(\"secrets\", namespace = \"kube-system\"):\n    log(s[\"metadata\"][\"name\"])",
		},
		{
			Name: "k8s.patch", When: WhenStep, Returns: "patch",
			Params: []RefParam{kindParam, {Name: "name", Type: "str", Doc: "the object's name"},
				{Name: "patch", Type: "dict | str", Doc: "the patch, a dict or a JSON string"}, ns,
				{Name: "type", Type: "str", Default: `"strategic"`, Doc: "\"strategic\" (strategic merge patch, built-in kinds) or \"merge\" (JSON merge patch)"}, serverParam},
			Summary: "patch one object; its undo is recorded first",
			Doc: "The undo is a merge patch that puts back every value the patch sets (lists whole). A patch that " +
				"would change nothing is not sent (changed=False).",
			Check:   "Reports `would patch KIND NS/NAME: PATCH` and changes nothing.",
			Example: "k8s.patch(\"configmaps\", \"settings\", {\"data\": {\"mode\": \"safe\"}},\n          namespace = \"shop\", type = \"merge\")",
		},
		{
			Name: "k8s.rollout_restart", When: WhenStep, Returns: "None",
			Params:  []RefParam{kindParam, {Name: "name", Type: "str", Doc: "the workload"}, {Name: "namespace", Type: "str", Doc: "its namespace"}, serverParam},
			Summary: "restart a Deployment, DaemonSet or StatefulSet as `kubectl rollout restart` does",
			Doc:     "Sets the pod template's kubectl.kubernetes.io/restartedAt annotation to now. Not undoable.",
			Check:   "Reports `would restart KIND NS/NAME (rollout restart)`.",
			Example: "k8s.rollout_restart(\"deployments\", \"web\", \"shop\")\nk8s.rollout_status(\"deployments\", \"web\", \"shop\", timeout = \"2m\")",
		},
		{
			Name: "k8s.rollout_status", When: WhenStep, Returns: "rollout",
			Params: []RefParam{kindParam, {Name: "name", Type: "str", Doc: "the workload"}, {Name: "namespace", Type: "str", Doc: "its namespace"},
				{Name: "timeout", Type: "duration", Default: `"5m"`, Doc: "how long to wait"},
				{Name: "fail", Type: "bool", Default: "True", Doc: "fail the step when it is not rolled out in time"}, serverParam},
			Summary: "wait for a rollout as `kubectl rollout status` does",
			Doc:     "Done when the controller observed the latest generation and every replica is updated and available.",
			Check:   checkReadOnly,
			Example: "st = k8s.rollout_status(\"daemonsets\", \"agent\", \"kube-system\", fail = False)\nlog(st.message)",
		},
		{
			Name: "k8s.restart_workloads", When: WhenStep, Returns: "workloads",
			Params: []RefParam{
				{Name: "namespaces", Type: "str | list[str]", Doc: "namespaces (comma-separated or a list; \"*\" for every namespace)"},
				{Name: "selector", Type: "str", Default: `""`, Doc: "a label selector the workloads must match"},
				{Name: "kinds", Type: "str | list[str] | None", Default: "None", Doc: "workload kinds (None: deployments, daemonsets, statefulsets)"},
				{Name: "wave", Type: "int", Default: "5", Doc: "workloads restarted at once"},
				{Name: "max_unready", Type: "int", Default: "0", Doc: "workloads of a wave that may fail to become ready before the restart stops"},
				{Name: "timeout", Type: "duration", Default: `"5m"`, Doc: "how long one wave may take to become ready"},
				serverParam,
			},
			Summary: "restart workloads in waves, stopping at the first wave that does not become ready",
			Doc: "Each wave's workloads are restarted at once (rollout restart), then their rollouts awaited; a wave in " +
				"which more than max_unready workloads are not ready within timeout stops the restart: the later waves " +
				"are not touched, and the step fails naming them. Selecting nothing is an error.",
			Check:   "Reports `would restart KIND NS/NAME` for every selected workload, in its wave; waits for nothing.",
			Example: "r = k8s.restart_workloads(\"shop,payments\", selector = \"tier=web\", wave = 3)\nlog(\"%d ready\" % len(r.ready))",
		},
	}
}

func k8sTrustEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "k8s.trust", When: WhenStep, Returns: "trust",
			Params: []RefParam{previousRootsParam, expectParam,
				{Name: "update_ca_bundles", Type: "bool", Default: "False", Doc: "append the current CA bundle to webhook, APIService and CRD conversion caBundles that trust only the previous root"},
				{Name: "refresh_token_secrets", Type: "bool", Default: "False", Doc: "set ca.crt of service-account token Secrets that trust only the previous root to the current server CA bundle"},
				{Name: "quiet", Type: "bool", Default: "False", Doc: "do not print the table"}, serverParam},
			Summary: "the cluster's trust bundles judged against the current and previous roots",
			Doc: "Lists every caBundle of validating and mutating webhook configurations, APIServices and CRD conversion " +
				"webhooks, ca.crt of service-account token Secrets and the kube-root-ca.crt ConfigMaps that holds a " +
				"root of the cluster's server CA, as \"old root only\", \"old and new\" or \"new root\". Bundles of " +
				"other CAs are left out. kube-root-ca.crt is never changed (the controller manager rewrites it).",
			Check:   "Reads for real; the refreshes report `would update FIELD of KIND NAME`. With expect, before the rotation, it lists what would trust only the old root after it.",
			Example: "t = k8s.trust(previous_roots = shared(\"old_roots\"))\nif t.old_only: note(\"%d stale trust bundles\" % t.old_only)",
		},
		{
			Name: "k8s.refresh_kubeconfigs", When: WhenStep, Returns: "list[kubeconfig]",
			Params:  []RefParam{previousRootsParam, expectParam, serverParam},
			Summary: "rewrite the inventory's kubeconfigs that trust only the previous root",
			Doc: "The files of the cluster's `kubeconfigs:` in the inventory (on the controller). A cluster entry that " +
				"trusts only the previous root gets the current server CA bundle; a K3s admin user (O=system:masters) " +
				"whose client certificate is of the previous client CA gets the server's current admin certificate. " +
				"Each rewritten file is proven with GET /version (directly, else through SSH) before it is written; the " +
				"original is copied to the run's backup dir (0600) and the undo recorded first; the write is atomic and " +
				"keeps mode and owner. Returns [] when the inventory lists none.",
			Check:   "Reports `would rewrite FILE`; writes nothing.",
			Example: "for k in k8s.refresh_kubeconfigs():\n    log(k.path, k.status)",
		},
		{
			Name: "k8s.selector", When: WhenAny, Returns: "str",
			Params:  []RefParam{{Name: "s", Type: "str", Doc: "a label selector"}},
			Summary: "a label selector, checked (a bad one is an error, also when the playbook loads)",
			Check:   checkNoNodes,
			Example: "sel = param(\"selector\", \"\")\nif sel: k8s.selector(sel)",
		},
	}
}

func k8sStructs() []RefStruct {
	return []RefStruct{
		{Name: "patch", Summary: "what k8s.patch returns", goType: reflect.TypeFor[k8sops.PatchResult](), Fields: []RefField{
			{Name: "kind", Doc: "the kind, as kubectl names it"}, {Name: "namespace", Doc: "the namespace"}, {Name: "name", Doc: "the name"},
			{Name: "changed", Doc: "the patch was sent (False: the object already had its values, or check mode)"},
			{Name: "object", Doc: "the object after the patch"},
		}},
		{Name: "rollout", Summary: "a workload's rollout progress", goType: reflect.TypeFor[k8sops.RolloutState](), Fields: []RefField{
			{Name: "kind", Doc: "the kind"}, {Name: "namespace", Doc: "the namespace"}, {Name: "name", Doc: "the name"},
			{Name: "done", Doc: "the rollout is complete"},
			{Name: "message", Doc: "what it waits for, as kubectl rollout status says it"},
		}},
		{Name: "workloads", Summary: "what k8s.restart_workloads did", goType: reflect.TypeFor[k8sops.WorkloadsResult](), Fields: []RefField{
			{Name: "selected", Doc: "the workloads selected, \"KIND NS/NAME\", in restart order"},
			{Name: "restarted", Doc: "those restarted"},
			{Name: "ready", Doc: "those whose rollout completed"},
			{Name: "not_ready", Doc: "the workloads of the wave that stopped the restart"},
			{Name: "not_restarted", Doc: "the workloads left alone after a wave stopped it"},
			{Name: "waves", Doc: "waves started"},
			{Name: "stopped", Doc: "a wave stopped the restart"},
			{Name: "planned", Doc: "check mode: nothing was restarted"},
		}},
		{Name: "trust", Summary: "what k8s.trust returns", goType: reflect.TypeFor[k8sops.TrustReport](), Fields: []RefField{
			{Name: "current_root", Doc: "sha256 of the root the servers' CA bundle chains to now"},
			{Name: "items", Doc: "every trust bundle that holds a cluster root"},
			{Name: "old_only", Doc: "how many trust only the previous root"},
			{Name: "table", Doc: "the items as a table, stale ones first"},
			{Name: "planned", Doc: "judged as it will be after the rotation (check mode)"},
		}},
		{Name: "trust_item", Summary: "one trust bundle", goType: reflect.TypeFor[k8sops.TrustItem](), Fields: []RefField{
			{Name: "kind", Doc: "the object's kind"}, {Name: "namespace", Doc: "its namespace"}, {Name: "name", Doc: "its name"},
			{Name: "field", Doc: "where the bundle is, e.g. webhooks[name=x].clientConfig.caBundle"},
			{Name: "status", Doc: "\"old root only\", \"old and new\" or \"new root\""},
			{Name: "fixed", Doc: "what was done about it (\"\" when nothing; \"would ...\" in check mode)"},
		}},
		{Name: "kubeconfig", Summary: "one kubeconfig file of the inventory", goType: reflect.TypeFor[k8sops.KubeconfigResult](), Fields: []RefField{
			{Name: "path", Doc: "the file on the controller"},
			{Name: "status", Doc: "current, rewritten, would rewrite, not this cluster or failed"},
			{Name: "clusters", Doc: "its cluster entries that trusted only the previous root"},
			{Name: "users", Doc: "admin users given the server's current admin certificate"},
			{Name: "backup", Doc: "the copy of the file before it was rewritten (0600)"},
			{Name: "proof", Doc: "how the rewritten file was proven against the API"},
			{Name: "error", Doc: "why it failed"},
		}},
	}
}
