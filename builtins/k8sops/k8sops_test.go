package k8sops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// testRun is a k3sops.Run for unit tests: it records output, undo records
// and whether something changed; check says whether Wet runs changes.
type testRun struct {
	check   bool
	mu      sync.Mutex
	out     []string
	undos   []string
	changed bool
}

func (r *testRun) Wet(what string, fn func() error) error {
	if r.check {
		r.Output("check", "would "+what)
		return nil
	}
	return fn()
}
func (r *testRun) CheckStop() error { return nil }
func (r *testRun) RunCommand(context.Context, transport.Executor, *inventory.Node, transport.Command, bool, bool) (transport.Result, string, string, error) {
	return transport.Result{}, "", "", fmt.Errorf("no commands in these tests")
}
func (r *testRun) Output(stream, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out = append(r.out, stream+": "+text)
}
func (r *testRun) Note(string)   {}
func (r *testRun) Redact(string) {}
func (r *testRun) MarkChanged()  { r.mu.Lock(); r.changed = true; r.mu.Unlock() }
func (r *testRun) Undo(kind string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.undos = append(r.undos, kind+" "+string(data))
	return nil
}
func (r *testRun) Executor(context.Context, *inventory.Node) (transport.Executor, error) {
	return nil, fmt.Errorf("no executors in these tests")
}
func (r *testRun) ResolveUndo(string, string) {}
func (r *testRun) Nodes() []*inventory.Node   { return nil }
func (r *testRun) RunID() string              { return "run-1" }
func (r *testRun) StateDir() string           { return "/nonexistent-state" }

// kinds are the resources of the fake API.
var kinds = []struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
}{
	{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "Deployment", true},
	{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, "DaemonSet", true},
	{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}, "StatefulSet", true},
	{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "Secret", true},
	{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "ConfigMap", true},
	{schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}, "ValidatingWebhookConfiguration", false},
	{schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}, "MutatingWebhookConfiguration", false},
	{schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}, "APIService", false},
	{schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, "CustomResourceDefinition", false},
}

// newTestClient is a Client over a fake API holding objs.
func newTestClient(t *testing.T, run *testRun, objs ...*unstructured.Unstructured) *Client {
	t.Helper()
	listKinds := map[schema.GroupVersionResource]string{}
	var gvs []schema.GroupVersion
	for _, k := range kinds {
		listKinds[k.gvr] = k.kind + "List"
		gvs = append(gvs, k.gvr.GroupVersion())
	}
	mapper := meta.NewDefaultRESTMapper(gvs)
	for _, k := range kinds {
		scope := meta.RESTScopeRoot
		if k.namespaced {
			scope = meta.RESTScopeNamespace
		}
		singular := k.gvr.GroupVersion().WithResource(strings.ToLower(k.kind))
		mapper.AddSpecific(k.gvr.GroupVersion().WithKind(k.kind), k.gvr, singular, scope)
	}
	var ros []runtime.Object
	for _, o := range objs {
		ros = append(ros, o)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, ros...)
	server := &k3sops.Target{Run: run, Node: &inventory.Node{Name: "server-1", Role: inventory.RoleServer}, Op: "k8s.test"}
	return &Client{Server: server, Dynamic: dyn, mapper: mapper}
}

func obj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	o := map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{"name": name}}
	if ns != "" {
		o["metadata"].(map[string]any)["namespace"] = ns
	}
	for k, v := range fields {
		o[k] = v
	}
	return &unstructured.Unstructured{Object: o}
}

func TestResolveKindAsKubectl(t *testing.T) {
	cl := newTestClient(t, &testRun{})
	for in, want := range map[string]string{
		"deployments": "deployments.apps", "deployment": "deployments.apps", "Deployment": "deployments.apps",
		"deployments.apps": "deployments.apps", "deployments.v1.apps": "deployments.apps", "secrets": "secrets",
		"apiservices.apiregistration.k8s.io": "apiservices.apiregistration.k8s.io",
	} {
		k, err := cl.ResolveKind(in)
		if err != nil || k.String() != want {
			t.Errorf("ResolveKind(%q) = %v, %v; want %s", in, k, err, want)
		}
	}
	if _, err := cl.ResolveKind("deploymnets"); err == nil || !strings.Contains(err.Error(), "api-resources") {
		t.Errorf("an unknown kind: %v", err)
	}
}

