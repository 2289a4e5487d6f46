package lab_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// TestKubeAPI drives the simulated Kubernetes API with client-go as
// caretaker's k8s module does: typed clientset, discovery, a dynamic
// client through a RESTMapper. Needs root (the lab).
func TestKubeAPI(t *testing.T) {
	l := labtest.Start(t, lab.Options{Servers: 3, Agents: 1, Version: "v1.32.3+k3s1", RestartDelay: 200 * time.Millisecond})
	cs := clientset(t, kubeConfig(t, l, "server-1", "admin"))
	t.Run("discovery and RESTMapper", func(t *testing.T) { testKubeDiscovery(t, l) })
	t.Run("default namespaces", func(t *testing.T) { testKubeDefaults(t, l, cs) })
	t.Run("deployment rollout", func(t *testing.T) { testKubeDeploymentRollout(t, l, cs) })
	t.Run("dynamic client", func(t *testing.T) { testKubeDynamic(t, l) })
	t.Run("errors", func(t *testing.T) { testKubeErrors(t, cs) })
	t.Run("never ready", func(t *testing.T) { testKubeNeverReady(t, cs) })
	t.Run("statefulset", func(t *testing.T) { testKubeStatefulSet(t, cs) })
	t.Run("token secrets", func(t *testing.T) { testKubeTokens(t, l, cs) })
	t.Run("namespaces", func(t *testing.T) { testKubeNamespaces(t, cs) })
	t.Run("watch", func(t *testing.T) { testKubeWatch(t, cs) })
	t.Run("authentication", func(t *testing.T) { testKubeAuth(t, l) })
	t.Run("SSH tunnel to 127.0.0.1:6443", func(t *testing.T) { testKubeTunnel(t, l) })
	t.Run("K3s stop and restart", func(t *testing.T) { testKubeRestart(t, l) })
}

