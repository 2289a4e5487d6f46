package lab_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
)

// cluster is a started lab with one SSH executor per node, dialled from
// the lab's inventory with its pinned host keys.
type cluster struct {
	t     *testing.T
	lab   *lab.Lab
	inv   *inventory.Inventory
	nodes map[string]*inventory.Node
	ex    map[string]transport.Executor
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// connect loads the lab's inventory and dials every node over SSH.
func connect(t *testing.T, l *lab.Lab) *cluster {
	t.Helper()
	return connectInventory(t, l.InventoryPath(), &cluster{t: t, lab: l})
}

// connectInventory dials every node of an inventory into c.
func connectInventory(t *testing.T, path string, c *cluster) *cluster {
	t.Helper()
	inv, err := inventory.Load(path)
	if err != nil {
		t.Fatalf("load the lab inventory: %v", err)
	}
	if len(inv.Clusters) != 1 {
		t.Fatalf("inventory has %d clusters, want 1", len(inv.Clusters))
	}
	c.inv, c.nodes, c.ex = inv, map[string]*inventory.Node{}, map[string]transport.Executor{}
	for _, n := range inv.Clusters[0].Nodes {
		ex, err := sshnode.Dial(ctxT(t), n)
		if err != nil {
			t.Fatalf("ssh to %s: %v", n.Name, err)
		}
		t.Cleanup(func() { ex.Close() })
		c.nodes[n.Name] = n
		c.ex[n.Name] = ex
	}
	return c
}

// run runs a command line on a node and returns stdout, stderr and the
// exit code.
func (c *cluster) run(node, line string) (string, string, int) {
	c.t.Helper()
	var out, errb bytes.Buffer
	res, err := c.ex[node].Run(ctxT(c.t), transport.Command{Line: line, Stdout: &out, Stderr: &errb})
	if err != nil && !errors.Is(err, errspkg.ErrNonZeroExit) {
		c.t.Fatalf("%s: run %q: %v", node, line, err)
	}
	return out.String(), errb.String(), res.ExitCode
}

// mustRun runs a command that must succeed and returns its stdout.
func (c *cluster) mustRun(node, line string) string {
	c.t.Helper()
	out, errs, code := c.run(node, line)
	if code != 0 {
		c.t.Fatalf("%s: %q exited %d\nstdout: %s\nstderr: %s\njournal:\n%s", node, line, code, out, errs, c.journal(node))
	}
	return out
}

func (c *cluster) journal(node string) string {
	out, _, _ := c.run(node, "journalctl --no-pager -o cat")
	return out
}

func (c *cluster) read(node, path string) []byte {
	c.t.Helper()
	b, err := c.ex[node].ReadFile(ctxT(c.t), path)
	if err != nil {
		c.t.Fatalf("%s: read %s: %v", node, path, err)
	}
	return b
}

func (c *cluster) write(node, path string, data []byte) {
	c.t.Helper()
	if err := c.ex[node].WriteFile(ctxT(c.t), path, data, 0o600); err != nil {
		c.t.Fatalf("%s: write %s: %v", node, path, err)
	}
}

// sd is the server dir of a node as the node sees it.
func (c *cluster) sd(node string) string {
	d := c.nodes[node].K3s.DataDir
	if d == "" {
		d = inventory.DefaultDataDir
	}
	return filepath.Join(d, "server")
}

func (c *cluster) servers() []string {
	var out []string
	for _, n := range c.inv.Clusters[0].Nodes {
		if n.Role == inventory.RoleServer {
			out = append(out, n.Name)
		}
	}
	return out
}

// serverCA reads a node's SD/tls/server-ca.crt over SSH.
func (c *cluster) serverCA(node string) []byte {
	return c.read(node, filepath.Join(c.sd(node), k3s.PathServerCA))
}

// currentCAs reads the bootstrap files of a server over SSH, keyed
// relative to SD.
func (c *cluster) currentCAs(node string) map[string][]byte {
	out := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if bf.Optional {
			continue
		}
		out[bf.Path] = c.read(node, filepath.Join(c.sd(node), bf.Path))
	}
	return out
}

// stageRotation generates a cross-signed CA set as
// rotate-default-ca-certs.sh does and writes it over SSH into
// DD/server/rotate-ca on node, returning the staged files.
func (c *cluster) stageRotation(node string) (dir string, staged map[string][]byte) {
	c.t.Helper()
	staged, err := k3s.GenerateRotation(c.currentCAs(node), time.Now())
	if err != nil {
		c.t.Fatalf("generate the rotation CA set: %v", err)
	}
	dir = filepath.Join(c.sd(node), "rotate-ca")
	c.mustRun(node, "mkdir -p "+filepath.Join(dir, "tls", "etcd"))
	for rel, b := range staged {
		c.write(node, filepath.Join(dir, rel), b)
	}
	return dir, staged
}