func TestPatchRecordsItsUndoAndSkipsNoOps(t *testing.T) {
	run := &testRun{}
	cm := obj("v1", "ConfigMap", "default", "app", map[string]any{"data": map[string]any{"a": "1", "b": "2"}})
	cl := newTestClient(t, run, cm)
	ctx := context.Background()
	res, err := cl.Patch(ctx, "configmaps", "default", "app", []byte(`{"data":{"a":"9","c":"3"}}`), PatchMerge)
	if err != nil || !res.Changed {
		t.Fatalf("patch: %+v %v", res, err)
	}
	got, _ := cl.Get(ctx, "configmaps", "default", "app")
	if d := got["data"].(map[string]any); d["a"] != "9" || d["b"] != "2" || d["c"] != "3" {
		t.Errorf("after the patch: %v", d)
	}
	if len(run.undos) != 1 || !strings.Contains(run.undos[0], `"patch":{"data":{"a":"1","c":null}}`) {
		t.Fatalf("undo record: %v", run.undos)
	}
	res, err = cl.Patch(ctx, "configmaps", "default", "app", []byte(`{"data":{"a":"9"}}`), PatchMerge)
	if err != nil || res.Changed || len(run.undos) != 1 {
		t.Errorf("a patch that changes nothing: %+v %v, undos %d", res, err, len(run.undos))
	}
	run.check = true
	if _, err := cl.Patch(ctx, "configmaps", "default", "app", []byte(`{"data":{"a":"0"}}`), PatchMerge); err != nil {
		t.Fatal(err)
	}
	got, _ = cl.Get(ctx, "configmaps", "default", "app")
	if got["data"].(map[string]any)["a"] != "9" || !strings.Contains(strings.Join(run.out, "\n"), "would patch configmaps default/app") {
		t.Errorf("check mode changed the object or said nothing: %v %v", got["data"], run.out)
	}
	for _, bad := range []struct{ kind, ns, typ, want string }{
		{"configmaps", "", PatchMerge, "namespaced: give namespace="},
		{"validatingwebhookconfigurations", "x", PatchMerge, "cluster-scoped"},
		{"configmaps", "default", "json", "patch type"},
	} {
		if _, err := cl.Patch(ctx, bad.kind, bad.ns, "app", []byte(`{}`), bad.typ); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Patch(%s, %q, %s): %v, want %q", bad.kind, bad.ns, bad.typ, err, bad.want)
		}
	}
}

func TestRolloutProgressAsKubectl(t *testing.T) {
	dep := func(gen, observed, replicas, updated, total, avail int64) *unstructured.Unstructured {
		u := obj("apps/v1", "Deployment", "web", "d", map[string]any{
			"spec":   map[string]any{"replicas": replicas},
			"status": map[string]any{"observedGeneration": observed, "updatedReplicas": updated, "replicas": total, "availableReplicas": avail},
		})
		u.SetGeneration(gen)
		return u
	}
	for _, c := range []struct {
		name string
		u    *unstructured.Unstructured
		done bool
		msg  string
	}{
		{"not observed", dep(3, 2, 2, 2, 2, 2), false, "observe generation 3"},
		{"updating", dep(3, 3, 3, 1, 3, 3), false, "1 updated"},
		{"old pending", dep(3, 3, 2, 2, 3, 2), false, "old replicas are pending termination"},
		{"unavailable", dep(3, 3, 2, 2, 2, 1), false, "1 of 2 updated replicas are available"},
		{"done", dep(3, 3, 2, 2, 2, 2), true, "successfully rolled out"},
		{"zero replicas", dep(1, 1, 0, 0, 0, 0), true, "successfully rolled out"},
	} {
		msg, done := rolloutProgress(c.u)
		if done != c.done || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: %q %v; want %q %v", c.name, msg, done, c.msg, c.done)
		}
	}
}

// workloads makes n Deployments in ns; notReady ones never finish.
func workloads(ns string, n int, labels map[string]any, notReady ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("d%d", i)
		ready := int64(1)
		for _, x := range notReady {
			if x == name {
				ready = 0
			}
		}
		u := obj("apps/v1", "Deployment", ns, name, map[string]any{
			"spec":   map[string]any{"replicas": int64(1), "template": map[string]any{"metadata": map[string]any{}}},
			"status": map[string]any{"observedGeneration": int64(1), "updatedReplicas": int64(1), "replicas": int64(1), "availableReplicas": ready},
		})
		u.SetGeneration(1)
		u.SetLabels(map[string]string{})
		for k, v := range labels {
			l := u.GetLabels()
			l[k] = v.(string)
			u.SetLabels(l)
		}
		out = append(out, u)
	}
	return out
}

func restartedAt(t *testing.T, cl *Client, ns, name string) string {
	t.Helper()
	got, err := cl.Get(context.Background(), "deployments", ns, name)
	if err != nil || got == nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	v, _, _ := unstructured.NestedString(got, "spec", "template", "metadata", "annotations", RestartedAtAnnotation)
	return v
}

