package k3sops

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/lock"
)

// Datastore is the bootstrap data read from the datastore (etcd's
// /bootstrap/<hash>, decrypted with the server token): which key and
// revision, through which server, and what it holds, without contents.
type Datastore struct {
	Key      string `json:"key"`
	Revision int64  `json:"revision"`
	// Via is the server whose tunnel reached etcd.
	Via   string                   `json:"via"`
	Files map[string]DatastoreFile `json:"files"`
	// ServerCA describes the server CA bundle; CAHash is its hash as in
	// secure join tokens.
	ServerCA CA     `json:"server_ca"`
	CAHash   string `json:"ca_hash"`
	// Readers are the servers that read this datastore themselves, each
	// with its own token and etcd endpoint (Via among them).
	Readers []string `json:"readers"`
	// Failed says, for each server tried that could not, why the
	// datastore could not be read through it: a broken server the read
	// went around is a finding, not a detail.
	Failed map[string]string `json:"failed,omitempty"`
	// Elsewhere names the servers that read another datastore than Via's
	// (another key or server CA) with their own token and etcd endpoint,
	// and what they read: they are not servers of one cluster.
	Elsewhere map[string]string `json:"elsewhere,omitempty"`

	data k3s.BootstrapData
}

// DatastoreFile is one file of the bootstrap data.
type DatastoreFile struct {
	SHA256    string `json:"sha256"`
	Timestamp string `json:"timestamp"` // RFC 3339 with nanoseconds
	// Path is the file's place under the server dir ("" when K3s keeps it
	// only in the datastore); Subject and Certs describe CA bundles.
	Path    string `json:"path"`
	Subject string `json:"subject"`
	Certs   int    `json:"certs"`
}

// describe fills the exported fields from the data.
func (d *Datastore) describe() error {
	d.Files = map[string]DatastoreFile{}
	for k, f := range d.data {
		df := DatastoreFile{SHA256: sha256Hex(f.Content), Timestamp: f.Timestamp.Format(time.RFC3339Nano)}
		if bf, ok := k3s.BootstrapFileByKey(k); ok {
			df.Path = bf.Path
		}
		if strings.HasSuffix(k, "CA") {
			if fp, err := k3s.CAFingerprints(f.Content); err == nil {
				df.Subject, df.Certs = fp.Subject, fp.Certs
			}
		}
		d.Files[k] = df
	}
	fp, err := k3s.CAFingerprints(d.serverCA())
	if err != nil {
		return fmt.Errorf("the datastore's ServerCA: %w", err)
	}
	hash, err := k3s.HashCA(d.serverCA())
	if err != nil {
		return fmt.Errorf("the datastore's ServerCA: %w", err)
	}
	d.ServerCA, d.CAHash = caOf(fp), hash
	return nil
}

// serverToken reads SD/token from a server and registers it (and its
// password) as secrets before anything could show it.
func (c *Target) serverToken(ctx context.Context) (string, error) {
	if c.Node.Role != inventory.RoleServer {
		return "", c.errorf("is an agent; the server token is kept on servers")
	}
	p := c.sd() + "/" + k3s.PathToken
	files, err := c.fetchMap(ctx, p)
	if err != nil {
		return "", err
	}
	f, ok := files[p]
	if !ok {
		return "", c.errorf("%s does not exist: has K3s ever started on this server?", p)
	}
	tok := strings.TrimSpace(string(f.Data))
	c.redactToken(tok)
	if tok == "" {
		return "", c.errorf("%s is empty", p)
	}
	return tok, nil
}

// etcdClient opens an etcd client through the node's tunnel with the
// node's own etcd client certificate.
func (c *Target) etcdClient(ctx context.Context) (*clientv3.Client, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the datastore is reached through a server")
	}
	cert, key, ca, err := lock.EtcdClientFiles(ctx, c.Exec, c.Node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Op, err)
	}
	cli, err := lock.DialEtcd(ctx, c.Exec, c.Node.K3s.EtcdEndpoint, cert, key, ca)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Op, err)
	}
	return cli, nil
}

// readDatastore reads and decrypts /bootstrap/<hash> through this server.
func (c *Target) readDatastore(ctx context.Context) (*Datastore, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the datastore is reached through a server")
	}
	tok, err := c.serverToken(ctx)
	if err != nil {
		return nil, err
	}
	pass, err := k3s.NormalizeToken(tok)
	if err != nil {
		return nil, c.errorf("the server token in %s/token: %w", c.sd(), err)
	}
	c.Run.Redact(pass)
	cli, err := c.etcdClient(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	key := k3s.StorageKey(pass)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return nil, c.errorf("read %s from etcd at %s: %w", key, c.Node.K3s.EtcdEndpoint, err)
	}
	if len(resp.Kvs) == 0 {
		others, _ := cli.Get(ctx, "/bootstrap/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		var names []string
		if others != nil {
			for _, kv := range others.Kvs {
				names = append(names, string(kv.Key))
			}
		}
		if len(names) > 0 {
			return nil, c.errorf("etcd has no bootstrap data under %s but has %s: it was encrypted with a different token than the one in %s/token", key, strings.Join(names, ", "), c.sd())
		}
		return nil, c.errorf("etcd has no bootstrap data (%s is missing): is this a K3s datastore?", key)
	}
	kv := resp.Kvs[0]
	if len(kv.Value) == 0 {
		return nil, c.errorf("bootstrap key %s is empty (locked for initial create): is a server starting for the first time?", key)
	}
	plain, err := k3s.Decrypt(pass, string(kv.Value))
	if err != nil {
		return nil, c.errorf("decrypt %s with the token in %s/token: %w", key, c.sd(), err)
	}
	data, err := k3s.UnmarshalBootstrap(plain)
	if err != nil {
		return nil, c.errorf("bootstrap data under %s: %w", key, err)
	}
	ds := &Datastore{Key: key, Revision: kv.ModRevision, Via: c.Node.Name, data: data}
	if err := ds.describe(); err != nil {
		return nil, c.errorf("%w", err)
	}
	return ds, nil
}

