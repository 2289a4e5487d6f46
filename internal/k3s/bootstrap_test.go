package k3s

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// k3s-vectors.md "Datastore key and bootstrap encryption".
const (
	vecPlain  = `{"ServerCA":{"Timestamp":"2025-03-11T14:00:00Z","Content":"aGVsbG8="}}`
	vecStored = "0001020304050607:EBESExQVFhcYGRobEIdI+0EtY366Lc+TEYMs6Rztw42qvPbmV6KJE7sXaPgvAhOlFcntLOyEZ70/CDY/DhQcMAtXeY/T2Ek+Ol3uSq6MAxga/h1Ir5fE9EBMP/07C1tj6tY="
)

func TestStorageKeyVectors(t *testing.T) {
	for pass, want := range map[string]string{
		"token":  "/bootstrap/3c469e9d6c58",
		"":       "/bootstrap/e3b0c44298fc",
		"secret": "/bootstrap/2bb80d537b1d", // golden bootstrap-key.txt
	} {
		if got := StorageKey(pass); got != want {
			t.Errorf("StorageKey(%q) = %s, want %s", pass, got, want)
		}
	}
}

func TestEncryptVector(t *testing.T) {
	salt, _ := hex.DecodeString("0001020304050607")
	nonce, _ := hex.DecodeString("101112131415161718191a1b")
	got, err := encryptWith("token", []byte(vecPlain), salt, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if got != vecStored {
		t.Errorf("encrypt vector:\n got %s\nwant %s", got, vecStored)
	}
}

func TestDecryptVector(t *testing.T) {
	got, err := Decrypt("token", vecStored)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != vecPlain {
		t.Errorf("decrypt vector = %q", got)
	}
	d, err := UnmarshalBootstrap(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(d[KeyServerCA].Content) != "hello" || !d[KeyServerCA].Timestamp.Equal(time.Date(2025, 3, 11, 14, 0, 0, 0, time.UTC)) {
		t.Errorf("decoded = %+v", d)
	}
	if _, err := Decrypt("wrong", vecStored); err == nil {
		t.Errorf("wrong passphrase: err = %v", err)
	}
	if _, err := Decrypt("token", "nocolon"); err == nil {
		t.Error("want error for value without ':'")
	}
}

func TestEncryptRoundTripRandom(t *testing.T) {
	a, err := Encrypt("secret", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Encrypt("secret", []byte("x"))
	if a == b {
		t.Error("salt and nonce must be random")
	}
	salt, _, _ := strings.Cut(a, ":")
	if len(salt) != 16 {
		t.Errorf("salt %q: want 16 hex chars", salt)
	}
	p, err := Decrypt("secret", a)
	if err != nil || string(p) != "x" {
		t.Errorf("round trip: %q %v", p, err)
	}
}

func TestMarshalBootstrapShape(t *testing.T) {
	ts := time.Date(2026, 11, 27, 14, 30, 38, 620672847, time.UTC)
	d := BootstrapData{
		KeyServerCA: {Timestamp: time.Date(2025, 3, 11, 14, 0, 0, 0, time.UTC), Content: []byte("hello")},
		KeyClientCA: {Timestamp: ts, Content: []byte{0xff}},
	}
	b, err := MarshalBootstrap(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ClientCA":{"Timestamp":"2026-11-27T14:30:38.620672847Z","Content":"/w=="},"ServerCA":{"Timestamp":"2025-03-11T14:00:00Z","Content":"aGVsbG8="}}` + "\n"
	if string(b) != want {
		t.Errorf("MarshalBootstrap:\n got %s\nwant %s", b, want)
	}
	back, err := UnmarshalBootstrap(b)
	if err != nil || !bytes.Equal(back[KeyClientCA].Content, []byte{0xff}) || !back[KeyClientCA].Timestamp.Equal(ts) {
		t.Errorf("round trip: %+v %v", back, err)
	}
	legacy, err := UnmarshalBootstrap([]byte(`{"ServerCA":"aGVsbG8="}`))
	if err != nil || string(legacy[KeyServerCA].Content) != "hello" {
		t.Errorf("legacy format: %+v %v", legacy, err)
	}
}

func TestBootstrapFilesTable(t *testing.T) {
	if len(BootstrapFiles) != 15 {
		t.Fatalf("want 13 keys + 2 optional, got %d", len(BootstrapFiles))
	}
	rot := 0
	for _, f := range BootstrapFiles {
		if f.Rotate {
			rot++
		}
	}
	// golden bootstrap-json-shape.json: 11 keys changed by rotate-ca.
	if rot != 11 {
		t.Errorf("rotatable keys = %d, want 11", rot)
	}
	if f, ok := BootstrapFileByKey(KeyETCDPeerCAKey); !ok || f.Path != "tls/etcd/peer-ca.key" {
		t.Errorf("ETCDPeerCAKey = %+v", f)
	}
}

func TestReadWriteBootstrapDir(t *testing.T) {
	dir := t.TempDir()
	ts := time.Date(2026, 11, 27, 14, 32, 25, 639067369, time.UTC)
	d := BootstrapData{
		KeyServerCA:     {Timestamp: ts, Content: []byte("ca")},
		KeyETCDPeerCA:   {Timestamp: ts.Add(time.Second), Content: []byte("peer")},
		KeyPasswdFile:   {Timestamp: ts, Content: []byte("p,server,server,k3s:server\n")},
		"SomethingElse": {Timestamp: ts, Content: []byte("x")},
	}
	if err := WriteBootstrapToDir(dir, d); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, "tls/etcd/peer-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 || !info.ModTime().Equal(ts.Add(time.Second)) {
		t.Errorf("peer-ca.crt mode %v mtime %v", info.Mode(), info.ModTime())
	}
	dinfo, _ := os.Stat(filepath.Join(dir, "tls/etcd"))
	if dinfo.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", dinfo.Mode())
	}
	back, err := ReadBootstrapFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 3 {
		t.Errorf("read back %d keys, want 3 (unknown key skipped, missing files skipped)", len(back))
	}
	if !back[KeyServerCA].Timestamp.Equal(ts) || string(back[KeyServerCA].Content) != "ca" {
		t.Errorf("ServerCA = %+v", back[KeyServerCA])
	}
	staged, err := ReadStagedBootstrap(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(staged[KeyPasswdFile].Content) != 0 || len(staged[KeyIPSECKey].Content) != 0 {
		t.Error("staged PasswdFile/IPSECKey must be empty like /dev/null")
	}
	files := back.Files()
	if string(files["tls/server-ca.crt"]) != "ca" {
		t.Errorf("Files() = %v", files)
	}
}

func TestReconcileFile(t *testing.T) {
	stored := File{Timestamp: time.Unix(1000, 900_000_000), Content: []byte("new")}
	cases := []struct {
		name   string
		exists bool
		disk   string
		mtime  time.Time
		want   ReconcileAction
	}{
		{"missing", false, "", time.Time{}, ReconcileUpdate},
		{"identical even if newer", true, "new", time.Unix(5000, 0), ReconcileSkip},
		{"older differs", true, "old", time.Unix(900, 0), ReconcileUpdate},
		{"2s newer (whole seconds)", true, "old", time.Unix(1002, 999_999_999), ReconcileUpdate},
		{"3s newer", true, "old", time.Unix(1003, 0), ReconcileNewerOnDisk},
	}
	for _, c := range cases {
		if got := ReconcileFile(c.exists, []byte(c.disk), c.mtime, stored); got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
	msg := NewerThanDatastoreMessage([]string{"/a/ipsec.psk", "/a/passwd"})
	if msg != "/a/ipsec.psk, /a/passwd newer than datastore and could cause a cluster outage. Remove the file(s) from disk and restart to be recreated from datastore." {
		t.Errorf("message %q", msg)
	}
}

// TestMarshalBootstrapGoldenLengths pins the plaintext framing against the
// real cluster: golden bootstrap-key.txt gives plainLen 8756 (first start)
// and 25338 (after rotate-ca); the content sizes are those of files.txt and
// the Timestamps those of bootstrap-json-shape.json. The lengths only add
// up with the trailing newline json.Encoder writes.
func TestMarshalBootstrapGoldenLengths(t *testing.T) {
	b, err := os.ReadFile("testdata/k3s-golden/bootstrap-json-shape.json")
	if err != nil {
		t.Fatalf("golden data testdata/k3s-golden (a copy of shared/k3s-golden) is required for this test: %v", err)
	}
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	sizes := map[string]map[string]int{
		"after_first_start": {"ClientCA": 570, "ClientCAKey": 227, "ETCDPeerCA": 566, "ETCDPeerCAKey": 227, "ETCDServerCA": 570, "ETCDServerCAKey": 227, "IPSECKey": 97, "PasswdFile": 59, "RequestHeaderCA": 591, "RequestHeaderCAKey": 227, "ServerCA": 566, "ServerCAKey": 227, "ServiceKey": 1675},
		"after_rotate_ca":   {"ClientCA": 2468, "ClientCAKey": 454, "ETCDPeerCA": 2480, "ETCDPeerCAKey": 454, "ETCDServerCA": 2509, "ETCDServerCAKey": 454, "IPSECKey": 97, "PasswdFile": 59, "RequestHeaderCA": 2555, "RequestHeaderCAKey": 454, "ServerCA": 2464, "ServerCAKey": 454, "ServiceKey": 3354},
	}
	want := map[string]int{"after_first_start": 8756, "after_rotate_ca": 25338}
	for phase, sz := range sizes {
		var entries map[string]struct{ Timestamp time.Time }
		if err := json.Unmarshal(shape[phase], &entries); err != nil {
			t.Fatal(err)
		}
		d := BootstrapData{}
		for k, e := range entries {
			d[k] = File{Timestamp: e.Timestamp, Content: bytes.Repeat([]byte{'x'}, sz[k])}
		}
		got, err := MarshalBootstrap(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != want[phase] {
			t.Errorf("%s: plaintext %d bytes, golden %d", phase, len(got), want[phase])
		}
		// Value framing: 16 + 1 + base64(12 + plain + 16) (golden valueLen).
		enc, _ := Encrypt("secret", got)
		if wantLen := map[string]int{"after_first_start": 11729, "after_rotate_ca": 33841}[phase]; len(enc) != wantLen {
			t.Errorf("%s: stored value %d bytes, golden %d", phase, len(enc), wantLen)
		}
	}
}
