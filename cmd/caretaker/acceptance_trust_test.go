package main

// Acceptance scenarios of issue 14 (what must trust the new root after a
// rotation), on both backends: the Kubernetes API objects exist without
// agents, so the real engine runs them as well as the simulator.

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caretaker/caretaker/builtins/k8sops"
	"github.com/caretaker/caretaker/internal/k3s"
)

var (
	gvrNamespaces      = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	gvrDeployments     = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	gvrWebhooks        = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}
	gvrSecrets         = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	gvrServiceAccounts = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
)

// adminKubeconfig writes the cluster's admin kubeconfig with `caretaker
// kubeconfig` and returns its path and a dynamic client over it.
func (l *e2eLab) adminKubeconfig(t *testing.T, name string) (string, dynamic.Interface) {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	res := runCaretakerBinary(t, "kubeconfig", "-i", l.InventoryPath(), "--out", out)
	if res.Code != 0 {
		t.Fatalf("kubeconfig: %s\n%s", res.Describe(), res.Stderr)
	}
	return out, dynamicClient(t, out)
}

func dynamicClient(t *testing.T, kubeconfig string) dynamic.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Timeout = 30 * time.Second
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// trustFixture is what the scenario puts into the cluster before the
// rotation.
type trustFixture struct {
	stale, foreign []byte // caBundles: the cluster's CA now, an unrelated CA
}

func createObject(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns string, o map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: o}
	var err error
	if ns == "" {
		_, err = dyn.Resource(gvr).Create(context.Background(), u, metav1.CreateOptions{})
	} else {
		_, err = dyn.Resource(gvr).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create %s %s/%s: %v", gvr.Resource, ns, u.GetName(), err)
	}
}

func deployment(name string, labels map[string]any) map[string]any {
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "labels": labels},
		"spec": map[string]any{"replicas": int64(0), "selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "registry.invalid/none:1"}}}}}}
}

func webhookConfig(name string, bundle []byte) map[string]any {
	return map[string]any{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
		"metadata": map[string]any{"name": name},
		"webhooks": []any{map[string]any{
			"name": name + ".caretaker.test", "admissionReviewVersions": []any{"v1"}, "sideEffects": "None", "failurePolicy": "Ignore",
			"clientConfig": map[string]any{"url": "https://127.0.0.1:1/validate", "caBundle": base64.StdEncoding.EncodeToString(bundle)},
			"rules":        []any{map[string]any{"apiGroups": []any{"caretaker.test"}, "apiVersions": []any{"v1"}, "operations": []any{"CREATE"}, "resources": []any{"widgets"}}},
		}}}
}

// setUpTrustFixture creates namespaces ct-a and ct-b with Deployments
// (ct-a/web and ct-b/web labelled tier=web, ct-a/db tier=db), a webhook
// configuration trusting the cluster's CA now and one trusting an
// unrelated CA.
func setUpTrustFixture(t *testing.T, l *e2eLab, dyn dynamic.Interface) trustFixture {
	t.Helper()
	other, err := k3s.GenerateClusterCAs(time.Now(), "unrelated")
	if err != nil {
		t.Fatal(err)
	}
	fx := trustFixture{stale: l.serverCA("server-1"), foreign: other[k3s.PathServerCA]}
	for _, ns := range []string{"ct-a", "ct-b"} {
		createObject(t, dyn, gvrNamespaces, "", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	}
	createObject(t, dyn, gvrDeployments, "ct-a", deployment("web", map[string]any{"tier": "web"}))
	createObject(t, dyn, gvrDeployments, "ct-a", deployment("db", map[string]any{"tier": "db"}))
	createObject(t, dyn, gvrDeployments, "ct-b", deployment("web", map[string]any{"tier": "web"}))
	// A legacy token Secret of a service account of its own (the
	// controller manager deletes a token Secret whose account does not
	// exist yet, and a new namespace's default account may not).
	createObject(t, dyn, gvrServiceAccounts, "ct-a", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "ct-legacy"}})
	createObject(t, dyn, gvrSecrets, "ct-a", map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
		"metadata": map[string]any{"name": "legacy-token", "annotations": map[string]any{"kubernetes.io/service-account.name": "ct-legacy"}}})
	createObject(t, dyn, gvrWebhooks, "", webhookConfig("ct-stale", fx.stale))
	createObject(t, dyn, gvrWebhooks, "", webhookConfig("ct-foreign", fx.foreign))
	return fx
}