func TestRestartWorkloadsInWavesStopsAtAWaveThatIsNotReady(t *testing.T) {
	objs := append(workloads("web", 5, map[string]any{"tier": "web"}, "d3"), workloads("db", 1, map[string]any{"tier": "db"})...)
	cl := newTestClient(t, &testRun{}, objs...)
	now := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	res, err := cl.RestartWorkloads(context.Background(), WorkloadSelection{Namespaces: []string{"web", "db"}, Selector: "tier=web"},
		WaveOptions{Wave: 2, Timeout: time.Second, Now: now})
	if err == nil || !strings.Contains(err.Error(), "wave 2 did not become ready") || !strings.Contains(err.Error(), "web/d3") {
		t.Fatalf("want wave 2 to stop the restart, got %v", err)
	}
	if !res.Stopped || len(res.Restarted) != 4 || len(res.NotRestarted) != 1 || res.NotRestarted[0] != "deployments.apps web/d5" {
		t.Errorf("result: %+v", res)
	}
	for name, want := range map[string]string{"d1": now.Format(time.RFC3339), "d4": now.Format(time.RFC3339), "d5": ""} {
		if got := restartedAt(t, cl, "web", name); got != want {
			t.Errorf("web/%s restartedAt = %q, want %q", name, got, want)
		}
	}
	if got := restartedAt(t, cl, "db", "d1"); got != "" {
		t.Errorf("db/d1 does not match the selector but was restarted (%s)", got)
	}
	// One unready workload is tolerated with max_unready=1.
	res, err = cl.RestartWorkloads(context.Background(), WorkloadSelection{Namespaces: []string{"*"}, Selector: "tier=web"},
		WaveOptions{Wave: 2, MaxUnready: 1, Timeout: time.Second, Now: now})
	if err != nil || res.Waves != 3 || len(res.Ready) != 4 {
		t.Errorf("max_unready=1: %+v %v", res, err)
	}
	if _, err := cl.RestartWorkloads(context.Background(), WorkloadSelection{Namespaces: []string{"web"}, Selector: "tier=typo"}, WaveOptions{}); err == nil || !strings.Contains(err.Error(), "nothing to restart") {
		t.Errorf("a selection of nothing: %v", err)
	}
}

func TestRestartWorkloadsInCheckModeRestartsNothing(t *testing.T) {
	run := &testRun{check: true}
	cl := newTestClient(t, run, workloads("web", 3, nil)...)
	res, err := cl.RestartWorkloads(context.Background(), WorkloadSelection{Namespaces: []string{"web"}}, WaveOptions{Wave: 2})
	if err != nil || !res.Planned || len(res.Restarted) != 0 || res.Waves != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	if restartedAt(t, cl, "web", "d1") != "" || !strings.Contains(strings.Join(run.out, "\n"), "would restart deployments.apps web/d3") {
		t.Errorf("check mode: %v", run.out)
	}
}

// rotation is a cluster CA before and after a cross-signed rotation, and
// an unrelated CA.
type rotation struct{ oldBundle, newBundle, other []byte }

