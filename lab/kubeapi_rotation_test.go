package lab_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// TestKubeRootCAFollowsRotation: the simulated controller manager
// publishes the root CA its K3s read at start. rotate-ca alone changes
// nothing in the API; once the servers restart with the new CA on disk,
// every namespace's kube-root-ca.crt and every token Secret's ca.crt
// hold it (on a release with the bootstrap bug the disks keep the old CA,
// and so does the API). Needs root (the lab).
func TestKubeRootCAFollowsRotation(t *testing.T) {
	for _, tc := range []struct {
		version   string
		wantNewCA bool
	}{{"v1.32.3+k3s1", true}, {"v1.30.10+k3s1", false}} {
		t.Run(tc.version, func(t *testing.T) {
			l := labtest.Start(t, lab.Options{Servers: 3, Version: tc.version, Scenario: lab.ScenarioInitReplaced})
			c := connect(t, l)
			cs := clientset(t, kubeConfig(t, l, "server-1", "admin"))
			oldCA := c.serverCA("server-1")
			createToken(t, cs, "default", "ci")
			waitRootCA(t, cs, oldCA, "before the rotation")

			dir, staged := c.stageRotation("server-1")
			newCA := staged[k3s.PathServerCA]
			c.mustRun("server-1", "k3s certificate rotate-ca --path="+dir)
			time.Sleep(300 * time.Millisecond)
			waitRootCA(t, cs, oldCA, "after rotate-ca, before any restart")
			for _, s := range c.servers() {
				c.mustRun(s, "systemctl restart k3s")
			}
			want, what := oldCA, "the OLD CA (the bug: the disks keep it)"
			if tc.wantNewCA {
				want, what = newCA, "the NEW CA"
			}
			if got := c.serverCA("server-1"); !sameBytes(got, want) {
				t.Fatalf("server-1's disk holds %s, want %s", shortHash(got), what)
			}
			// A fresh admin certificate from the disk (K3s reissued it).
			cs = clientset(t, kubeConfig(t, l, "server-1", "admin"))
			waitRootCA(t, cs, want, "after the restarts: "+what)
		})
	}
}

// createToken creates a service account and a legacy token Secret of it.
func createToken(t *testing.T, cs *kubernetes.Clientset, ns, sa string) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: sa + "-token", Annotations: map[string]string{corev1.ServiceAccountNameKey: sa}}, Type: corev1.SecretTypeServiceAccountToken}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitRootCA waits until every namespace's kube-root-ca.crt and every
// token Secret's ca.crt hold want.
func waitRootCA(t *testing.T, cs *kubernetes.Clientset, want []byte, when string) {
	t.Helper()
	eventually(t, 5*time.Second, func() (bool, string) {
		ctx := context.Background()
		var bad []string
		nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, ns := range nss.Items {
			cm, err := cs.CoreV1().ConfigMaps(ns.Name).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
			if err != nil || cm.Data["ca.crt"] != string(want) {
				bad = append(bad, ns.Name+"/kube-root-ca.crt")
			}
		}
		secrets, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(corev1.SecretTypeServiceAccountToken)})
		if err != nil || len(secrets.Items) == 0 {
			return false, fmt.Sprintf("token secrets: %v (%d)", err, len(secrets.Items))
		}
		for _, s := range secrets.Items {
			if !sameBytes(s.Data["ca.crt"], want) {
				bad = append(bad, s.Namespace+"/"+s.Name+" ca.crt")
			}
		}
		return len(bad) == 0, fmt.Sprintf("%s: not %s: %s", when, shortHash(want), strings.Join(bad, ", "))
	})
}
