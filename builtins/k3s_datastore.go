package builtins

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/lock"
)

// dsRead is the decrypted bootstrap data read from the datastore.
type dsRead struct {
	key  string
	rev  int64
	data k3s.BootstrapData
	via  string // the node whose tunnel reached etcd
}

// serverToken reads SD/token from a server and registers it (and its
// password) as secrets before anything could show it.
func (c *k3sCall) serverToken() (string, error) {
	if c.node.Role != inventory.RoleServer {
		return "", c.errorf("is an agent; the server token is kept on servers")
	}
	p := c.sd() + "/" + k3s.PathToken
	files, err := c.fetchMap(p)
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
func (c *k3sCall) etcdClient() (*clientv3.Client, error) {
	if c.node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the datastore is reached through a server")
	}
	tls := c.sd() + "/tls/etcd/"
	files, err := c.fetchMap(tls+"client.crt", tls+"client.key", tls+"server-client.crt", tls+"server-client.key", tls+"server-ca.crt")
	if err != nil {
		return nil, err
	}
	cert, key := files[tls+"client.crt"], files[tls+"client.key"]
	if len(cert.Data) == 0 || len(key.Data) == 0 {
		cert, key = files[tls+"server-client.crt"], files[tls+"server-client.key"]
	}
	ca := files[tls+"server-ca.crt"]
	if len(cert.Data) == 0 || len(key.Data) == 0 || len(ca.Data) == 0 {
		return nil, c.errorf("no etcd client certificate on the node (looked for %sclient.crt/.key, %sserver-client.crt/.key and %sserver-ca.crt): does this server run embedded etcd?", tls, tls, tls)
	}
	cli, err := lock.DialEtcd(c.ctx(), c.ex, c.node.K3s.EtcdEndpoint, cert.Data, key.Data, ca.Data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return cli, nil
}

// readDatastore reads and decrypts /bootstrap/<hash> through this server.
func (c *k3sCall) readDatastore() (*dsRead, error) {
	if c.node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the datastore is reached through a server")
	}
	tok, err := c.serverToken()
	if err != nil {
		return nil, err
	}
	pass, err := k3s.NormalizeToken(tok)
	if err != nil {
		return nil, c.errorf("the server token in %s/token: %w", c.sd(), err)
	}
	c.env.Redact(pass)
	cli, err := c.etcdClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	key := k3s.StorageKey(pass)
	resp, err := cli.Get(c.ctx(), key)
	if err != nil {
		return nil, c.errorf("read %s from etcd at %s: %w", key, c.node.K3s.EtcdEndpoint, err)
	}
	if len(resp.Kvs) == 0 {
		others, _ := cli.Get(c.ctx(), "/bootstrap/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
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
	return &dsRead{key: key, rev: kv.ModRevision, data: data, via: c.node.Name}, nil
}

// serverCA returns the datastore's server CA bundle.
func (d *dsRead) serverCA() []byte { return d.data[k3s.KeyServerCA].Content }

// datastoreVia reads the datastore through the first server of candidates
// that answers.
func datastoreVia(env *runner.Env, name string, candidates []*inventory.Node) (*dsRead, error) {
	var errs []string
	seen := map[*inventory.Node]bool{}
	for _, n := range candidates {
		if n == nil || n.Role != inventory.RoleServer || seen[n] {
			continue
		}
		seen[n] = true
		c, err := callFor(env, n, name)
		if err == nil {
			var d *dsRead
			if d, err = c.readDatastore(); err == nil {
				return d, nil
			}
		}
		if env.Ctx.Err() != nil {
			return nil, env.Ctx.Err()
		}
		errs = append(errs, err.Error())
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s: no server to read the datastore through", name)
	}
	return nil, fmt.Errorf("%s: the datastore could not be read through any server: %s", name, strings.Join(errs, "; "))
}

func datastoreValue(d *dsRead) (starlark.Value, error) {
	files := starlark.NewDict(len(d.data))
	var keys []string
	for k := range d.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := d.data[k]
		fd := starlark.StringDict{
			"sha256":    starlark.String(sha256Hex(f.Content)),
			"timestamp": starlark.String(f.Timestamp.Format(time.RFC3339Nano)),
			"path":      starlark.String(""),
			"subject":   starlark.String(""),
			"certs":     starlark.MakeInt(0),
		}
		if bf, ok := k3s.BootstrapFileByKey(k); ok {
			fd["path"] = starlark.String(bf.Path)
		}
		if strings.HasSuffix(k, "CA") {
			if fp, err := k3s.CAFingerprints(f.Content); err == nil {
				fd["subject"], fd["certs"] = starlark.String(fp.Subject), starlark.MakeInt(fp.Certs)
			}
		}
		files.SetKey(starlark.String(k), structOf("file", fd))
	}
	fp, err := k3s.CAFingerprints(d.serverCA())
	if err != nil {
		return nil, fmt.Errorf("the datastore's ServerCA: %w", err)
	}
	hash, err := k3s.HashCA(d.serverCA())
	if err != nil {
		return nil, fmt.Errorf("the datastore's ServerCA: %w", err)
	}
	return structOf("datastore", starlark.StringDict{
		"key":       starlark.String(d.key),
		"revision":  starlark.MakeInt64(d.rev),
		"via":       starlark.String(d.via),
		"files":     files,
		"server_ca": fingerprintValue(fp),
		"ca_hash":   starlark.String(hash),
	}), nil
}

// k3s.datastore(node): the bootstrap data in etcd, decrypted with the
// node's server token; CA subjects and sha256 of every file (no content).
func k3sDatastore(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	c, err := unpackK3sCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	d, err := c.readDatastore()
	if err != nil {
		return nil, err
	}
	v, err := datastoreValue(d)
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	fp, _ := k3s.CAFingerprints(d.serverCA())
	c.env.Output(runner.StreamLog, fmt.Sprintf("datastore %s (revision %d): server CA %s, sha256 %s", d.key, d.rev, fp.Subject, shortSHA(fp.SHA256)))
	return v, nil
}

// k3s.token(node, save=False): the server's current join token (SD/token),
// registered as a secret so it never shows in output; save=True also
// writes it to a 0600 file in the state directory and adds a note saying
// where.
func k3sToken(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var save bool
	c, err := unpackK3sCall(th, b, args, kwargs, "save?", &save)
	if err != nil {
		return nil, err
	}
	tok, err := c.serverToken()
	if err != nil {
		return nil, err
	}
	t, err := k3s.ParseToken(tok)
	if err != nil {
		return nil, c.errorf("%s/token: %w", c.sd(), err)
	}
	file := ""
	if save {
		file = filepath.Join(c.env.StateDir(), "runs", c.env.RunID(), "token")
		err := c.env.Wet("write the new join token to "+file+" (0600)", func() error {
			if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
				return c.errorf("create %s: %w", filepath.Dir(file), err)
			}
			if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
				return c.errorf("write %s: %w", file, err)
			}
			return os.Chmod(file, 0o600)
		})
		if err != nil {
			return nil, err
		}
		if !c.env.Check {
			c.env.Note(fmt.Sprintf("the cluster's join token (from %s) is in %s (0600); nodes joining from now on need it", c.node.Name, file))
		}
	}
	return structOf("token", starlark.StringDict{
		"token":   starlark.String(tok),
		"secure":  starlark.Bool(t.Secure()),
		"ca_hash": starlark.String(t.CAHash),
		"file":    starlark.String(file),
	}), nil
}
