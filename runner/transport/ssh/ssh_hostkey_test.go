package ssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

func rsaPublicKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestHostKeyAlgorithmsPreferKnownTypes(t *testing.T) {
	kh := filepath.Join(t.TempDir(), "known_hosts")
	transporttest.AppendKnownHost(t, kh, "10.0.0.5:2222", rsaPublicKey(t))
	got := hostKeyAlgorithms(kh, "10.0.0.5:2222")
	if len(got) < 4 || got[0] != ssh.KeyAlgoRSASHA512 || got[1] != ssh.KeyAlgoRSASHA256 {
		t.Fatalf("algorithms = %v; want the RSA ones first", got)
	}
	if !strings.Contains(strings.Join(got, " "), ssh.KeyAlgoED25519) {
		t.Errorf("algorithms = %v; the other types must follow", got)
	}
	if got := hostKeyAlgorithms(kh, "10.0.0.6:22"); got != nil {
		t.Errorf("unknown host: %v; want nil (library default)", got)
	}
}

func TestHostKeyOfAnotherTypeIsAChange(t *testing.T) {
	// known_hosts has an RSA key for the address; the server only has an
	// ed25519 key. OpenSSH calls that a changed key; so do we.
	n, srv := transporttest.StartNode(t, "server-1")
	os.WriteFile(n.SSH.KnownHosts, nil, 0o600)
	transporttest.AppendKnownHost(t, n.SSH.KnownHosts, srv.Addr(), rsaPublicKey(t))
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errs.ErrHostKey) || !strings.Contains(err.Error(), "CHANGED") || !strings.Contains(err.Error(), "ssh-rsa") {
		t.Fatalf("err = %v; want a changed-key error naming the old RSA key", err)
	}
}

func TestHostKeyRevoked(t *testing.T) {
	n, srv := transporttest.StartNode(t, "server-1")
	f, _ := os.OpenFile(n.SSH.KnownHosts, os.O_APPEND|os.O_WRONLY, 0o600)
	f.WriteString("@revoked * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.HostKey()))) + "\n")
	f.Close()
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errs.ErrHostKey) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("err = %v; want a revoked-key error", err)
	}
}

func TestHostKeyPolicyInvalid(t *testing.T) {
	n, _ := transporttest.StartNode(t, "server-1")
	n.SSH.HostKeyPolicy = "yes"
	_, err := Dial(context.Background(), n)
	if !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), "accept-new") {
		t.Fatalf("err = %v; want ErrBadInput listing the policies", err)
	}
}

// TestHostKeyMalformedLineWarnsOnce: a known_hosts line that does not
// parse is skipped by x/crypto even when another line matches; the dial
// succeeds, and a warning names the file and line, once per file.
func TestHostKeyMalformedLineWarnsOnce(t *testing.T) {
	n, _ := transporttest.StartNode(t, "server-1")
	good, err := os.ReadFile(n.SSH.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, append([]byte("# comment\nbroken-entry-without-a-key\n"), good...), 0o600); err != nil {
		t.Fatal(err)
	}
	n.SSH.KnownHosts = kh
	var warned bytes.Buffer
	SetWarnings(&warned)
	defer SetWarnings(os.Stderr)
	for range 2 {
		e, err := Dial(context.Background(), n)
		if err != nil {
			t.Fatalf("dial with a matching line beside a broken one: %v", err)
		}
		e.Close()
	}
	if got := warned.String(); strings.Count(got, "warning") != 1 || !strings.Contains(got, kh+":2: ") || !strings.Contains(got, "ignored") {
		t.Errorf("warnings %q; want one naming %s:2", got, kh)
	}
}