func testKubeDiscovery(t *testing.T, l *lab.Lab) {
	dc, err := discovery.NewDiscoveryClientForConfig(kubeConfig(t, l, "server-2", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	_, lists, err := dc.ServerGroupsAndResources()
	if err != nil {
		t.Fatalf("ServerGroupsAndResources: %v", err)
	}
	got := map[string]bool{}
	for _, list := range lists {
		for _, r := range list.APIResources {
			got[list.GroupVersion+"/"+r.Name] = r.Namespaced
		}
	}
	want := map[string]bool{
		"v1/namespaces": false, "v1/secrets": true, "v1/configmaps": true, "v1/serviceaccounts": true,
		"apps/v1/deployments": true, "apps/v1/daemonsets": true, "apps/v1/statefulsets": true, "apps/v1/deployments/status": true,
		"admissionregistration.k8s.io/v1/validatingwebhookconfigurations": false,
		"admissionregistration.k8s.io/v1/mutatingwebhookconfigurations":   false,
		"apiregistration.k8s.io/v1/apiservices":                           false,
		"apiextensions.k8s.io/v1/customresourcedefinitions":               false,
	}
	for k, ns := range want {
		if gotNS, ok := got[k]; !ok || gotNS != ns {
			t.Errorf("discovery: %s present=%v namespaced=%v, want namespaced=%v", k, ok, gotNS, ns)
		}
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	for kind, res := range map[schema.GroupKind]string{
		{Group: "apps", Kind: "Deployment"}:                                           "deployments",
		{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}: "mutatingwebhookconfigurations",
		{Group: "", Kind: "Secret"}:                                                   "secrets",
	} {
		m, err := mapper.RESTMapping(kind)
		if err != nil || m.Resource.Resource != res {
			t.Errorf("RESTMapping(%s) = %v, %v; want resource %s", kind, m, err, res)
		}
	}
	if gvr, err := mapper.ResourceFor(schema.GroupVersionResource{Resource: "deploy"}); err == nil {
		t.Logf("short name deploy → %s", gvr)
	}
}

func testKubeDefaults(t *testing.T, l *lab.Lab, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	caOnDisk, err := os.ReadFile(filepath.Join(l.NodeRoot("server-1"), "var/lib/rancher/k3s/server/tls/server-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ns := range nss.Items {
		names = append(names, ns.Name)
		cm, err := cs.CoreV1().ConfigMaps(ns.Name).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil || cm.Data["ca.crt"] != string(caOnDisk) {
			t.Errorf("%s/kube-root-ca.crt: %v; holds the disk's server-ca.crt: %v", ns.Name, err, err == nil && cm.Data["ca.crt"] == string(caOnDisk))
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("%s/default service account: %v", ns.Name, err)
		}
	}
	if want := []string{"default", "kube-node-lease", "kube-public", "kube-system"}; !slices.Equal(names, want) {
		t.Errorf("namespaces %v, want %v", names, want)
	}
	if nss.ResourceVersion == "" {
		t.Error("the list has no resourceVersion")
	}
}

func testKubeDeploymentRollout(t *testing.T, l *lab.Lab, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	deps := cs.AppsV1().Deployments("default")
	d, err := deps.Create(ctx, testDeployment("web", 3, nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation != 1 || d.UID == "" || d.CreationTimestamp.IsZero() || d.ResourceVersion == "" {
		t.Fatalf("created deployment: generation %d uid %q created %v rv %q", d.Generation, d.UID, d.CreationTimestamp, d.ResourceVersion)
	}
	if _, err := deps.Create(ctx, testDeployment("other", 1, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, cs, "default", "web", 1)
	// Shared datastore: server-2 serves the same object.
	d2, err := clientset(t, kubeConfig(t, l, "server-2", "admin")).AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || d2.UID != d.UID {
		t.Fatalf("server-2 serves web: %v (uid %v, want %v)", err, d2.UID, d.UID)
	}
	list, err := deps.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "web" {
		t.Fatalf("list app=web: %v %v", err, list)
	}
	list, err = deps.List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=other"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "other" {
		t.Fatalf("list metadata.name=other: %v %v", err, list)
	}
	// kubectl rollout restart: a strategic merge patch of the template.
	at := time.Now().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, at)
	d, err = deps.Patch(ctx, "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation != 2 || d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] != at || d.Spec.Template.Labels["app"] != "web" {
		t.Fatalf("after the restart patch: generation %d, template %v", d.Generation, d.Spec.Template.ObjectMeta)
	}
	if done, _ := deploymentDone(d); done {
		t.Fatal("the rollout is done in the patch's own answer; the controller cannot have seen it yet")
	}
	d = waitRolledOut(t, cs, "default", "web", 2)
	if d.Annotations["deployment.kubernetes.io/revision"] != "2" {
		t.Errorf("revision annotation %q, want 2", d.Annotations["deployment.kubernetes.io/revision"])
	}
	// A label-only change does not bump the generation.
	d, err = deps.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"tier":"front"}}}`), metav1.PatchOptions{})
	if err != nil || d.Generation != 2 || d.Labels["tier"] != "front" {
		t.Fatalf("label patch: %v generation %d labels %v", err, d.Generation, d.Labels)
	}
}

// waitRolledOut waits until a Deployment's rollout of generation gen is
// done by `kubectl rollout status`'s rules, with the conditions it reads.
func waitRolledOut(t *testing.T, cs *kubernetes.Clientset, ns, name string, gen int64) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	eventually(t, 3*time.Second, func() (bool, string) {
		var err error
		d, err = cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		done, msg := deploymentDone(d)
		return done && d.Generation == gen, fmt.Sprintf("%s (generation %d, status %+v)", msg, d.Generation, d.Status)
	})
	if d.Status.ReadyReplicas != *d.Spec.Replicas || d.Status.ObservedGeneration != gen {
		t.Errorf("status %+v", d.Status)
	}
	if c := condition(d, appsv1.DeploymentAvailable); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("Available condition %+v", c)
	}
	if c := condition(d, appsv1.DeploymentProgressing); c == nil || c.Reason != "NewReplicaSetAvailable" {
		t.Errorf("Progressing condition %+v", c)
	}
	return d
}

func testKubeDynamic(t *testing.T, l *lab.Lab) {
	ctx := ctxT(t)
	cfg := kubeConfig(t, l, "server-1", "admin")
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn := dynamic.NewForConfigOrDie(cfg)
	m, err := mapper.RESTMapping(schema.GroupKind{Group: "apps", Kind: "DaemonSet"}, "v1")
	if err != nil {
		t.Fatal(err)
	}
	ds := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "DaemonSet",
		"metadata": map[string]any{"name": "agent", "namespace": "kube-system", "labels": map[string]any{"restart": "yes"}},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "agent"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "agent"}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}},
		},
	}}
	res := dyn.Resource(m.Resource).Namespace("kube-system")
	if _, err := res.Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := res.Patch(ctx, "agent", types.MergePatchType, []byte(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"now"}}}}}`), metav1.PatchOptions{})
	if err != nil || got.GetGeneration() != 2 {
		t.Fatalf("merge patch: %v, generation %d", err, got.GetGeneration())
	}
	eventually(t, 3*time.Second, func() (bool, string) {
		o, err := res.Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		st, _, _ := unstructured.NestedMap(o.Object, "status")
		ok := st["observedGeneration"] == int64(2) && st["desiredNumberScheduled"] == int64(1) && st["numberAvailable"] == int64(1) && st["updatedNumberScheduled"] == int64(1)
		return ok, fmt.Sprintf("status %v (want 1 node: the lab's one agent)", st)
	})
	// JSON patch on a ConfigMap.
	cms := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("default")
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "cfg"}, "data": map[string]any{"a": "1"}}}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err = cms.Patch(ctx, "cfg", types.JSONPatchType, []byte(`[{"op":"add","path":"/data/b","value":"2"},{"op":"remove","path":"/data/a"}]`), metav1.PatchOptions{})
	if data, _, _ := unstructured.NestedStringMap(got.Object, "data"); err != nil || len(data) != 1 || data["b"] != "2" {
		t.Fatalf("JSON patch: %v, data %v", err, data)
	}
	// Cluster-scoped: a webhook configuration with a caBundle.
	vw := dyn.Resource(schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"})
	hook := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
		"metadata": map[string]any{"name": "policy"}, "webhooks": []any{map[string]any{"name": "a.example.com", "clientConfig": map[string]any{"caBundle": "Zm9v", "url": "https://a.example.com"},
			"sideEffects": "None", "admissionReviewVersions": []any{"v1"}}}}}
	if _, err := vw.Create(ctx, hook, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err = vw.Patch(ctx, "policy", types.StrategicMergePatchType, []byte(`{"webhooks":[{"name":"a.example.com","clientConfig":{"caBundle":"YmFy"}}]}`), metav1.PatchOptions{})
	hooks, _, _ := unstructured.NestedSlice(got.Object, "webhooks")
	if err != nil || len(hooks) != 1 || hooks[0].(map[string]any)["sideEffects"] != "None" ||
		hooks[0].(map[string]any)["clientConfig"].(map[string]any)["caBundle"] != "YmFy" {
		t.Fatalf("strategic patch of a webhook by its merge key name: %v %v", err, hooks)
	}
	as, err := dyn.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).Get(ctx, "v1.apps", metav1.GetOptions{})
	if err != nil || as.Object["spec"].(map[string]any)["service"] != nil {
		t.Errorf("local APIService v1.apps: %v %v", err, as)
	}
}

