package main

// Acceptance scenarios of the fixed group (accGroups): a fixed release with
// secure tokens, repeated rotations, leaf rotation, backup and restore,
// datastore snapshots and the kubeconfig.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/runner/inventory"
)

// On a fixed release workaround=auto strips nothing; nodes with secure K10
// tokens get the new CA hash where their token is set.
func accFixedReleaseSecureTokens(t *testing.T, l *e2eLab) {
	before := l.allConfigSources()
	res := l.mustRotate(t)
	for _, s := range l.Nodes(inventory.RoleServer) {
		if _, err := os.Stat(l.HostPath(s, filepath.Join(l.Node(s).K3s.DataDir, "caretaker", "strip"))); err == nil {
			t.Errorf("%s: strip records exist: workaround=auto stripped on a fixed release", s)
		}
		if !strings.Contains(strings.Join(res.Output(s), "\n"), "keeping server=") {
			t.Errorf("%s: the output does not say server was kept", s)
		}
	}
	newHash, err := k3s.HashCA(l.newCA())
	if err != nil {
		t.Fatal(err)
	}
	after := l.allConfigSources()
	for _, n := range l.Nodes("") {
		changed := 0
		for k, b := range after {
			if strings.HasPrefix(k, n+" ") && !bytes.Equal(b, before[k]) {
				changed++
				if !strings.Contains(string(b), "K10"+newHash+"::") {
					t.Errorf("%s: %s changed but does not carry the new CA hash", n, k)
				}
			}
		}
		if changed != 1 {
			t.Errorf("%s: %d config sources changed, want 1 (the one holding the token)", n, changed)
		}
		if st := res.StepStatus("tokens", n); st != "changed" {
			t.Errorf("step tokens on %s: %q, want changed", n, st)
		}
		if st := l.serviceState(n); st != "active" {
			t.Errorf("%s is %s after the rotation", n, st)
		}
	}
	l.assertNoSecret(res)
}

func accRotateAgainTwice(t *testing.T, l *e2eLab) {
	for i := 2; i <= 3; i++ {
		res := l.mustRotate(t)
		t.Logf("rotation %d: %s", i, res.Took.Round(100*time.Millisecond))
		l.mustCheck(t)
	}
}

// leafSerials maps file+subject to serial for every leaf certificate of a
// node, read from its tree.
func (l *e2eLab) leafSerials(node string) map[string]string {
	out := map[string]string{}
	for _, c := range k3s.CheckCertificates(l.certFiles(node), time.Now(), 0) {
		if !c.IsCA {
			out[c.Filename+" "+c.Subject] = c.Serial
		}
	}
	return out
}

