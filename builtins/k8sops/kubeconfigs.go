package k8sops

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/google/renameio/v2"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/runner"
)

// KubeconfigResult is what RefreshKubeconfigs found and did for one
// kubeconfig file on the controller.
type KubeconfigResult struct {
	Path string `json:"path"`
	// Status: "current" (trusts the current root already), "rewritten",
	// "would rewrite" (check mode), "not this cluster", "failed".
	Status string `json:"status"`
	// Clusters are the cluster entries that trusted only the previous root.
	Clusters []string `json:"clusters"`
	// Users are the users whose admin client certificate was replaced by
	// the server's current one (K3s re-issues it with the new client CA).
	Users []string `json:"users"`
	// Backup is the copy of the file before it was rewritten (0600).
	Backup string `json:"backup"`
	// Proof says how the rewritten file was proven against the API.
	Proof string `json:"proof"`
	Error string `json:"error"`
}

// UndoKindKubeconfig is the undo action RefreshKubeconfigs records: put
// the backup back.
const UndoKindKubeconfig = "k8s.kubeconfig"

func init() { runner.RegisterUndo(UndoKindKubeconfig, undoKubeconfig) }

type undoKubeconfigData struct {
	Path   string `json:"path"`
	Backup string `json:"backup"`
	How    string `json:"how"`
}

// RefreshKubeconfigs rewrites the controller's kubeconfig files paths
// (the inventory's `kubeconfigs:`) whose cluster entries trust only the
// previous root: their certificate-authority-data becomes the current
// server CA bundle, and a K3s admin user whose client certificate the
// cluster no longer accepts gets the server's current admin certificate
// (creds). Each file is proven with a request (GET /version) before it is
// written; one that does not work is not written. The original is copied
// to the run's backup dir (0600) and the undo recorded first; the write is
// atomic and keeps the file's mode and owner. Check mode reports what it
// would rewrite.
func (cl *Client) RefreshKubeconfigs(ctx context.Context, paths []string, roots *Roots, creds *k3sops.AdminCredentials) ([]KubeconfigResult, error) {
	var out []KubeconfigResult
	var failed []string
	for _, p := range paths {
		r := cl.refreshKubeconfig(ctx, p, roots, creds)
		if r.Status == "failed" {
			failed = append(failed, p+": "+r.Error)
		}
		out = append(out, r)
	}
	if len(failed) > 0 {
		return out, cl.errorf("kubeconfigs: %s", strings.Join(failed, "; "))
	}
	return out, nil
}

