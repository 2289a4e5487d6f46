package transporttest

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

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caretaker/caretaker/internal/sshserver"
	"github.com/caretaker/caretaker/runner/inventory"
)

// WriteIdentity writes the test client key in OpenSSH format to dir and
// returns its path.
func WriteIdentity(t testing.TB, dir string) string {
	t.Helper()
	b, err := ClientPEM()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ClientKey is the private client key of every test node (generated once).
var ClientKey = sync.OnceValues(func() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
})

// ClientPEM is the test client key (ClientKey) as an OpenSSH PEM file.
func ClientPEM() ([]byte, error) {
	priv, err := ClientKey()
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "caretaker test")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(blk), nil
}

// ClientPublicKey is the public half of the test client key.
func ClientPublicKey(t testing.TB) ssh.PublicKey {
	t.Helper()
	priv, err := ClientKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// AppendKnownHost records key for hostport in the known_hosts file path.
func AppendKnownHost(t testing.TB, path, hostport string, key ssh.PublicKey) {
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

// StartServer starts an in-process SSH server on 127.0.0.1:0 that
// accepts the test client key; configure may adjust its Config.
func StartServer(t testing.TB, configure func(*sshserver.Config)) *sshserver.Server {
	t.Helper()
	hk, err := sshserver.GenerateHostKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := sshserver.Config{
		Addr:               "127.0.0.1:0",
		HostKey:            hk,
		AuthorizedKeys:     []ssh.PublicKey{ClientPublicKey(t)},
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

// NodeFor returns a Node reaching srv with the test key, a known_hosts
// file (in a fresh temp dir, path in n.SSH.KnownHosts) that pins srv's host
// key, strict host key policy and short timeouts. The login user is
// "caretaker" so that sudo wrapping applies.
func NodeFor(t testing.TB, name string, srv *sshserver.Server) *inventory.Node {
	t.Helper()
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	AppendKnownHost(t, kh, srv.Addr(), srv.HostKey())
	host, port, _ := net.SplitHostPort(srv.Addr())
	p, _ := strconv.Atoi(port)
	return &inventory.Node{
		Name:    name,
		Cluster: "test",
		Address: host,
		Port:    p,
		User:    "caretaker",
		Role:    inventory.RoleServer,
		SSH: inventory.SSHSettings{
			IdentityFiles:  []string{WriteIdentity(t, dir)},
			KnownHosts:     kh,
			HostKeyPolicy:  inventory.HostKeyStrict,
			ConnectTimeout: inventory.Duration(5 * time.Second),
			CommandTimeout: inventory.Duration(time.Minute),
		},
	}
}

// StartNode starts an in-process SSH server on 127.0.0.1:0 with a
// pinned host key and returns a Node that reaches it (see NodeFor) and
// the server (closed when the test ends). Dial it with DialSSH.
func StartNode(t testing.TB, name string) (*inventory.Node, *sshserver.Server) {
	t.Helper()
	srv := StartServer(t, nil)
	return NodeFor(t, name, srv), srv
}