// serverCA returns the datastore's server CA bundle.
func (d *Datastore) serverCA() []byte { return d.data[k3s.KeyServerCA].Content }

// DatastoreEach reads the datastore through every server of each at once,
// each with its own token (SD/token) and its own etcd endpoint, as K3s on
// that server reads it when it starts: health is judged per server, and a
// server that could not read it is not hidden behind one that could. Via
// is the first server of each (in its order) that read it; every other
// that could not is in Failed with the reason, and one that read a
// datastore other than Via's (another key or server CA: its token or
// etcd_endpoint leads elsewhere) is in Elsewhere. When no server of each
// can, the servers of fallback are tried one after another; it fails only
// when no server at all can.
func DatastoreEach(ctx context.Context, run Run, op string, each, fallback []*inventory.Node) (*Datastore, error) {
	each = uniqueServers(each, nil)
	reads, errs := forEachNode(ctx, run, each, op, func(c *Target) (*Datastore, error) {
		return c.readDatastore(ctx)
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	failed := map[string]string{}
	var ds *Datastore
	var tried []string
	for i, n := range each {
		switch {
		case errs[i] != nil:
			failed[n.Name] = errs[i].Error()
			tried = append(tried, errs[i].Error())
		case ds == nil:
			ds = reads[i]
		}
	}
	if ds == nil {
		for _, n := range uniqueServers(fallback, each) {
			c, err := NewTarget(ctx, run, n, nil, op)
			if err == nil {
				if ds, err = c.readDatastore(ctx); err == nil {
					break
				}
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			failed[n.Name] = err.Error()
			tried = append(tried, err.Error())
		}
	}
	if ds == nil {
		if len(tried) == 0 {
			return nil, fmt.Errorf("%s: no server to read the datastore through", op)
		}
		return nil, fmt.Errorf("%s: the datastore could not be read through any server: %s", op, strings.Join(tried, "; "))
	}
	ds.Readers = []string{ds.Via}
	elsewhere := map[string]string{}
	for i, n := range each {
		if errs[i] != nil || n.Name == ds.Via {
			continue
		}
		if d := reads[i]; d.Key != ds.Key || d.ServerCA.SHA256 != ds.ServerCA.SHA256 {
			elsewhere[n.Name] = fmt.Sprintf("%s, server CA %s", d.Key, caDesc(d.serverCA()))
			continue
		}
		ds.Readers = append(ds.Readers, n.Name)
	}
	if len(failed) > 0 {
		ds.Failed = failed
	}
	if len(elsewhere) > 0 {
		ds.Elsewhere = elsewhere
	}
	return ds, nil
}

// uniqueServers keeps the servers of nodes, each once, that are not in
// except.
func uniqueServers(nodes, except []*inventory.Node) []*inventory.Node {
	seen := map[*inventory.Node]bool{}
	for _, n := range except {
		seen[n] = true
	}
	var out []*inventory.Node
	for _, n := range nodes {
		if n == nil || n.Role != inventory.RoleServer || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

// ReadDatastore reads the bootstrap data in etcd through a server,
// decrypted with its server token, and logs its server CA.
func ReadDatastore(ctx context.Context, c *Target) (*Datastore, error) {
	d, err := c.readDatastore(ctx)
	if err != nil {
		return nil, err
	}
	c.Run.Output(runner.StreamLog, fmt.Sprintf("datastore %s (revision %d): server CA %s, sha256 %s", d.Key, d.Revision, d.ServerCA.Subject, shortSHA(d.ServerCA.SHA256)))
	return d, nil
}

// TokenResult is a server's join token. Token is registered as a secret:
// it never shows in output, events or journals.
type TokenResult struct {
	Token  string `json:"-" star:"token"`
	Secure bool   `json:"secure"`
	CAHash string `json:"ca_hash"`
	// File is where the token was saved ("" when not asked to).
	File string `json:"file"`
}

// Token reads the server's current join token (SD/token); save also
// writes it to a 0600 file in the run's directory on the controller and
// adds a note saying where.
func Token(ctx context.Context, c *Target, save bool) (*TokenResult, error) {
	tok, err := c.serverToken(ctx)
	if err != nil {
		return nil, err
	}
	t, err := k3s.ParseToken(tok)
	if err != nil {
		return nil, c.errorf("%s/token: %w", c.sd(), err)
	}
	res := &TokenResult{Token: tok, Secure: t.Secure(), CAHash: t.CAHash}
	if !save {
		return res, nil
	}
	res.File = filepath.Join(c.Run.StateDir(), "runs", c.Run.RunID(), "token")
	err = c.Run.Wet("write the new join token to "+res.File+" (0600)", func() error {
		if err := writeLocalPrivate(res.File, []byte(tok+"\n")); err != nil {
			return c.errorf("write %s: %w", res.File, err)
		}
		c.Run.Note(fmt.Sprintf("the cluster's join token (from %s) is in %s (0600); nodes joining from now on need it", c.Node.Name, res.File))
		return nil
	})
	return res, err
}
