package lab_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// The fixed vector of docs/k3s-vectors.md (checked against K3s's own code).
const (
	vectorPassphrase = "token"
	vectorKey        = "/bootstrap/3c469e9d6c58"
	vectorPlain      = `{"ServerCA":{"Timestamp":"2025-03-11T14:00:00Z","Content":"aGVsbG8="}}`
	vectorStored     = "0001020304050607:EBESExQVFhcYGRobEIdI+0EtY366Lc+TEYMs6Rztw42qvPbmV6KJE7sXaPgvAhOlFcntLOyEZ70/CDY/DhQcMAtXeY/T2Ek+Ol3uSq6MAxga/h1Ir5fE9EBMP/07C1tj6tY="
)

// sealForTest and openForTest implement K3s's bootstrap cipher from the
// brief alone (§3 "Cipher"), independently of internal/k3s, so that a
// mistake shared by the lab and caretaker cannot pass.
func sealForTest(t *testing.T, passphrase string, plain, salt, nonce []byte) string {
	t.Helper()
	hexSalt := []byte(strings.ToLower(hexString(salt)))
	key, err := pbkdf2.Key(sha1.New, passphrase, hexSalt, 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	sealed := gcm.Seal(nil, nonce, plain, nil)
	return string(hexSalt) + ":" + base64.StdEncoding.EncodeToString(append(append([]byte{}, nonce...), sealed...))
}

func openForTest(t *testing.T, passphrase, stored string) []byte {
	t.Helper()
	salt, data, ok := strings.Cut(stored, ":")
	if !ok {
		t.Fatalf("stored value has no salt: %.40q", stored)
	}
	key, err := pbkdf2.Key(sha1.New, passphrase, []byte(salt), 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		t.Fatalf("stored value is not base64: %v", err)
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	plain, err := gcm.Open(nil, raw[:gcm.NonceSize()], raw[gcm.NonceSize():], nil)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	return plain
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// The lab's etcd holds the bootstrap data in K3s's exact format: with the
// vector passphrase the key is the vector key, and the value opens with an
// implementation that reproduces the fixed vector byte for byte (issue 3
// "Datastore"). Debian's etcdctl reads the same value with the lab's
// client certs.
func TestDatastoreFormatMatchesVector(t *testing.T) {
	salt := []byte{0, 1, 2, 3, 4, 5, 6, 7}
	nonce := []byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b}
	if got := sealForTest(t, vectorPassphrase, []byte(vectorPlain), salt, nonce); got != vectorStored {
		t.Fatalf("the test's own cipher does not reproduce the vector:\n got %s\nwant %s", got, vectorStored)
	}
	if got := string(openForTest(t, vectorPassphrase, vectorStored)); got != vectorPlain {
		t.Fatalf("vector decrypts to %q", got)
	}

	l := startLab(t, lab.Options{Servers: 2, Token: vectorPassphrase})
	st := l.Status()
	cli := etcdClient(t, st)
	resp, err := cli.Get(ctxT(t), "/bootstrap", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != vectorKey {
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		t.Fatalf("bootstrap keys %v, want exactly [%s]", keys, vectorKey)
	}
	stored := string(resp.Kvs[0].Value)
	if salt, _, _ := strings.Cut(stored, ":"); len(salt) != 16 {
		t.Errorf("salt %q is not 16 hex chars", salt)
	}
	plain := openForTest(t, vectorPassphrase, stored)
	var doc map[string]struct {
		Timestamp time.Time
		Content   []byte
	}
	if err := json.Unmarshal(plain, &doc); err != nil {
		t.Fatalf("plaintext is not the bootstrap JSON: %v", err)
	}
	if len(doc) != 13 {
		t.Errorf("bootstrap JSON has %d keys, want the 13 of a cluster without secrets encryption", len(doc))
	}
	sd := filepath.Join(l.NodeRoot("server-1"), "var/lib/rancher/k3s/server")
	disk, err := os.ReadFile(filepath.Join(sd, k3s.PathServerCA))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc["ServerCA"].Content, disk) {
		t.Errorf("datastore ServerCA differs from server-1's disk")
	}
	fi, _ := os.Stat(filepath.Join(sd, k3s.PathServerCA))
	if !doc["ServerCA"].Timestamp.Equal(fi.ModTime()) {
		t.Errorf("ServerCA Timestamp %s != disk mtime %s", doc["ServerCA"].Timestamp, fi.ModTime())
	}

	etcdctl, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Logf("etcdctl not installed (apt-get install etcd-client): not cross-checked with it")
		return
	}
	// With the cluster's etcd client certs of a node, as §3 "Key" says.
	etls := filepath.Join(sd, "tls", "etcd")
	cmd := exec.Command(etcdctl, "--endpoints", "https://"+st.Etcd.Endpoints[1], "--cacert", filepath.Join(etls, "server-ca.crt"),
		"--cert", filepath.Join(etls, "client.crt"), "--key", filepath.Join(etls, "client.key"), "get", vectorKey, "--print-value-only")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl get: %v\n%s", err, out)
	}
	if strings.TrimRight(string(out), "\n") != stored {
		t.Errorf("etcdctl read %.60q..., want the stored value", out)
	}
}