func newRotation(t *testing.T) rotation {
	t.Helper()
	now := time.Now()
	cur, err := k3s.GenerateClusterCAs(now.Add(-time.Hour), "pw")
	if err != nil {
		t.Fatal(err)
	}
	staged, err := k3s.GenerateRotation(cur, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := k3s.GenerateClusterCAs(now, "x")
	if err != nil {
		t.Fatal(err)
	}
	return rotation{oldBundle: cur[k3s.PathServerCA], newBundle: staged[k3s.PathServerCA], other: other[k3s.PathServerCA]}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestRootsJudgeABundle(t *testing.T) {
	rot := newRotation(t)
	roots, err := RootsFrom(rot.newBundle, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldRoot, _ := k3s.RootsOf(rot.oldBundle)
	if !roots.Previous[oldRoot.Current] {
		t.Fatalf("the cross-signed bundle's previous roots %v lack the old root %s", roots.Previous, oldRoot.Current)
	}
	for name, c := range map[string]struct {
		bundle []byte
		want   string
	}{
		"old bundle":       {rot.oldBundle, TrustOldOnly},
		"new bundle":       {rot.newBundle, TrustBoth},
		"merged":           {roots.Merged(rot.oldBundle), TrustBoth},
		"unrelated":        {rot.other, ""},
		"garbage":          {[]byte("not pem"), ""},
		"new without old":  {newOnly(t, rot.newBundle, oldRoot.Current), TrustNew},
		"other and merged": {roots.Merged(rot.other), TrustBoth}, // the cross-signed bundle holds the old root too
	} {
		if got := roots.Judge(c.bundle); got != c.want {
			t.Errorf("%s: %q, want %q", name, got, c.want)
		}
	}
	planned, err := PlannedRoots(rot.oldBundle)
	if err != nil || planned.Judge(rot.oldBundle) != TrustOldOnly || !planned.Planned {
		t.Errorf("planned: %v %v", planned, err)
	}
}

// newOnly is bundle without the certificate whose sha256 is drop.
func newOnly(t *testing.T, bundle []byte, drop string) []byte {
	certs, err := k3s.ParseCertsPEM(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, c := range certs {
		if k3s.CertSHA256(c) != drop {
			out = append(out, pemOf(c)...)
		}
	}
	return out
}

func TestTrustFindsBundlesThatTrustOnlyTheOldRoot(t *testing.T) {
	rot := newRotation(t)
	hook := func(kind, name string, bundle []byte) *unstructured.Unstructured {
		return obj("admissionregistration.k8s.io/v1", kind, "", name, map[string]any{"webhooks": []any{
			map[string]any{"name": "a.example.com", "clientConfig": map[string]any{"caBundle": b64(bundle)}},
		}})
	}
	objs := []*unstructured.Unstructured{
		hook("ValidatingWebhookConfiguration", "stale-hook", rot.oldBundle),
		hook("MutatingWebhookConfiguration", "own-ca-hook", rot.other),
		obj("apiregistration.k8s.io/v1", "APIService", "", "v1beta1.metrics.k8s.io", map[string]any{"spec": map[string]any{"caBundle": b64(rot.oldBundle)}}),
		obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.example.com", map[string]any{"spec": map[string]any{"conversion": map[string]any{
			"strategy": "Webhook", "webhook": map[string]any{"clientConfig": map[string]any{"caBundle": b64(rot.newBundle)}}}}}),
		obj("v1", "Secret", "app", "legacy-token", map[string]any{"type": "kubernetes.io/service-account-token", "data": map[string]any{"ca.crt": b64(rot.oldBundle)}}),
		obj("v1", "Secret", "app", "tls", map[string]any{"type": "kubernetes.io/tls", "data": map[string]any{"ca.crt": b64(rot.oldBundle)}}),
		obj("v1", "ConfigMap", "app", "kube-root-ca.crt", map[string]any{"data": map[string]any{"ca.crt": string(rot.newBundle)}}),
	}
	run := &testRun{}
	cl := newTestClient(t, run, objs...)
	roots, _ := RootsFrom(rot.newBundle, nil)
	ctx := context.Background()
	rep, err := cl.Trust(ctx, roots)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range rep.Items {
		got[it.Kind+" "+qualified(it.Namespace, it.Name)] = it.Status
	}
	want := map[string]string{
		"validatingwebhookconfigurations.admissionregistration.k8s.io stale-hook": TrustOldOnly,
		"apiservices.apiregistration.k8s.io v1beta1.metrics.k8s.io":               TrustOldOnly,
		"customresourcedefinitions.apiextensions.k8s.io widgets.example.com":      TrustBoth,
		"secrets app/legacy-token":        TrustOldOnly,
		"configmaps app/kube-root-ca.crt": TrustBoth,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || rep.OldOnly != 3 {
		t.Fatalf("trust items:\n got %v\nwant %v (old only %d)", got, want, rep.OldOnly)
	}
	if !strings.HasPrefix(strings.Split(rep.Table, "\n")[1], TrustOldOnly) {
		t.Errorf("the table does not list the stale bundles first:\n%s", rep.Table)
	}
	// Only webhooks, APIServices and CRDs are refreshed when only those are asked for.
	if err := cl.RefreshTrust(ctx, roots, rep, RefreshOptions{CABundles: true}); err != nil {
		t.Fatal(err)
	}
	after, _ := cl.Trust(ctx, roots)
	for _, it := range after.Items {
		wantStatus := TrustBoth
		if it.Kind == "secrets" {
			wantStatus = TrustOldOnly
		}
		if it.Status != wantStatus {
			t.Errorf("after the refresh %s %s: %s, want %s", it.Kind, it.Name, it.Status, wantStatus)
		}
	}
	if len(run.undos) != 2 || !strings.Contains(run.undos[0]+run.undos[1], `"webhooks":[{"clientConfig":{"caBundle":"`+b64(rot.oldBundle)) {
		t.Errorf("undo records: %v", run.undos)
	}
	// The legacy token Secret gets the current bundle when asked.
	if err := cl.RefreshTrust(ctx, roots, after, RefreshOptions{TokenSecrets: true}); err != nil {
		t.Fatal(err)
	}
	sec, _ := cl.Get(ctx, "secrets", "app", "legacy-token")
	var data map[string]string
	raw, _ := json.Marshal(sec["data"])
	_ = json.Unmarshal(raw, &data)
	if data["ca.crt"] != b64(rot.newBundle) {
		t.Errorf("the token Secret's ca.crt was not set to the new bundle")
	}
}
