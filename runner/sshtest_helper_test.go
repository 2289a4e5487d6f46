package runner

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/sshserver"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// writeTestIdentity writes the test client key in OpenSSH format to dir and
// returns its path.
func writeTestIdentity(t testing.TB, dir string) string {
	t.Helper()
	b, err := testClientPEM()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testClientKeyPair is the client key of every test node (generated once).
var testClientKeyPair = sync.OnceValues(func() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
})

func testClientPEM() ([]byte, error) {
	priv, err := testClientKeyPair()
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "caretaker test")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(blk), nil
}

func testClientPublicKey(t testing.TB) ssh.PublicKey {
	t.Helper()
	priv, err := testClientKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// appendKnownHost records key for hostport in the known_hosts file path.
func appendKnownHost(t testing.TB, path, hostport string, key ssh.PublicKey) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(knownhosts.Line([]string{knownhosts.Normalize(hostport)}, key) + "\n"); err != nil {
		t.Fatal(err)
	}
}

// startTestServer starts an in-process SSH server on 127.0.0.1:0 that
// accepts the test client key; configure may adjust its Config.
func startTestServer(t testing.TB, configure func(*sshserver.Config)) *sshserver.Server {
	t.Helper()
	hk, err := sshserver.GenerateHostKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := sshserver.Config{
		Addr:               "127.0.0.1:0",
		HostKey:            hk,
		AuthorizedKeys:     []ssh.PublicKey{testClientPublicKey(t)},
		AllowTCPForwarding: true,
		Logf:               t.Logf,
	}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := sshserver.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// testNodeFor returns a Node reaching srv with the test key, a known_hosts
// file (in a fresh temp dir, path in n.SSH.KnownHosts) that pins srv's host
// key, strict host key policy and short timeouts. The login user is
// "caretaker" so that sudo wrapping applies.
func testNodeFor(t testing.TB, name string, srv *sshserver.Server) *Node {
	t.Helper()
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	appendKnownHost(t, kh, srv.Addr(), srv.HostKey())
	host, port, _ := net.SplitHostPort(srv.Addr())
	p, _ := strconv.Atoi(port)
	return &Node{
		Name:    name,
		Cluster: "test",
		Address: host,
		Port:    p,
		User:    "caretaker",
		Role:    RoleServer,
		SSH: SSHSettings{
			IdentityFiles:  []string{writeTestIdentity(t, dir)},
			KnownHosts:     kh,
			HostKeyPolicy:  HostKeyStrict,
			ConnectTimeout: Duration(5 * time.Second),
			CommandTimeout: Duration(time.Minute),
		},
	}
}

// startTestNode starts an in-process SSH server on 127.0.0.1:0 with a
// pinned host key and returns a Node that reaches it (see testNodeFor) and
// the server (closed when the test ends). Dial it with DialSSH.
func startTestNode(t testing.TB, name string) (*Node, *sshserver.Server) {
	t.Helper()
	srv := startTestServer(t, nil)
	return testNodeFor(t, name, srv), srv
}