func testKubeErrors(t *testing.T, cs *kubernetes.Clientset) {
	ctx := ctxT(t)

	cms := cs.CoreV1().ConfigMaps("default")
	if _, err := cms.Get(ctx, "nope", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get missing: %v, want NotFound", err)
	}
	if err := cms.Delete(ctx, "nope", metav1.DeleteOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("delete missing: %v, want NotFound", err)
	}
	if _, err := cs.CoreV1().ConfigMaps("no-such-ns").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("create in a missing namespace: %v, want NotFound", err)
	}
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "e"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "e"}}, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Errorf("create twice: %v, want AlreadyExists", err)
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "resourceVersion should not be set") {
		t.Errorf("create with a resourceVersion: %v, want the apiserver's 500", err)
	}
	stale := cm.DeepCopy()
	cm.Data["k"] = "w"
	if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil || cm.ResourceVersion == stale.ResourceVersion {
		t.Fatalf("update: %v (rv %s → %s)", err, stale.ResourceVersion, cm.ResourceVersion)
	}
	stale.Data["k"] = "x"
	if _, err := cms.Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("update with a stale resourceVersion: %v, want Conflict", err)
	}
	if _, err := cms.Patch(ctx, "e", types.MergePatchType, []byte(`{"metadata":{"resourceVersion":"1"}}`), metav1.PatchOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("patch with a stale resourceVersion: %v, want Conflict", err)
	}
	if _, err := cms.Patch(ctx, "e", types.ApplyYAMLPatchType, []byte(`{}`), metav1.PatchOptions{FieldManager: "t"}); !apierrors.IsUnsupportedMediaType(err) {
		t.Errorf("server-side apply: %v, want UnsupportedMediaType", err)
	}
	bad := testDeployment("bad", 1, nil)
	bad.Spec.Template.Labels = map[string]string{"app": "other"}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("deployment whose selector does not match its template: %v, want Invalid", err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dry"}}, metav1.CreateOptions{DryRun: []string{"All"}}); err != nil {
		t.Errorf("dry-run create: %v", err)
	}
	if _, err := cms.Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a dry-run create stored the object: %v", err)
	}
	if _, err := cms.List(ctx, metav1.ListOptions{FieldSelector: "data.k=v"}); !apierrors.IsBadRequest(err) {
		t.Errorf("unsupported field selector: %v, want BadRequest", err)
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, "kube-system", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("delete kube-system: %v, want Forbidden", err)
	}
}