// certFiles reads the certificate files `k3s certificate check` lists.
func (l *e2eLab) certFiles(node string) map[string][]byte {
	n := l.Node(node)
	rel, err := k3s.FilesForServices(k3s.CheckServices(n.Role == inventory.RoleServer))
	if err != nil {
		l.t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, p := range rel {
		full := filepath.Join(n.K3s.DataDir, p)
		if b, err := os.ReadFile(l.HostPath(node, full)); err == nil {
			out[full] = b
		}
	}
	return out
}

func accLeafRotation(t *testing.T, l *e2eLab) {
	before := map[string]map[string]string{}
	for _, n := range l.Nodes("") {
		before[n] = l.leafSerials(n)
	}
	res := l.runCaretaker("run", "rotate-leaf-certs", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("rotate-leaf-certs failed:\n%s", res.Describe())
	}
	for _, n := range l.Nodes("") {
		after := l.leafSerials(n)
		renewed := 0
		for k, s := range before[n] {
			if after[k] != "" && after[k] != s {
				renewed++
			}
		}
		if renewed == 0 || renewed < len(before[n])/2 {
			t.Errorf("%s: %d of %d leaf certificates have a new serial after rotate-leaf-certs", n, renewed, len(before[n]))
		}
	}
	l.mustCheck(t)
}

func accBackupRestore(t *testing.T, l *e2eLab) {
	original := l.allConfigSources()
	res := l.runCaretaker("run", "backup", "-i", l.InventoryPath(), "--yes", "--output", "json", "-p", "name=acceptance")
	if res.Code != 0 {
		t.Fatalf("backup failed:\n%s", res.Describe())
	}
	// Damage what a backup holds: a config source and a certificate.
	cfg := l.Node("server-1").K3s.ConfigFile
	cert := filepath.Join(l.Node("server-2").K3s.DataDir, "server", "tls", "client-admin.crt")
	certBefore := l.ReadNodeFile("server-2", cert)
	l.replaceNodeFile(t, "server-1", cfg, append(l.ReadNodeFile("server-1", cfg), []byte("# changed after the backup\n")...))
	l.replaceNodeFile(t, "server-2", cert, selfSigned(t, "system:admin", false, time.Now().Add(24*time.Hour)))

	res = l.runCaretaker("run", "restore", "-i", l.InventoryPath(), "--yes", "--output", "json", "-p", "backup=acceptance")
	if res.Code != 0 {
		t.Fatalf("restore failed:\n%s", res.Describe())
	}
	if d := sameSources(original, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources after restore differ from the backup: %v", d)
	}
	if got := l.ReadNodeFile("server-2", cert); !bytes.Equal(got, certBefore) {
		t.Errorf("server-2: %s was not restored", cert)
	}
	l.mustCheck(t)
}

// accSnapshotRestore: a datastore snapshot is taken with K3s's own
// command and copied with the token (0600, same sha256); restore-datastore
// rehearses on both engines, and on the real engine puts the datastore
// back (a key written after the snapshot is gone), rejoins every server
// and leaves the config sources byte for byte. The simulator's etcd
// members cannot be reset, so the restore itself is proven on real K3s.
func accSnapshotRestore(t *testing.T, l *e2eLab) {
	res := l.runCaretaker("run", "snapshot", "-i", l.InventoryPath(), "--yes", "--output", "json")
	if res.Code != 0 {
		t.Fatalf("snapshot failed:\n%s", res.Describe())
	}
	var snap struct {
		Local     string `json:"local"`
		TokenFile string `json:"token_file"`
		SHA256    string `json:"sha256"`
		Path      string `json:"path"`
	}
	for _, e := range res.Events {
		if e.Type == "step_done" && e.str("step_name") == "snapshot" {
			b, _ := json.Marshal(e.Raw["result"])
			_ = json.Unmarshal(b, &snap)
		}
	}
	data, err := os.ReadFile(snap.Local)
	if err != nil {
		t.Fatalf("the controller's copy %q: %v (result %+v)", snap.Local, err, snap)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != snap.SHA256 || !bytes.Equal(data, l.ReadNodeFile("server-1", snap.Path)) {
		t.Errorf("the copy differs from %s on server-1 or from the sha256 in the result", snap.Path)
	}
	for _, p := range []string{snap.Local, snap.TokenFile} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: want mode 0600: %v %v", p, fi, err)
		}
	}
	if tok, _ := os.ReadFile(snap.TokenFile); strings.TrimSpace(string(tok)) != l.Token() {
		t.Error("the token file beside the snapshot does not hold the cluster token")
	}
	if strings.Contains(res.Stdout, l.Token()) {
		t.Error("the token appears in the JSON events")
	}

	// Written after the snapshot: the restore must take it away.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.etcdClient().Put(ctx, "/caretaker-acceptance/after-snapshot", "x"); err != nil {
		t.Fatal(err)
	}
	sources := l.allConfigSources()
	check := l.runCaretaker("run", "restore-datastore", "-i", l.InventoryPath(), "-p", "snapshot="+snap.Local, "--check", "--yes", "--output", "json")
	if check.Code != 0 || check.RunStatus() != "ok" {
		t.Fatalf("restore-datastore --check:\n%s", check.Describe())
	}
	if l.Engine() != lab.EngineReal {
		return
	}
	restored := l.runCaretaker("run", "restore-datastore", "-i", l.InventoryPath(), "-p", "snapshot="+snap.Local, "--yes", "--output", "json")
	if restored.Code != 0 {
		t.Fatalf("restore-datastore:\n%s", restored.Describe())
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	got, err := l.etcdClient().Get(ctx2, "/caretaker-acceptance/after-snapshot")
	if err != nil || len(got.Kvs) != 0 {
		t.Errorf("the key written after the snapshot is still there (%v): the datastore was not restored", err)
	}
	if d := sameSources(sources, l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources after the restore differ: %v", d)
	}
	for _, s := range []string{"server-2", "server-3"} {
		if r := restored.StepStatus("rejoin", s); r != "changed" {
			t.Errorf("rejoin on %s: %q", s, r)
		}
	}
	l.mustCheck(t)
}

// accKubeconfig: after the rotations, `caretaker kubeconfig` writes a
// cluster-admin kubeconfig (0600) that trusts the cluster's current CA and
// works against the API (GET /version, also asked again here with the
// written file); an existing file is refused; the key never reaches the
// output.
func accKubeconfig(t *testing.T, l *e2eLab) {
	out := filepath.Join(t.TempDir(), "admin.yaml")
	res := runCaretakerBinary(t, "kubeconfig", "-i", l.InventoryPath(), "--out", out)
	if res.Code != 0 || !strings.Contains(res.Stderr, "works from this machine") {
		t.Fatalf("kubeconfig: %s\n%s", res.Describe(), res.Stderr)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: want 0600: %v %v", out, fi, err)
	}
	cfg, err := clientcmd.LoadFromFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ctxName := cfg.CurrentContext
	c := cfg.Clusters[cfg.Contexts[ctxName].Cluster]
	if !bytes.Equal(c.CertificateAuthorityData, l.serverCA("server-1")) {
		t.Error("the kubeconfig does not trust server-1's current server CA")
	}
	key := cfg.AuthInfos[cfg.Contexts[ctxName].AuthInfo].ClientKeyData
	if len(key) == 0 || strings.Contains(res.Stdout+res.Stderr, strings.TrimSpace(string(key))) {
		t.Error("the client key is missing from the file or appears in the output")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", out)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := cs.Discovery().ServerVersion(); err != nil || v.GitVersion == "" {
		t.Errorf("GET /version with the written kubeconfig: %v %v", v, err)
	}
	again := runCaretakerBinary(t, "kubeconfig", "-i", l.InventoryPath(), "--out", out)
	if again.Code != exitBadInput || !strings.Contains(again.Stderr, "--force") {
		t.Errorf("kubeconfig over an existing file: %s", again.Describe())
	}
}
