package k3s

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const hash64 = "6b0e0bbba996e17bfd34dd7eacb579cca457b5cb38470abbcf1c96101f346088"

func TestParseTokenForms(t *testing.T) {
	cases := []struct {
		in         string
		hash, user string
		pass       string
		secure     bool
	}{
		{"K10" + hash64 + "::server:token", hash64, "server", "token", true},
		{"token", "", "", "token", false},
		{"K10" + hash64 + "::server:pa:ss", hash64, "server", "pa:ss", true},
		{"K10::server:secret", "", "server", "secret", false},
		{"user:pass", "", "", "user:pass", false},
	}
	for _, c := range cases {
		tok, err := ParseToken(c.in)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", c.in, err)
		}
		if tok.CAHash != c.hash || tok.Username != c.user || tok.Password != c.pass || tok.Secure() != c.secure {
			t.Errorf("ParseToken(%q) = %+v", c.in, tok)
		}
		if tok.String() != c.in && c.in != "user:pass" {
			t.Errorf("String() = %q, want %q", tok.String(), c.in)
		}
		pass, err := NormalizeToken(c.in)
		if err != nil || pass != c.pass {
			t.Errorf("NormalizeToken(%q) = %q, %v; want %q", c.in, pass, err, c.pass)
		}
	}
}

func TestParseTokenRejects(t *testing.T) {
	for _, in := range []string{"", "K10abc::server:x", "K10" + hash64 + "::nouser", "K10" + hash64 + "::server:"} {
		if _, err := ParseToken(in); err == nil {
			t.Errorf("ParseToken(%q): want error", in)
		} else if in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("error leaks the token: %v", err)
		}
	}
	// kubeadm-style bootstrap tokens parse but cannot be server tokens (#13004).
	for _, in := range []string{"abcdef.0123456789abcdef", "K10" + hash64 + "::abcdef.0123456789abcdef"} {
		tok, err := ParseToken(in)
		if err != nil || tok.Bootstrap != "abcdef.0123456789abcdef" {
			t.Errorf("ParseToken(%q) = %+v, %v", in, tok, err)
		}
		_, err = NormalizeToken(in)
		if !errors.Is(err, ErrNormalizeToken) {
			t.Errorf("NormalizeToken(%q) err = %v", in, err)
		}
		if err.Error() != "failed to normalize server token; must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>" {
			t.Errorf("wording: %q", err)
		}
	}
}

func TestFormatToken(t *testing.T) {
	got := FormatToken(hash64, "server", "secret")
	// golden token.txt: 83 bytes with the newline.
	if want := "K10" + hash64 + "::server:secret"; got != want || len(got)+1 != 83 {
		t.Errorf("FormatToken = %q", got)
	}
	tok, _ := ParseToken("secret")
	if s := tok.WithCAHash(hash64).String(); s != got {
		t.Errorf("WithCAHash = %q", s)
	}
}

func TestHashCASingleCertIsFileHash(t *testing.T) {
	ca := testCA(t, "k3s-server-ca@1")
	b := ca.certPEM
	got, err := HashCA(b)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got != hex.EncodeToString(sum[:]) {
		t.Errorf("single cert: got %s, want file hash", got)
	}
	der := sha256.Sum256(ca.cert.Raw)
	if got == hex.EncodeToString(der[:]) {
		t.Errorf("single cert must not hash the DER")
	}
	// A trailing newline change changes the hash: it is over the file bytes.
	got2, _ := HashCA(append(append([]byte{}, b...), '\n'))
	if got2 == got {
		t.Error("hash must be over the raw bytes")
	}
}

func TestHashCACrossSignedBundleHashesNewRoot(t *testing.T) {
	old := testCA(t, "k3s-server-ca@1")
	// new root, self-signed with AKI==SKI (as openssl writes it), a
	// cross-signed copy by the old root, and an intermediate.
	root := testCA(t, "k3s-server-root@2")
	xs := crossSign(t, root, old)
	inter := testSubCA(t, "k3s-server-ca@2", root)
	bundle := joinPEM(inter.certPEM, root.certPEM, xs, old.certPEM)
	got, err := HashCA(bundle)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(root.cert.Raw)
	if got != hex.EncodeToString(want[:]) {
		t.Errorf("bundle hash = %s, want DER hash of the new self-signed root %x", got, want)
	}
	interHash := sha256.Sum256(inter.cert.Raw)
	if got == hex.EncodeToString(interHash[:]) {
		t.Error("must not hash the intermediate (the script's mistake, golden token.txt)")
	}
}

func TestHashCAUnverifiableBundleFallsBackToFileHash(t *testing.T) {
	a := testCA(t, "a")
	other := testCA(t, "b")
	inter := testSubCA(t, "i", other)
	// certs[0] (inter) is signed by `other`, which is not in the bundle.
	bundle := joinPEM(inter.certPEM, a.certPEM)
	got, err := HashCA(bundle)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bundle)
	if got != hex.EncodeToString(sum[:]) {
		t.Errorf("unverifiable bundle: got %s want file hash", got)
	}
	if _, err := HashCA([]byte("not pem")); err == nil {
		t.Error("want error for no certs")
	}
}

func TestServerTokenFile(t *testing.T) {
	ca := testCA(t, "k3s-server-ca@1")
	b, err := ServerTokenFile(ca.certPEM, "secret")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := HashCA(ca.certPEM)
	if string(b) != "K10"+h+"::server:secret\n" || len(b) != 83 {
		t.Errorf("token file %q (%d bytes)", b, len(b))
	}
	if b2, _ := ServerTokenFile(ca.certPEM, "K10"+hash64+"::server:secret"); string(b2) != string(b) {
		t.Error("a full token must give the same file (the hash is recomputed)")
	}
	if _, err := ServerTokenFile(ca.certPEM, "abcdef.0123456789abcdef"); err == nil {
		t.Error("bootstrap token must be refused")
	}
}