func testKubeNeverReady(t *testing.T, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	deps := cs.AppsV1().Deployments("default")
	d := testDeployment("stuck", 2, map[string]string{lab.NeverReadyAnnotation: "true"})
	d.Spec.ProgressDeadlineSeconds = int32p(1)
	if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Observed, but never done; then the progress deadline passes.
	eventually(t, 3*time.Second, func() (bool, string) {
		d, _ = deps.Get(ctx, "stuck", metav1.GetOptions{})
		c := condition(d, appsv1.DeploymentProgressing)
		return c != nil && c.Reason == "ProgressDeadlineExceeded" && c.Status == corev1.ConditionFalse, fmt.Sprintf("conditions %+v", d.Status.Conditions)
	})
	if done, _ := deploymentDone(d); done || d.Status.ObservedGeneration != d.Generation || d.Status.AvailableReplicas != 0 {
		t.Fatalf("a never-ready deployment: done=%v status %+v", done, d.Status)
	}
	// Without the fault the rollout finishes.
	if _, err := deps.Patch(ctx, "stuck", types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+lab.NeverReadyAnnotation+`":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, cs, "default", "stuck", 1)
	// A later rollout that never becomes ready: one surged pod stays unready.
	patch := `{"metadata":{"annotations":{"` + lab.NeverReadyAnnotation + `":"true"}},"spec":{"progressDeadlineSeconds":600,"template":{"metadata":{"annotations":{"x":"1"}}}}}`
	if _, err := deps.Patch(ctx, "stuck", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, func() (bool, string) {
		d, _ = deps.Get(ctx, "stuck", metav1.GetOptions{})
		return d.Status.ObservedGeneration == d.Generation, "not observed"
	})
	time.Sleep(300 * time.Millisecond)
	d, _ = deps.Get(ctx, "stuck", metav1.GetOptions{})
	if done, msg := deploymentDone(d); done || d.Status.AvailableReplicas != 2 || d.Status.UpdatedReplicas != 1 {
		t.Fatalf("stuck later rollout: done=%v (%s) status %+v", done, msg, d.Status)
	}
	if c := condition(d, appsv1.DeploymentProgressing); c == nil || c.Reason != "ReplicaSetUpdated" || c.Status != corev1.ConditionTrue {
		t.Errorf("Progressing %+v", c)
	}
}

func testKubeStatefulSet(t *testing.T, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	labels := map[string]string{"app": "db"}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{
		Replicas: int32p(2), Selector: &metav1.LabelSelector{MatchLabels: labels}, ServiceName: "db",
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
	}}
	api := cs.AppsV1().StatefulSets("default")
	if _, err := api.Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *appsv1.StatefulSet
	eventually(t, 3*time.Second, func() (bool, string) {
		got, _ = api.Get(ctx, "db", metav1.GetOptions{})
		st := got.Status
		return st.ObservedGeneration == 1 && st.ReadyReplicas == 2 && st.CurrentRevision != "" && st.CurrentRevision == st.UpdateRevision, fmt.Sprintf("%+v", st)
	})
	first := got.Status.UpdateRevision
	patch := `{"metadata":{"annotations":{"` + lab.NeverReadyAnnotation + `":"true"}},"spec":{"template":{"metadata":{"annotations":{"r":"1"}}}}}`
	if _, err := api.Patch(ctx, "db", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, func() (bool, string) {
		got, _ = api.Get(ctx, "db", metav1.GetOptions{})
		st := got.Status
		return st.ObservedGeneration == 2 && st.UpdateRevision != first && st.CurrentRevision == first && st.ReadyReplicas == 1, fmt.Sprintf("%+v", st)
	})
}

func testKubeTokens(t *testing.T, l *lab.Lab, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	caOnDisk, _ := os.ReadFile(filepath.Join(l.NodeRoot("server-1"), "var/lib/rancher/k3s/server/tls/server-ca.crt"))
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "ci"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secrets := cs.CoreV1().Secrets("default")
	for _, name := range []string{"ci-token", "orphan-token"} {
		sa := "ci"
		if name == "orphan-token" {
			sa = "nobody"
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{corev1.ServiceAccountNameKey: sa}}, Type: corev1.SecretTypeServiceAccountToken}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 3*time.Second, func() (bool, string) {
		s, err := secrets.Get(ctx, "ci-token", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ok := string(s.Data["ca.crt"]) == string(caOnDisk) && string(s.Data["namespace"]) == "default" && strings.Count(string(s.Data["token"]), ".") == 2 &&
			s.Annotations[corev1.ServiceAccountUIDKey] != ""
		return ok, fmt.Sprintf("data keys %v annotations %v", slices.Sorted(maps.Keys(s.Data)), s.Annotations)
	})
	eventually(t, 3*time.Second, func() (bool, string) {
		_, err := secrets.Get(ctx, "orphan-token", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("a token of a missing service account is still there: %v", err)
	})
	list, err := secrets.List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(corev1.SecretTypeServiceAccountToken)})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list token secrets by type: %v %d", err, len(list.Items))
	}
	// An Opaque secret's stringData lands in data.
	s, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, StringData: map[string]string{"pw": "x"}}, metav1.CreateOptions{})
	if err != nil || string(s.Data["pw"]) != "x" || s.Type != corev1.SecretTypeOpaque || len(s.StringData) != 0 {
		t.Fatalf("stringData: %v %+v", err, s)
	}
}

func testKubeNamespaces(t *testing.T, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, func() (bool, string) {
		_, err1 := cs.CoreV1().ConfigMaps("team").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		_, err2 := cs.CoreV1().ServiceAccounts("team").Get(ctx, "default", metav1.GetOptions{})
		return err1 == nil && err2 == nil, fmt.Sprintf("kube-root-ca.crt: %v; default SA: %v", err1, err2)
	})
	// The publisher reverts an edit.
	if _, err := cs.CoreV1().ConfigMaps("team").Patch(ctx, "kube-root-ca.crt", types.MergePatchType, []byte(`{"data":{"ca.crt":"tampered"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, func() (bool, string) {
		cm, _ := cs.CoreV1().ConfigMaps("team").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return cm != nil && strings.HasPrefix(cm.Data["ca.crt"], "-----BEGIN CERTIFICATE-----"), "not reverted"
	})
	if err := cs.CoreV1().Namespaces().Delete(ctx, "team", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("team").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a deleted namespace's ConfigMap: %v, want NotFound", err)
	}
}

func testKubeWatch(t *testing.T, cs *kubernetes.Clientset) {
	ctx := ctxT(t)
	cms := cs.CoreV1().ConfigMaps("kube-public")
	list, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion, LabelSelector: "w=1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for _, name := range []string{"unlabelled", "labelled"} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if name == "labelled" {
			cm.Labels = map[string]string{"w": "1"}
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-w.ResultChan():
		cm, ok := ev.Object.(*corev1.ConfigMap)
		if ev.Type != watch.Added || !ok || cm.Name != "labelled" {
			t.Fatalf("watch event %s %T %v, want ADDED labelled", ev.Type, ev.Object, ev.Object)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no watch event")
	}
}

func testKubeAuth(t *testing.T, l *lab.Lab) {
	ctx := ctxT(t)
	if _, err := clientset(t, kubeConfig(t, l, "server-1", "")).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("without a client certificate: %v, want Unauthorized", err)
	}
	cfg := kubeConfig(t, l, "server-1", "")
	cfg.CertData, cfg.KeyData = foreignClientCert(t)
	if _, err := clientset(t, cfg).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("with a certificate of another CA: %v, want Unauthorized (401, not a TLS failure)", err)
	}
	_, err := clientset(t, kubeConfig(t, l, "server-1", "kube-proxy")).CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `User "system:kube-proxy" cannot list resource "secrets"`) {
		t.Errorf("kube-proxy lists secrets: %v, want Forbidden", err)
	}
}

