package builtins

import (
	"fmt"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

// k3s.facts(node, settle="1m"): what caretaker knows about a node's K3s:
// version, role, effective server/token/cluster-init/data-dir with their
// source, the bug gate, the service state and the CAs on disk. A K3s that
// is starting is first given up to settle to become active.
func k3sFacts(c *Call) (any, error) {
	settle := Duration(k3sops.DefaultFactsSettle)
	t, err := c.nodeTarget("settle?", &settle)
	if err != nil {
		return nil, err
	}
	return k3sops.ReadFacts(c.env.Ctx, t, time.Duration(settle))
}

// k3s.backup_certs(node, name=""): archive the server's tls/, cred/ and
// token (an agent's certificates), the kubeconfig and every config source
// into DATA_DIR/caretaker/backup/<name>/backup.tar.gz on the node, with a
// sha256 manifest, and copy both to <state dir>/backups/<name>/<node>/ on
// the controller; files 0600. name defaults to the run ID. Taking the same
// backup again changes nothing.
func k3sBackupCerts(c *Call) (any, error) {
	var name string
	t, err := c.nodeTarget("name?", &name)
	if err != nil {
		return nil, err
	}
	return k3sops.Backup(c.env.Ctx, t, name)
}

// k3s.restore(node, backup="", restart=False): put the files of a backup
// (the newest on the node when no name is given) back on the node, with
// their modes and modification times, after taking a safety backup named
// pre-restore-<run-id> of what they hold now. Files already equal to the
// backup are left alone. restart=True restarts K3s afterwards. Note: a
// server whose datastore holds a different CA pulls it again at its next
// start; restoring a CA needs rotate_ca too.
func k3sRestore(c *Call) (any, error) {
	var (
		name    string
		restart bool
	)
	t, err := c.nodeTarget("backup?", &name, "restart?", &restart)
	if err != nil {
		return nil, err
	}
	return k3sops.Restore(c.env.Ctx, t, name, restart)
}

// k3s.strip_server(node): remove `server` from every source that sets it.
func k3sStripServer(c *Call) (any, error) {
	t, err := c.nodeTarget()
	if err != nil {
		return nil, err
	}
	return k3sops.StripServer(c.env.Ctx, t)
}

// k3s.restore_server(node): put back what strip_server removed, byte for
// byte, from the records on the node.
func k3sRestoreServer(c *Call) (any, error) {
	t, err := c.nodeTarget()
	if err != nil {
		return nil, err
	}
	return k3sops.RestoreServer(c.env.Ctx, t)
}

// k3s.restore_token(node): put back what update_token changed.
func k3sRestoreToken(c *Call) (any, error) {
	t, err := c.nodeTarget()
	if err != nil {
		return nil, err
	}
	return k3sops.RestoreToken(c.env.Ctx, t)
}

// k3s.generate_ca(node, root_cert="", root_key="", intermediate_cert="",
// intermediate_key="", force=False): generate a new CA set from the node's
// current one and stage it on the node under
// DATA_DIR/caretaker/rotate-ca/<run-id> (0600), ready for rotate_ca.
// Without custom files it is what rotate-default-ca-certs.sh makes (a new
// root per CA, cross-signed by the old one, a new intermediate, the old
// service key kept); with root_cert (and root_key, or an intermediate cert
// and key it signed) it is what generate-custom-ca-certs.sh makes. The
// custom files are read on the controller. The set is checked with K3s's
// rotate-ca validation first (force=True only warns). A second call in the
// same run returns the staged set unchanged.
func k3sGenerateCA(c *Call) (any, error) {
	var o k3sops.GenerateOptions
	t, err := c.nodeTarget("root_cert?", &o.RootCert, "root_key?", &o.RootKey,
		"intermediate_cert?", &o.IntermediateCert, "intermediate_key?", &o.IntermediateKey, "force?", &o.Force)
	if err != nil {
		return nil, err
	}
	return k3sops.GenerateCA(c.env.Ctx, t, o)
}

// k3s.rotate_ca(node, path, force=False): run `k3s certificate rotate-ca
// --path=<path>` on the node (a running server) and check that the
// datastore now holds the staged set. A datastore that already holds it
// is left alone.
func k3sRotateCA(c *Call) (any, error) {
	var (
		nodeArg starlark.Value
		path    string
		force   bool
	)
	if err := c.Unpack("node", &nodeArg, "path", &path, "force?", &force); err != nil {
		return nil, err
	}
	t, err := c.target(nodeArg)
	if err != nil {
		return nil, err
	}
	return k3sops.RotateCA(c.env.Ctx, t, path, force)
}

// k3s.restart(node, timeout="3m", check=True, regenerate_cert=False):
// restart the node's K3s service without blocking on systemd and wait
// until a new invocation is active and, on servers, /readyz answers on
// the supervisor port. K3s's new error lines are shown while it waits; a
// crash loop on one fatal error ends the wait early. When it does not come
// up, the journal lines that explain it are shown and the step fails, or
// with check=False the result says so: struct(ok, state, substate, error,
// journal, seconds) with systemd's ActiveState and SubState.
// regenerate_cert=True first creates SD/tls/dynamic-cert-regenerate on a
// server, so that K3s serves a new certificate of the CA on its disk
// (needed after a CA rotation).
func k3sRestart(c *Call) (any, error) {
	var (
		timeout = Duration(3 * time.Minute)
		o       = k3sops.RestartOptions{Fail: true}
	)
	t, err := c.nodeTarget("timeout?", &timeout, "check?", &o.Fail, "regenerate_cert?", &o.RegenerateCert)
	if err != nil {
		return nil, err
	}
	o.Timeout = time.Duration(timeout)
	return k3sops.Restart(c.env.Ctx, t, o)
}

// k3s.datastore(node): the bootstrap data in etcd, decrypted with the
// node's server token; CA subjects and sha256 of every file (no content).
func k3sDatastore(c *Call) (any, error) {
	t, err := c.nodeTarget()
	if err != nil {
		return nil, err
	}
	return k3sops.ReadDatastore(c.env.Ctx, t)
}

// k3s.verify(nodes=None, expect="", focus=None, live=True, fail=True,
// quiet=False, wait="0s"): every server's disk CA set equals the
// datastore's, every server serves it live (TLS chain on the supervisor
// port, GET /cacerts), every agent's server-ca.crt equals it. expect is
// the sha256 the datastore's server CA must have (the staged one after a
// rotation). focus limits which nodes decide the result (the others are
// still shown). Returns struct(ok, rows, stale, datastore, table,
// planned); fails with the table when not ok and fail is True (the error
// carries the table). quiet=True prints nothing. A live :6443 certificate
// must be issued by the datastore's CA itself: one of the previous CA
// ("prev. issuer") is not done. wait re-checks, for up to that long,
// servers whose only problem is such a certificate (servers converge on
// the newest one seconds after a restart). In check mode, an expect the
// datastore does not hold yet (the CA this run would rotate to) is
// reported as "would verify ..." with planned=True and ok=True.
func k3sVerify(c *Call) (any, error) {
	var (
		nodesArg, focusArg starlark.Value = starlark.None, starlark.None
		wait               Duration
		o                  = k3sops.VerifyOptions{Live: true, Fail: true}
	)
	if err := c.Unpack("nodes?", &nodesArg, "expect?", &o.Expect, "focus?", &focusArg, "live?", &o.Live, "fail?", &o.Fail, "quiet?", &o.Quiet, "wait?", &wait); err != nil {
		return nil, err
	}
	var err error
	if o.Nodes, err = c.nodes("nodes", nodesArg); err != nil {
		return nil, err
	}
	if focusArg != starlark.None {
		if o.Focus, err = c.nodes("focus", focusArg); err != nil {
			return nil, err
		}
	}
	if c.env.Node != nil {
		o.Via = append(o.Via, c.env.Node)
	}
	o.Wait = time.Duration(wait)
	return k3sops.Verify(c.env.Ctx, c.env, c.name, o)
}

// k3s.check(nodes=None, warn_days=30, fail=False, quiet=False): the
// expiry of every certificate on every node, as `k3s certificate check`
// lists them (CA chains included); rows are struct(node, file, subject,
// issuer, usages, expires, residual_days, status, serial, ca, k3s_status,
// renews_at_restart, renew_days); quiet=True does not print the table.
// A leaf within its release's renewal window (k3s.RenewDays) that expires
// later than warn_days is RENEWS-AT-RESTART: K3s reissues it at its next
// start. Returns struct(ok, rows, counts, table, renew_nodes); ok is False
// when a certificate is expired, not yet valid or within warn_days of
// expiry, and then fail=True fails the step.
func k3sCheck(c *Call) (any, error) {
	var (
		nodesArg starlark.Value = starlark.None
		o                       = k3sops.CheckOptions{WarnDays: defaultWarnDays}
	)
	if err := c.Unpack("nodes?", &nodesArg, "warn_days?", &o.WarnDays, "fail?", &o.Fail, "quiet?", &o.Quiet); err != nil {
		return nil, err
	}
	var err error
	if o.Nodes, err = c.nodes("nodes", nodesArg); err != nil {
		return nil, err
	}
	return k3sops.Check(c.env.Ctx, c.env, c.name, o)
}

// defaultWarnDays is k3s.check's warn_days, caretaker check's --warn-days
// and check-certs' warn_days: certificates expiring within it are findings.
// (It was K3s's 120-day window before caretaker knew which leaves a
// restart renews; those are RENEWS-AT-RESTART now.)
const defaultWarnDays = 30

// k3s.token(node, save=False): the server's current join token (SD/token),
// registered as a secret so it never shows in output; save=True also
// writes it to a 0600 file in the state directory and adds a note saying
// where.
// k3s.snapshot(node, name=""): a snapshot of the cluster's datastore
// with `k3s etcd-snapshot save --name NAME` (default caretaker-<run ID>)
// on the server, copied with the cluster token to the run's backup dir on
// the controller (0600, checked against its sha256 on the node). Returns
// struct(name, node, path, size, sha256, local, token_file, reused). In
// check mode it only says what it would do (a server without embedded
// etcd is refused in both).
func k3sSnapshot(c *Call) (any, error) {
	var name string
	t, err := c.nodeTarget("name?", &name)
	if err != nil {
		return nil, err
	}
	return k3sops.Snapshot(c.env.Ctx, t, name)
}

// k3s.restore_datastore(node, snapshot, token_file=""): restore the
// cluster's datastore on a stopped server without `server` from a
// snapshot, with `k3s server --cluster-reset
// --cluster-reset-restore-path`. snapshot is caretaker's copy on the
// controller (uploaded first) or a file in the server's snapshot
// directory; token_file (default SNAPSHOT.token) is the token it was
// taken with. Returns struct(node, snapshot, uploaded, pre_restore). The
// restore-datastore playbook stops every server first and rejoins the
// others after.
func k3sRestoreDatastore(c *Call) (any, error) {
	var o k3sops.RestoreDatastoreOptions
	t, err := c.nodeTarget("snapshot", &o.Snapshot, "token_file?", &o.TokenFile)
	if err != nil {
		return nil, err
	}
	return k3sops.RestoreDatastore(c.env.Ctx, t, o)
}

// k3s.find_snapshot(node, snapshot, token_file="") -> struct(path,
// controller, size, token_file): where restore_datastore would find the
// snapshot, read-only (a preflight before any server is stopped).
func k3sFindSnapshot(c *Call) (any, error) {
	var snapshot, tokenFile string
	t, err := c.nodeTarget("snapshot", &snapshot, "token_file?", &tokenFile)
	if err != nil {
		return nil, err
	}
	return k3sops.FindSnapshot(c.env.Ctx, t, snapshot, tokenFile)
}

// k3s.move_database_aside(node) -> path: move a stopped server's database
// (SD/db) to SD/db-pre-restore-<run ID>, so that it joins the restored
// cluster afresh at its next start. Idempotent; "" when it has none.
func k3sMoveDatabaseAside(c *Call) (any, error) {
	t, err := c.nodeTarget()
	if err != nil {
		return nil, err
	}
	return k3sops.MoveDatabaseAside(c.env.Ctx, t)
}

func k3sToken(c *Call) (any, error) {
	var save bool
	t, err := c.nodeTarget("save?", &save)
	if err != nil {
		return nil, err
	}
	return k3sops.Token(c.env.Ctx, t, save)
}

// k3s.update_token(node, token="", ca_hash=""): when the node is
// configured with a secure token (K10<hash>::user:pass), replace the CA
// hash in it with the new one — that of token (the new server token) or
// ca_hash (e.g. generate_ca's result) — keeping the node's own
// credentials.
func k3sUpdateToken(c *Call) (any, error) {
	var (
		nodeArg       starlark.Value
		token, caHash string
	)
	if err := c.Unpack("node", &nodeArg, "token?", &token, "ca_hash?", &caHash); err != nil {
		return nil, err
	}
	t, err := c.target(nodeArg)
	if err != nil {
		return nil, err
	}
	switch {
	case token != "" && caHash != "":
		return nil, fmt.Errorf("%s: give token or ca_hash, not both", c.name)
	case token != "":
		if caHash, err = k3sops.CAHashOfToken(c.env, token); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", c.name, t.Node.Name, err)
		}
	case caHash == "":
		return nil, fmt.Errorf("%s: give the new server token (token=k3s.token(server).token) or the new CA hash (ca_hash=)", c.name)
	}
	return k3sops.UpdateToken(c.env.Ctx, t, caHash)
}
