package lab_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/caretaker/caretaker/lab"
)

// kubeConfig is a client-go config for a lab server's :6443 with the
// server CA bundle and a client certificate from the node's tree: cert
// "admin" is SD/tls/client-admin.*, "kube-proxy" the node's
// agent/client-kube-proxy.*, "" none.
func kubeConfig(t *testing.T, l *lab.Lab, node, cert string) *rest.Config {
	t.Helper()
	dd := filepath.Join(l.NodeRoot(node), "var/lib/rancher/k3s")
	read := func(rel string) []byte {
		b, err := os.ReadFile(filepath.Join(dd, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// QPS and Burst: client-go's default limiter (5/s) would pace the test.
	cfg := &rest.Config{Host: "https://" + nodeAddress(t, l, node) + ":6443", Timeout: 10 * time.Second, QPS: 1000, Burst: 1000}
	cfg.CAData = read("server/tls/server-ca.crt")
	switch cert {
	case "admin":
		cfg.CertData, cfg.KeyData = read("server/tls/client-admin.crt"), read("server/tls/client-admin.key")
	case "kube-proxy":
		cfg.CertData, cfg.KeyData = read("agent/client-kube-proxy.crt"), read("agent/client-kube-proxy.key")
	case "":
	default:
		t.Fatalf("kubeConfig: unknown cert %q", cert)
	}
	return cfg
}

func nodeAddress(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	for _, n := range l.Status().Nodes {
		if n.Name == node {
			return n.Address
		}
	}
	t.Fatalf("no node %s", node)
	return ""
}

func clientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// eventually polls cond every 20 ms for up to d; on timeout it fails with
// the last message cond returned.
func eventually(t *testing.T, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// foreignClientCert is a client certificate for system:admin in
// system:masters signed by a CA the cluster does not know.
func foreignClientCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "foreign-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "system:admin", Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func int32p(v int32) *int32 { return &v }

// testDeployment is a Deployment of app=name with the given replicas.
func testDeployment(name string, replicas int32, ann map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: ann},
		Spec: appsv1.DeploymentSpec{
			Replicas: int32p(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			},
		},
	}
}

// deploymentDone is `kubectl rollout status`'s rule for a Deployment.
func deploymentDone(d *appsv1.Deployment) (bool, string) {
	st := d.Status
	switch {
	case d.Generation > st.ObservedGeneration:
		return false, "waiting for the deployment spec update to be observed"
	case d.Spec.Replicas != nil && st.UpdatedReplicas < *d.Spec.Replicas:
		return false, "new replicas have not all been updated"
	case st.Replicas > st.UpdatedReplicas:
		return false, "old replicas are pending termination"
	case st.AvailableReplicas < st.UpdatedReplicas:
		return false, "updated replicas are not all available"
	}
	return true, "done"
}

func condition(d *appsv1.Deployment, typ appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == typ {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}