// tokenPassword reads the cluster token's password from server/token.
func (c *cluster) tokenPassword(node string) string {
	c.t.Helper()
	tok := strings.TrimSpace(string(c.read(node, filepath.Join(c.sd(node), "token"))))
	pw, err := k3s.NormalizeToken(tok)
	if err != nil {
		c.t.Fatalf("normalize the token of %s: %v", node, err)
	}
	return pw
}

// etcdClient returns a client of the lab's etcd using the client cert the
// lab status names.
func etcdClient(t *testing.T, st lab.Status) *clientv3.Client {
	t.Helper()
	return etcdClientWith(t, st.Etcd.Endpoints, st.Etcd.Cert, st.Etcd.Key, st.Etcd.CACert)
}

// etcdClientWith returns an etcd client with the given cert, key and CA
// files (e.g. a node's own SD/tls/etcd/client.crt).
func etcdClientWith(t *testing.T, endpoints []string, certFile, keyFile, caFile string) *clientv3.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("etcd client cert: %v", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
		Logger:      nil,
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// datastoreFiles reads and decrypts the bootstrap data from the lab's etcd.
func datastoreFiles(t *testing.T, st lab.Status, password string) map[string][]byte {
	t.Helper()
	cli := etcdClient(t, st)
	ctx := ctxT(t)
	resp, err := cli.Get(ctx, k3s.StorageKey(password))
	if err != nil {
		t.Fatalf("etcd get: %v", err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("etcd has %d values at %s, want 1", len(resp.Kvs), k3s.StorageKey(password))
	}
	plain, err := k3s.Decrypt(password, string(resp.Kvs[0].Value))
	if err != nil {
		t.Fatalf("decrypt the bootstrap data: %v", err)
	}
	d, err := k3s.UnmarshalBootstrap(plain)
	if err != nil {
		t.Fatal(err)
	}
	return d.Files()
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }

func shortHash(b []byte) string {
	h, _ := k3s.HashCA(b)
	if len(h) > 12 {
		h = h[:12]
	}
	return fmt.Sprintf("%s (%d bytes)", h, len(b))
}

// sources reads a node's K3s config sources over SSH (§7).
func (c *cluster) sources(node string) k3s.Sources {
	c.t.Helper()
	n := c.nodes[node]
	unitPath := n.K3s.UnitFile
	if unitPath == "" {
		unitPath = inventory.DefaultServerUnit
		if n.Role == inventory.RoleAgent {
			unitPath = inventory.DefaultAgentUnit
		}
	}
	cfgPath := n.K3s.ConfigFile
	if cfgPath == "" {
		cfgPath = inventory.DefaultConfigFile
	}
	readOpt := func(p string) []byte {
		b, err := c.ex[node].ReadFile(ctxT(c.t), p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			c.t.Fatalf("%s: read %s: %v", node, p, err)
		}
		return b
	}
	src := k3s.Sources{Unit: readOpt(unitPath), UnitPath: unitPath, Config: readOpt(cfgPath), ConfigPath: cfgPath}
	out := c.mustRun(node, "ls -1 "+cfgPath+".d 2>/dev/null || true")
	for _, name := range strings.Fields(out) {
		if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
			p := filepath.Join(cfgPath+".d", name)
			src.DropIns = append(src.DropIns, k3s.NamedFile{Path: p, Data: readOpt(p)})
		}
	}
	service := "k3s"
	if n.Role == inventory.RoleAgent {
		service = "k3s-agent"
	}
	for _, p := range k3s.UnitEnvironmentFiles(src.Unit, service) {
		src.EnvFiles = append(src.EnvFiles, k3s.NamedFile{Path: p, Data: readOpt(p)})
	}
	return src
}

// applyEdits writes edits (After, or Before when undo) over SSH and runs
// daemon-reload when a unit file changed.
func (c *cluster) applyEdits(node string, edits []k3s.Edit, undo bool) {
	c.t.Helper()
	reload := false
	for _, e := range edits {
		data := e.After
		if undo {
			data = e.Before
		}
		c.write(node, e.Path, data)
		if strings.HasSuffix(e.Path, ".service") || strings.HasSuffix(e.Path, ".conf") {
			reload = true
		}
	}
	if reload {
		c.mustRun(node, "systemctl daemon-reload")
	}
}

// stripServer removes `server` from every source of node and returns the
// edits to restore it.
func (c *cluster) stripServer(node string) []k3s.Edit {
	c.t.Helper()
	edits, err := k3s.StripServer(c.sources(node))
	if err != nil {
		c.t.Fatalf("%s: strip server: %v", node, err)
	}
	if len(edits) == 0 {
		c.t.Fatalf("%s: no source sets server", node)
	}
	c.applyEdits(node, edits, false)
	return edits
}

// effectiveServer is the node's effective `server` after merging sources.
func (c *cluster) effectiveServer(node string) string {
	c.t.Helper()
	eff, err := k3s.Effective(c.sources(node))
	if err != nil {
		c.t.Fatalf("%s: effective config: %v", node, err)
	}
	return eff["server"].Value
}

// startLab starts a lab through labtest.
func startLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	return labtest.Start(t, o)
}