func (cl *Client) refreshKubeconfig(ctx context.Context, path string, roots *Roots, creds *k3sops.AdminCredentials) KubeconfigResult {
	res := KubeconfigResult{Path: path, Clusters: []string{}, Users: []string{}}
	fail := func(err error) KubeconfigResult {
		res.Status, res.Error = "failed", err.Error()
		return res
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	cfg, err := clientcmd.Load(orig)
	if err != nil {
		return fail(fmt.Errorf("not a kubeconfig: %w", err))
	}
	stale, ours := staleClusters(cfg, roots)
	if len(ours) == 0 {
		res.Status = "not this cluster"
		return res
	}
	if len(stale) == 0 {
		res.Status = "current"
		return res
	}
	res.Clusters = stale
	if roots.Planned {
		res.Status = "would rewrite"
		cl.Server.Run.Output(runner.StreamCheck, fmt.Sprintf("would rewrite %s after the rotation (clusters %s trust only the current root), proving it against the API first", path, strings.Join(stale, ", ")))
		return res
	}
	for _, name := range stale {
		cfg.Clusters[name].CertificateAuthorityData = roots.Bundle
	}
	res.Users = replaceAdminUsers(cfg, stale, creds)
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fail(err)
	}
	if err := cl.proveContexts(ctx, cfg, stale, &res); err != nil {
		return fail(err)
	}
	res.Status = "would rewrite"
	err = cl.Server.Run.Wet(fmt.Sprintf("rewrite %s (clusters %s trust only the previous root)", path, strings.Join(stale, ", ")), func() error {
		if err := cl.writeKubeconfig(path, orig, data, &res); err != nil {
			return err
		}
		res.Status = "rewritten"
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return res
}

// staleClusters are the cluster entries of cfg that trust only the
// previous root, and all entries that hold a root of this cluster.
func staleClusters(cfg *clientcmdapi.Config, roots *Roots) (stale, ours []string) {
	for name, c := range cfg.Clusters {
		ca := c.CertificateAuthorityData
		if len(ca) == 0 && c.CertificateAuthority != "" {
			ca, _ = os.ReadFile(c.CertificateAuthority)
		}
		switch roots.Judge(ca) {
		case TrustOldOnly:
			stale = append(stale, name)
			ours = append(ours, name)
		case TrustBoth, TrustNew:
			ours = append(ours, name)
		}
	}
	sort.Strings(stale)
	return stale, ours
}

// replaceAdminUsers gives the users of contexts on the stale clusters that
// hold a K3s admin client certificate (O=system:masters) the server's
// current one, when theirs was not issued by the CA that issued the
// current one. It returns their names.
func replaceAdminUsers(cfg *clientcmdapi.Config, stale []string, creds *k3sops.AdminCredentials) []string {
	cur := firstCert(creds.Cert)
	isStale := map[string]bool{}
	for _, s := range stale {
		isStale[s] = true
	}
	var out []string
	for _, ctx := range cfg.Contexts {
		u := cfg.AuthInfos[ctx.AuthInfo]
		if !isStale[ctx.Cluster] || u == nil || len(u.ClientCertificateData) == 0 {
			continue
		}
		c := firstCert(u.ClientCertificateData)
		if c == nil || cur == nil || !isAdmin(c) || string(c.RawIssuer) == string(cur.RawIssuer) && string(c.AuthorityKeyId) == string(cur.AuthorityKeyId) {
			continue
		}
		u.ClientCertificateData, u.ClientKeyData = creds.Cert, creds.Key
		out = append(out, ctx.AuthInfo)
	}
	sort.Strings(out)
	return out
}

func isAdmin(c *x509.Certificate) bool {
	for _, o := range c.Subject.Organization {
		if o == "system:masters" {
			return true
		}
	}
	return false
}

func firstCert(pemData []byte) *x509.Certificate {
	b, _ := pem.Decode(pemData)
	if b == nil {
		return nil
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil
	}
	return c
}

// proveContexts proves every context that uses a rewritten cluster.
func (cl *Client) proveContexts(ctx context.Context, cfg *clientcmdapi.Config, stale []string, res *KubeconfigResult) error {
	isStale := map[string]bool{}
	for _, s := range stale {
		isStale[s] = true
	}
	var names []string
	for name, c := range cfg.Contexts {
		if isStale[c.Cluster] {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return errors.New("no context uses the clusters it would rewrite: nothing could prove the new file")
	}
	sort.Strings(names)
	var hows []string
	for _, name := range names {
		c := cfg.DeepCopy()
		c.CurrentContext = name
		p, err := ProveKubeconfig(ctx, c, cl.Server.Exec, cl.Server.Node.K3s.SupervisorEndpoint)
		if err != nil {
			return fmt.Errorf("context %s does not work with the new CA, file left as it was: %w", name, err)
		}
		hows = append(hows, fmt.Sprintf("%s: %s %s", name, p.Version, p.How))
	}
	res.Proof = strings.Join(hows, "; ")
	return nil
}

// writeKubeconfig backs up the original (0600, the run's backup dir),
// records the undo, then writes data atomically with the file's mode and
// owner.
func (cl *Client) writeKubeconfig(path string, orig, data []byte, res *KubeconfigResult) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	run := cl.Server.Run
	sum := sha256.Sum256(orig)
	dir := filepath.Join(run.StateDir(), "backups", run.RunID(), "kubeconfigs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("backup dir: %w", err)
	}
	res.Backup = filepath.Join(dir, filepath.Base(path)+"."+hex.EncodeToString(sum[:4]))
	if err := renameio.WriteFile(res.Backup, orig, 0o600); err != nil {
		return fmt.Errorf("back up %s: %w", path, err)
	}
	u, _ := json.Marshal(undoKubeconfigData{Path: path, Backup: res.Backup, How: "put " + res.Backup + " back as " + path})
	if err := run.Undo(UndoKindKubeconfig, u); err != nil {
		return err
	}
	if err := writeKeepingOwner(path, data, st); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	run.MarkChanged()
	return nil
}

// writeKeepingOwner writes data to path atomically with st's mode and
// owner.
func writeKeepingOwner(path string, data []byte, st os.FileInfo) error {
	t, err := renameio.TempFile("", path)
	if err != nil {
		return err
	}
	defer func() { _ = t.Cleanup() }()
	if _, err := t.Write(data); err != nil {
		return err
	}
	if err := t.Chmod(st.Mode().Perm()); err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && (int(sys.Uid) != os.Geteuid() || int(sys.Gid) != os.Getegid()) {
		if err := t.Chown(int(sys.Uid), int(sys.Gid)); err != nil {
			return err
		}
	}
	return t.CloseAtomicallyReplace()
}

// undoKubeconfig puts a kubeconfig's backup back.
func undoKubeconfig(_ context.Context, env *runner.Env, data []byte) error {
	var u undoKubeconfigData
	if err := json.Unmarshal(data, &u); err != nil {
		return fmt.Errorf("%s undo: bad record: %w", UndoKindKubeconfig, err)
	}
	orig, err := os.ReadFile(u.Backup)
	if err != nil {
		return fmt.Errorf("%s undo: %w", UndoKindKubeconfig, err)
	}
	st, err := os.Stat(u.Path)
	if err != nil {
		return fmt.Errorf("%s undo: %w", UndoKindKubeconfig, err)
	}
	if err := writeKeepingOwner(u.Path, orig, st); err != nil {
		return fmt.Errorf("%s undo: %w", UndoKindKubeconfig, err)
	}
	env.Output(runner.StreamLog, u.How)
	return nil
}