// withKubeconfigs writes a copy of the lab's inventory whose cluster lists
// kubeconfigs.
func (l *e2eLab) withKubeconfigs(t *testing.T, paths ...string) string {
	t.Helper()
	raw, err := os.ReadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	cl := doc["clusters"].([]any)[0].(map[string]any)
	cl["kubeconfigs"] = paths
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(l.InventoryPath()), "inventory-kubeconfigs.yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func restartedAtOf(t *testing.T, dyn dynamic.Interface, ns, name string) string {
	t.Helper()
	u, err := dyn.Resource(gvrDeployments).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, name, err)
	}
	v, _, _ := unstructured.NestedString(u.Object, "spec", "template", "metadata", "annotations", k8sops.RestartedAtAnnotation)
	return v
}

func webhookBundle(t *testing.T, dyn dynamic.Interface, name string) []byte {
	t.Helper()
	u, err := dyn.Resource(gvrWebhooks).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get webhook configuration %s: %v", name, err)
	}
	hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
	b, _ := base64.StdEncoding.DecodeString(hooks[0].(map[string]any)["clientConfig"].(map[string]any)["caBundle"].(string))
	return b
}

// holdsRootOf reports whether bundle holds the root the CA bundle ca
// chains to.
func holdsRootOf(t *testing.T, bundle, ca []byte) bool {
	t.Helper()
	r, err := k3s.RootsOf(ca)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := k3s.ParseCertsPEM(bundle)
	if err != nil {
		return false
	}
	for _, c := range certs {
		if k3s.CertSHA256(c) == r.Current {
			return true
		}
	}
	return false
}