// The supervisor answers as K3s does (golden server-bootstrap-endpoint.txt):
// 200 with the datastore JSON for server:<password>, 401 for a wrong
// password, 403 without credentials or as the agent user, POST allowed;
// /cacerts unauthenticated and cached per process.
func TestSupervisorEndpoints(t *testing.T) {
	l := startLab(t, lab.Options{Servers: 2, Version: "v1.32.3+k3s1", Token: "secret"})
	st := l.Status()
	base := "https://" + st.Nodes[0].Address + ":6443"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // fetching /cacerts first is what K3s does too
	do := func(method, path, user, pass string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	const (
		body401 = "{\n  \"kind\": \"Status\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"not authorized\",\n  \"reason\": \"Unauthorized\",\n  \"code\": 401\n}"
		body403 = "{\n  \"kind\": \"Status\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"forbidden\",\n  \"reason\": \"Forbidden\",\n  \"code\": 403\n}"
	)
	cases := []struct {
		method, user, pass string
		code               int
		body               string
	}{
		{"GET", "server", "wrongpassword", 401, body401},
		{"GET", "", "", 403, body403},
		{"GET", "node", "secret", 403, body403},
	}
	for _, tc := range cases {
		resp, b := do(tc.method, "/v1-k3s/server-bootstrap", tc.user, tc.pass)
		if resp.StatusCode != tc.code || string(b) != tc.body || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s as %q: %d %q (%s), want %d and the golden body", tc.method, tc.user, resp.StatusCode, b, resp.Header.Get("Content-Type"), tc.code)
		}
	}
	plain := openForTest(t, "secret", func() string {
		resp, err := etcdClient(t, st).Get(ctxT(t), k3s.StorageKey("secret"))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("etcd get: %v", err)
		}
		return string(resp.Kvs[0].Value)
	}())
	for _, method := range []string{"GET", "POST"} {
		resp, b := do(method, "/v1-k3s/server-bootstrap", "server", "secret")
		if resp.StatusCode != 200 || !bytes.Equal(b, plain) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with the right password: %d, %d bytes, want 200 and the datastore plaintext (%d bytes)", method, resp.StatusCode, len(b), len(plain))
		}
	}

	sd := filepath.Join(st.Nodes[0].Root, "var/lib/rancher/k3s/server")
	ca, _ := os.ReadFile(filepath.Join(sd, k3s.PathServerCA))
	resp, b := do("GET", "/cacerts", "", "")
	if resp.StatusCode != 200 || !bytes.Equal(b, ca) || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("/cacerts: %d %s, want server-ca.crt", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Cached per process: a changed file is served only after a restart.
	if err := os.WriteFile(filepath.Join(sd, k3s.PathServerCA), append(append([]byte{}, ca...), ca...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, b := do("GET", "/cacerts", "", ""); !bytes.Equal(b, ca) {
		t.Errorf("/cacerts changed without a restart")
	}
	if resp, _ := do("GET", "/readyz", "", ""); resp.StatusCode != 200 {
		t.Errorf("/readyz: %d", resp.StatusCode)
	}
}