// testKubeTunnel: through a node's SSH connection, 127.0.0.1:6443 is that
// node's own API server, as on a real machine.
func testKubeTunnel(t *testing.T, l *lab.Lab) {
	c := connect(t, l)
	cfg := kubeConfig(t, l, "server-2", "admin")
	cfg.Host = "https://127.0.0.1:6443"
	cfg.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return c.ex["server-2"].Dial(ctx, network, "127.0.0.1:6443")
	}
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	v, err := dc.ServerGroups()
	if err != nil {
		t.Fatalf("discovery through server-2's tunnel: %v", err)
	}
	body, err := dc.RESTClient().Get().AbsPath("/api").DoRaw(ctxT(t))
	want := nodeAddress(t, l, "server-2") + ":6443"
	if err != nil || !strings.Contains(string(body), `"serverAddress":"`+want+`"`) {
		t.Fatalf("/api through server-2's tunnel: %v %s; want server-2's own API (%s)", err, body, want)
	}
	if len(v.Groups) < 4 {
		t.Errorf("groups %v", v.Groups)
	}
}

func testKubeRestart(t *testing.T, l *lab.Lab) {
	ctx := ctxT(t)
	cs1 := clientset(t, kubeConfig(t, l, "server-1", "admin"))
	cm, err := cs1.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, l)
	t0 := time.Now()
	c.mustRun("server-1", "systemctl stop k3s")
	if d := time.Since(t0); d > time.Second {
		t.Errorf("stopping K3s took %s with API clients connected", d)
	}
	if _, err := cs1.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("server-1's API answers while its K3s is stopped")
	}
	cs2 := clientset(t, kubeConfig(t, l, "server-2", "admin"))
	if got, err := cs2.CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{}); err != nil || got.UID != cm.UID {
		t.Errorf("server-2 while server-1 is down: %v", err)
	}
	c.mustRun("server-1", "systemctl start k3s")
	got, err := clientset(t, kubeConfig(t, l, "server-1", "admin")).CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
	if err != nil || got.UID != cm.UID || got.ResourceVersion != cm.ResourceVersion || got.Data["k"] != "v" {
		t.Fatalf("survivor after server-1's restart: %v %+v", err, got)
	}
}