// accTrustAfterRotation: a rotation with restart_workloads, update_ca_bundles,
// refresh_token_secrets and a kubeconfig listed in the inventory; first in
// --check (nothing changes, every part is shown), then for real.
func accTrustAfterRotation(t *testing.T, l *e2eLab) {
	before, dyn := l.adminKubeconfig(t, "before.yaml")
	fx := setUpTrustFixture(t, l, dyn)
	listed := filepath.Join(t.TempDir(), "ci.yaml")
	orig, _ := os.ReadFile(before)
	if err := os.WriteFile(listed, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	inv := l.withKubeconfigs(t, listed)
	args := []string{"run", "rotate-ca", "-i", inv, "--yes", "--output", "json",
		"-p", "restart_workloads=ct-a,ct-b", "-p", "restart_selector=tier=web", "-p", "restart_wave=1",
		"-p", "update_ca_bundles=true", "-p", "refresh_token_secrets=true"}

	check := l.runCaretaker(append(args, "--check")...)
	if check.Code != 0 {
		t.Fatalf("rotate-ca --check: %s", check.Describe())
	}
	out := check.Stdout
	for _, want := range []string{"would restart deployments.apps ct-a/web", "would restart deployments.apps ct-b/web",
		"would rewrite " + listed, "ct-stale", "trusts only the previous root"} {
		if !strings.Contains(out, want) {
			t.Errorf("--check does not show %q", want)
		}
	}
	if strings.Contains(out, "ct-a/db") || strings.Contains(out, "ct-foreign") {
		t.Error("--check lists a workload the selector leaves out or a webhook of an unrelated CA")
	}
	if b, _ := os.ReadFile(listed); !bytes.Equal(b, orig) || restartedAtOf(t, dyn, "ct-a", "web") != "" {
		t.Fatal("--check changed the kubeconfig or restarted a workload")
	}

	res := l.runCaretaker(args...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca: %s", res.Describe())
	}
	l.assertNoSecret(res)
	newCA := l.newCA()
	l.assertClusterHoldsCA(newCA)
	assertWorkloadsRestarted(t, dyn)
	assertBundlesTrustTheNewRoot(t, l, dyn, fx, newCA)
	assertKubeconfigRewritten(t, l, listed, orig, before, newCA)
	cleanUpTrustFixture(t, l)
}

func assertWorkloadsRestarted(t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	for _, w := range []struct {
		ns, name  string
		restarted bool
	}{{"ct-a", "web", true}, {"ct-b", "web", true}, {"ct-a", "db", false}} {
		if got := restartedAtOf(t, dyn, w.ns, w.name) != ""; got != w.restarted {
			t.Errorf("deployment %s/%s: restarted %v, want %v", w.ns, w.name, got, w.restarted)
		}
	}
}

func assertBundlesTrustTheNewRoot(t *testing.T, l *e2eLab, dyn dynamic.Interface, fx trustFixture, newCA []byte) {
	t.Helper()
	stale := webhookBundle(t, dyn, "ct-stale")
	if !holdsRootOf(t, stale, newCA) || !holdsRootOf(t, stale, fx.stale) {
		t.Errorf("ct-stale's caBundle should now hold the new root and keep the old one")
	}
	if !bytes.Equal(webhookBundle(t, dyn, "ct-foreign"), fx.foreign) {
		t.Error("ct-foreign (an unrelated CA) was changed")
	}
	// Every service-account token Secret and kube-root-ca.crt trusts the
	// new root now (refreshed, or rewritten by the controller manager).
	secrets, err := dyn.Resource(gvrSecrets).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokens := 0
	for _, s := range secrets.Items {
		if s.Object["type"] != "kubernetes.io/service-account-token" {
			continue
		}
		tokens++
		ca, _, _ := unstructured.NestedString(s.Object, "data", "ca.crt")
		raw, _ := base64.StdEncoding.DecodeString(ca)
		if !holdsRootOf(t, raw, newCA) {
			t.Errorf("token Secret %s/%s does not trust the new root", s.GetNamespace(), s.GetName())
		}
	}
	if tokens == 0 {
		t.Error("no service-account token Secret in the cluster (ct-a/legacy-token was created before the rotation)")
	}
}

func assertKubeconfigRewritten(t *testing.T, l *e2eLab, listed string, orig []byte, before string, newCA []byte) {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(listed)
	if err != nil {
		t.Fatal(err)
	}
	ca := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster].CertificateAuthorityData
	if !holdsRootOf(t, ca, newCA) {
		t.Errorf("%s does not trust the new root after the rotation", listed)
	}
	if fi, err := os.Stat(listed); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("%s lost its mode 0640: %v", listed, fi.Mode())
	}
	if _, err := dynamicClient(t, listed).Resource(gvrNamespaces).Get(context.Background(), "ct-a", metav1.GetOptions{}); err != nil {
		t.Errorf("a request with the rewritten kubeconfig: %v", err)
	}
	backups, _ := filepath.Glob(filepath.Join(l.StateDir, "backups", "*", "kubeconfigs", "ci.yaml.*"))
	found := false
	for _, b := range backups {
		data, _ := os.ReadFile(b)
		fi, _ := os.Stat(b)
		found = found || (bytes.Equal(data, orig) && fi.Mode().Perm() == 0o600)
	}
	if !found {
		t.Errorf("no 0600 backup of the original kubeconfig among %v", backups)
	}
	// A copy that caretaker was not told about keeps the old root only:
	// caretaker's trust rules flag it.
	old, _ := clientcmd.LoadFromFile(before)
	oldCA := old.Clusters[old.Contexts[old.CurrentContext].Cluster].CertificateAuthorityData
	roots, err := k8sops.RootsFrom(newCA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := roots.Judge(oldCA); got != k8sops.TrustOldOnly {
		t.Errorf("a kubeconfig copy from before the rotation is judged %q, want %q", got, k8sops.TrustOldOnly)
	}
}

// cleanUpTrustFixture removes what setUpTrustFixture created, so later
// scenarios start from the cluster they expect.
func cleanUpTrustFixture(t *testing.T, l *e2eLab) {
	t.Helper()
	_, dyn := l.adminKubeconfig(t, "cleanup.yaml")
	ctx := context.Background()
	for _, name := range []string{"ct-stale", "ct-foreign"} {
		_ = dyn.Resource(gvrWebhooks).Delete(ctx, name, metav1.DeleteOptions{})
	}
	for _, ns := range []string{"ct-a", "ct-b"} {
		_ = dyn.Resource(gvrNamespaces).Delete(ctx, ns, metav1.DeleteOptions{})
	}
}
