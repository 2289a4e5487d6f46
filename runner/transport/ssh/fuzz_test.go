package ssh

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caretaker/caretaker/runner/errs"
)

// fuzzKeys are three fixed host keys.
func fuzzKeys(t testing.TB) []ssh.PublicKey {
	var out []ssh.PublicKey
	for i := range 3 {
		seed := bytes.Repeat([]byte{byte(i + 1)}, ed25519.SeedSize)
		pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pub)
	}
	return out
}

// FuzzKnownHosts (issue 12): whatever a known_hosts file holds and
// whatever host a node names, checking a host key never panics; a refusal
// is a host-key error naming the node; strict mode never writes the file;
// accept-new only appends, keeping every byte that was there, and the key
// it recorded is then known (and another key for that host is a change).
func FuzzKnownHosts(f *testing.F) {
	keys := fuzzKeys(f)
	line := func(host string, k ssh.PublicKey) string { return knownhosts.Line([]string{host}, k) + "\n" }
	hashed := knownhosts.HashHostname("10.0.0.1")
	for _, s := range []struct {
		content string
		host    string
		port    uint16
	}{
		{line("10.0.0.1", keys[0]), "10.0.0.1", 22},
		{line("[10.0.0.1]:2222", keys[1]), "10.0.0.1", 2222},
		{hashed + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(keys[0]))) + "\n", "10.0.0.1", 22},
		{"@revoked * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(keys[2]))) + "\n", "h", 22},
		{"@cert-authority *.example " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(keys[0]))) + "\n", "a.example", 22},
		{"garbage line\n# comment\n\n" + line("node-1", keys[0]), "node-1", 22},
		{"10.0.0.1 ssh-ed25519 AAAAnotbase64\n", "10.0.0.1", 22},
		{"no newline at the end " + strings.TrimSpace(line("x", keys[0])), "fe80::1", 22},
		{"", "host with space", 22}, // crasher: accept-new wrote a line no reader could parse
		{"", "evil\n* ssh-ed25519 AAAA", 22},
		{"", "*", 2222},
	} {
		f.Add([]byte(s.content), s.host, s.port, uint8(0), true)
		f.Add([]byte(s.content), s.host, s.port, uint8(1), false)
	}
	f.Fuzz(func(t *testing.T, content []byte, host string, port uint16, which uint8, acceptNew bool) {
		file := filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(file, content, 0o600); err != nil {
			t.Fatal(err)
		}
		policy := HostKeyStrict
		if acceptNew {
			policy = HostKeyAcceptNew
		}
		key := keys[int(which)%len(keys)]
		hostport := net.JoinHostPort(host, strconv.Itoa(int(port)))
		addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: int(port)}
		h := &hostKeyChecker{label: "node n1", file: file, policy: policy}
		err := h.check(hostport, addr, key)
		after, rerr := os.ReadFile(file)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if !errors.Is(err, errs.ErrHostKey) || !strings.HasPrefix(err.Error(), "node n1 (") {
				t.Fatalf("a refusal that is not a host-key error naming the node: %v", err)
			}
			if !bytes.Equal(after, content) && !(acceptNew && bytes.HasPrefix(after, content)) {
				t.Fatal("a refused host key changed the known_hosts file")
			}
			return
		}
		if !acceptNew || bytes.Equal(after, content) {
			if !bytes.Equal(after, content) {
				t.Fatal("strict mode wrote the known_hosts file")
			}
			return
		}
		if !bytes.HasPrefix(after, content) {
			t.Fatalf("accept-new did not only append:\n%q\n->\n%q", content, after)
		}
		strict := &hostKeyChecker{label: "node n1", file: file, policy: HostKeyStrict}
		if err := strict.check(hostport, addr, key); err != nil {
			t.Fatalf("the key accept-new recorded is not known afterwards: %v\n%q", err, after)
		}
		// Another key is refused: as changed, or as revoked when the file
		// revokes it (testdata/fuzz/FuzzKnownHosts/9e12c766ff99d184).
		other := keys[(int(which)+1)%len(keys)]
		if err := strict.check(hostport, addr, other); err == nil || !(strings.Contains(err.Error(), "CHANGED") || strings.Contains(err.Error(), "@revoked")) {
			t.Fatalf("another key for the host accept-new recorded: %v, want a changed-key (or revoked) error", err)
		}
	})
}
