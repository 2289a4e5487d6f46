package builtins

import (
	"reflect"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

// This file holds the reference entries of the k3s module and its result
// structs (see Reference).

// nodeParam is the optional node argument most k3s builtins take.
var nodeParam = RefParam{Name: "node", Type: "node | str | None", Default: "None", Doc: "a node value or name (None: the step's node)"}

// nodeRequired is the node argument of the builtins that need one.
var nodeRequired = RefParam{Name: "node", Type: "node | str", Doc: "a node value or a node name"}

func k3sSection() RefSection {
	return RefSection{
		Name:   "k3s",
		Title:  "The k3s module",
		Module: "k3s",
		Doc: "K3s maintenance steps. Every mutating call records its undo before it acts, goes through check " +
			"mode, is idempotent (a second call changes nothing and reports ok) and marks the step changed when it " +
			"changed something. Tokens and keys never appear in output, errors or notes.",
		Entries: append(append(append(k3sReadEntries(), k3sChangeEntries()...), append(k3sDatastoreEntries(), k3sTokenEntries()...)...), k3sRotateTokenEntries()...),
	}
}

func k3sReadEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "k3s.facts", When: WhenStep, Returns: "facts",
			Params: []RefParam{nodeParam,
				{Name: "settle", Type: "duration", Default: `"1m"`, Doc: "how long a K3s that is starting (unit activating) is given to become active before its facts are read; \"0s\" reads at once"}},
			Summary: "what caretaker knows about a node's K3s",
			Doc: "Version, role, the effective server/token/cluster-init/data-dir settings with the source that " +
				"sets each, the bug #11233 gate, the service state and the CAs on disk. A K3s brought back just " +
				"before the run is still starting: its etcd member, the datastore and :6443 come up one after the " +
				"other, so facts first waits up to settle for the unit to leave activating (service_state stays " +
				"\"activating\" when it does not: stuck, e.g. under TimeoutStartSec=0).",
			Check:   checkReadOnly,
			Example: "f = k3s.facts(node)\nif f.needs_workaround:\n    log(\"%s: bug #11233 (%s)\" % (node.name, f.bug_gate))",
		},
		{
			Name: "k3s.datastore", When: WhenStep, Returns: "datastore", Params: []RefParam{nodeParam},
			Summary: "the bootstrap data in etcd: CA subjects and sha256 of every file",
			Doc:     "Decrypted with the node's server token; no file content is returned.",
			Check:   checkReadOnly,
			Example: `log("datastore CA", k3s.datastore(node).server_ca.sha256)`,
		},
		{
			Name: "k3s.verify", When: WhenStep, Returns: "verify",
			Summary: "every node holds the datastore's CA, on disk and live",
			Doc: "Every server's disk CA set equals the datastore's, every server serves it live (TLS chain on the " +
				"supervisor port, GET /cacerts), every agent's server-ca.crt equals it. A live :6443 certificate " +
				"issued by the previous CA (\"prev. issuer\") is not done; wait re-checks, for up to that long, servers " +
				"whose only problem is such a certificate. Every server checked reads the datastore itself, at once, with " +
				"its own token and etcd endpoint (row.datastore: ok, token, unreadable, other); one that cannot is not ok, " +
				"named with the reason, and datastore.via is the server whose reading is used. " +
				"Fails with the table when not ok and fail is True.",
			Params: []RefParam{
				{Name: "nodes", Type: "selector | None", Default: "None", Doc: "the nodes to check (None: every node of the run)"},
				{Name: "expect", Type: "str", Default: `""`, Doc: "the sha256 the datastore's server CA must have (the staged one after a rotation)"},
				{Name: "focus", Type: "selector | None", Default: "None", Doc: "the nodes that decide the result (the others are still shown)"},
				{Name: "live", Type: "bool", Default: "True", Doc: "also check what servers serve on :6443 and /cacerts"},
				{Name: "fail", Type: "bool", Default: "True", Doc: "fail the step when not ok"},
				{Name: "quiet", Type: "bool", Default: "False", Doc: "print nothing"},
				{Name: "wait", Type: "duration", Default: `"0s"`, Doc: "re-check servers still serving a certificate of the previous CA for up to this long"},
			},
			Check: "Read-only: checks for real under --check. An expect the datastore does not hold yet (the CA " +
				"this run would rotate to) is reported as `would verify ...` and returns ok=True, planned=True.",
			Example: "v = k3s.verify(expect = staged.sha256, wait = \"30s\")\nlog(v.table)",
		},
		{
			Name: "k3s.check", When: WhenStep, Returns: "check",
			Summary: "certificate expiry on every node, as `k3s certificate check` lists it",
			Doc: "CA chains included. K3s reissues a leaf (not a CA) at its next start when it expires within the " +
				"renewal window of the node's release (120 days since v1.30.13, v1.31.9, v1.32.5, v1.33.1; 90 before): " +
				"such a leaf expiring later than warn_days is RENEWS-AT-RESTART (renews_at_restart, renew_nodes), not a " +
				"finding. ok is False when a certificate is expired, not yet valid or within warn_days of expiry; then " +
				"fail=True fails the step. k3s_status is what `k3s certificate check` itself says.",
			Params: []RefParam{
				{Name: "nodes", Type: "selector | None", Default: "None", Doc: "the nodes (None: every node of the run)"},
				{Name: "warn_days", Type: "int", Default: "30", Doc: "certificates expiring within this many days are findings (WARNING)"},
				{Name: "fail", Type: "bool", Default: "False", Doc: "fail the step when not ok"},
				{Name: "quiet", Type: "bool", Default: "False", Doc: "do not print the table"},
			},
			Check:   checkReadOnly,
			Example: "c = k3s.check(warn_days = 30)\nfor row in c.rows:\n    if row.status != \"OK\": log(row.node, row.file, row.expires)",
		},
	}
}

func k3sChangeEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "k3s.backup_certs", When: WhenStep, Returns: "backup",
			Params:  []RefParam{nodeParam, {Name: "name", Type: "str", Default: `""`, Doc: "the backup's name (\"\": the run ID)"}},
			Summary: "archive certificates, credentials, token and config sources",
			Doc: "Archives the server's tls/, cred/ and token (an agent's certificates), the kubeconfig and every config " +
				"source into DATA_DIR/caretaker/backup/NAME/backup.tar.gz on the node, with a sha256 manifest, and copies " +
				"both to STATE_DIR/backups/NAME/NODE/ on the controller; files 0600. Taking the same backup again changes nothing.",
			Check:   "Reports `would back up N files of NODE to ...` (or `would copy backup ...`) and returns backup with changed=False; nothing is written.",
			Example: "b = k3s.backup_certs(node)\nnote(\"backup of %s: %s\" % (node.name, b.local_dir))",
		},
		{
			Name: "k3s.restore", When: WhenStep, Returns: "restore",
			Params: []RefParam{nodeParam,
				{Name: "backup", Type: "str", Default: `""`, Doc: "the backup's name (\"\": the newest on the node)"},
				{Name: "restart", Type: "bool", Default: "False", Doc: "restart K3s afterwards"}},
			Summary: "put the files of a backup back on the node",
			Doc: "Restores modes and modification times, after a safety backup named pre-restore-RUN_ID of what the files " +
				"hold now. Files already equal to the backup are left alone. A server whose datastore holds a different CA " +
				"pulls it again at its next start: restoring a CA needs rotate_ca too.",
			Check:   "Reports `would restore N file(s) of backup ...` and writes nothing; returns restore listing the files a real run would write.",
			Example: `k3s.restore(node, backup = "20250101-020000-rotate-ca", restart = True)`,
		},
		{
			Name: "k3s.strip_server", When: WhenStep, Returns: "strip", Params: []RefParam{nodeParam},
			Summary: "remove `server` from every config source that sets it",
			Doc:     "The originals are kept on the node (restore_server puts them back) and the undo is recorded first.",
			Check:   "Reports `would strip server on NODE: ...` and returns strip with the edits it would make (changed=True when there are any); nothing is written.",
			Example: `s = k3s.strip_server(node)`,
		},
		{
			Name: "k3s.restore_server", When: WhenStep, Returns: "restored", Params: []RefParam{nodeParam},
			Summary: "put back what strip_server removed, byte for byte",
			Check:   "Reports `would put server back ...` and returns restored with the files a real run would write.",
			Example: `k3s.restore_server(node)`,
		},
		{
			Name: "k3s.generate_ca", When: WhenStep, Returns: "ca_set",
			Params: []RefParam{nodeParam,
				{Name: "root_cert", Type: "str", Default: `""`, Doc: "custom root certificate (PEM file on the controller)"},
				{Name: "root_key", Type: "str", Default: `""`, Doc: "the custom root's key (PEM file on the controller)"},
				{Name: "intermediate_cert", Type: "str", Default: `""`, Doc: "an intermediate signed by the root (PEM file on the controller)"},
				{Name: "intermediate_key", Type: "str", Default: `""`, Doc: "the intermediate's key"},
				{Name: "force", Type: "bool", Default: "False", Doc: "only warn when K3s's rotate-ca validation would refuse the set"}},
			Summary: "a new CA set, staged on a server for rotate_ca",
			Doc: "Staged under DATA_DIR/caretaker/rotate-ca/RUN_ID (0600). Without custom files it is what " +
				"rotate-default-ca-certs.sh makes (a new root per CA, cross-signed by the old one, a new intermediate, " +
				"the old service key kept); with root_cert it is what generate-custom-ca-certs.sh makes. A second call " +
				"in the same run returns the staged set unchanged.",
			Check:   "Generates and validates the set in memory, reports `would stage a new ... CA set ...` and returns ca_set (with the path it would use); nothing is written.",
			Example: "staged = k3s.generate_ca(node)\nshare(\"ca\", staged.path)",
		},
		{
			Name: "k3s.rotate_ca", When: WhenStep, Returns: "rotate_ca",
			Params: []RefParam{nodeRequired,
				{Name: "path", Type: "str", Doc: "the staged set (generate_ca's path)"},
				{Name: "force", Type: "bool", Default: "False", Doc: "pass --force to rotate-ca"}},
			Summary: "k3s certificate rotate-ca, then check the datastore holds the staged set",
			Doc:     "Runs on a running server. A datastore that already holds the staged set is left alone.",
			Check:   "Reports `would run on NODE: k3s certificate rotate-ca ...` and returns rotate_ca with changed=True; the datastore is not touched.",
			Example: `k3s.rotate_ca(node, shared("ca"))`,
		},
		{
			Name: "k3s.restart", When: WhenStep, Returns: "restart",
			Params: []RefParam{nodeParam,
				{Name: "timeout", Type: "duration", Default: `"3m"`, Doc: "how long K3s may take to come up"},
				{Name: "check", Type: "bool", Default: "True", Doc: "fail the step when K3s does not come up (False: the result says so)"},
				{Name: "regenerate_cert", Type: "bool", Default: "False", Doc: "on a server, make K3s serve a new certificate of the CA on its disk (after a CA rotation)"}},
			Summary: "restart K3s and wait until it is up",
			Doc: "Restarts the service without blocking on systemd and waits until a new invocation is active and, on " +
				"servers, /readyz answers on the supervisor port. K3s's new error lines are shown while it waits; a " +
				"crash loop on one fatal error ends the wait early. When it does not come up the explaining journal lines are shown.",
			Check:   "Reports `would restart SERVICE on NODE ...` and returns restart with ok=True, state \"active\"; nothing is restarted.",
			Example: `k3s.restart(node, timeout = "5m", regenerate_cert = True)`,
		},
	}
}

// k3sDatastoreEntries are the snapshot and restore of the datastore.
func k3sDatastoreEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "k3s.snapshot", When: WhenStep, Returns: "snapshot",
			Params:  []RefParam{nodeParam, {Name: "name", Type: "str", Default: `""`, Doc: "the snapshot's name prefix (\"\": caretaker-RUN_ID)"}},
			Summary: "a datastore snapshot (k3s etcd-snapshot save), copied to the controller",
			Doc: "Runs `k3s etcd-snapshot save --name NAME` on a server with embedded etcd and copies the file, with " +
				"the cluster token it restores only with, to the run's backup directory on the controller (0600, " +
				"checked against its sha256 on the node). A snapshot of this name an earlier attempt of the run took is reused.",
			Check:   "Reports `would save a datastore snapshot ...` and returns snapshot with only node set; a server without embedded etcd is refused in both modes.",
			Example: "s = k3s.snapshot(node)\nlog(s.local, s.sha256)",
		},
		{
			Name: "k3s.restore_datastore", When: WhenStep, Returns: "restore_datastore",
			Params: []RefParam{nodeParam,
				{Name: "snapshot", Type: "str", Default: `""`, Doc: "the snapshot (required): caretaker's copy on the controller (uploaded first) or a file in the server's snapshot directory"},
				{Name: "token_file", Type: "str", Default: `""`, Doc: "the cluster token the snapshot was taken with, on the controller (\"\": SNAPSHOT.token when it exists)"}},
			Summary: "restore the datastore from a snapshot (k3s server --cluster-reset)",
			Doc: "On a stopped server without `server` set, with K3s's `k3s server --cluster-reset " +
				"--cluster-reset-restore-path=SNAPSHOT`: the server becomes the only member of a cluster holding the " +
				"snapshot's data. K3s must be stopped on every server first; afterwards start this one and rejoin the " +
				"others with their database moved aside (move_database_aside). The restore-datastore playbook does all of it.",
			Check:   "Checks the snapshot and token for real, reports `would restore the datastore on NODE from ...` and returns restore_datastore without pre_restore; nothing is reset.",
			Example: `k3s.restore_datastore(node, snapshot = snapshot)`,
		},
		{
			Name: "k3s.find_snapshot", When: WhenStep, Returns: "snapshot_location",
			Params: []RefParam{nodeParam,
				{Name: "snapshot", Type: "str", Default: `""`, Doc: "the snapshot (required), as restore_datastore takes it"},
				{Name: "token_file", Type: "str", Default: `""`, Doc: "the token file, as restore_datastore takes it"}},
			Summary: "where restore_datastore would find a snapshot (a preflight)",
			Doc:     "Resolves the snapshot and its token file without changing anything, so that a missing snapshot is found before any server is stopped.",
			Check:   checkReadOnly,
			Example: `loc = k3s.find_snapshot(node, snapshot = snapshot)`,
		},
		{
			Name: "k3s.move_database_aside", When: WhenStep, Returns: "str", Params: []RefParam{nodeParam},
			Summary: "move a stopped server's database aside so that it rejoins afresh",
			Doc:     "Moves SD/db to SD/db-pre-restore-RUN_ID and returns that path (\"\" when the server has no database). K3s must be stopped. Idempotent.",
			Check:   "Reports `would move SD/db aside to ...` and returns the path it would use; nothing is moved.",
			Example: `aside = k3s.move_database_aside(node)`,
		},
	}
}

func k3sTokenEntries() []RefEntry {
	return []RefEntry{
		{
			Name: "k3s.token", When: WhenStep, Returns: "token",
			Params:  []RefParam{nodeParam, {Name: "save", Type: "bool", Default: "False", Doc: "also write it to a 0600 file in the state directory (and add a note saying where)"}},
			Summary: "the server's current join token (redacted everywhere)",
			Check:   "Reads for real; save=True reports `would write the new join token to ...` instead of writing.",
			Example: `t = k3s.token(node, save = True)`,
		},
		{
			Name: "k3s.update_token", When: WhenStep, Returns: "token_update",
			Params: []RefParam{nodeRequired,
				{Name: "token", Type: "str", Default: `""`, Doc: "the new server token (its CA hash is used)"},
				{Name: "ca_hash", Type: "str", Default: `""`, Doc: "the new CA hash (e.g. generate_ca's ca_hash); give token or ca_hash"}},
			Summary: "put the new CA hash into a node's configured secure token",
			Doc: "When the node is configured with a secure token (K10<hash>::user:pass), replaces the CA hash in it, " +
				"keeping the node's own credentials; the originals are kept on the node (restore_token).",
			Check:   "Reports `would put the new CA hash in the token on NODE ...` and returns token_update with the edits it would make; nothing is written.",
			Example: `k3s.update_token(node, token = k3s.token("server-1").token)`,
		},
		{
			Name: "k3s.restore_token", When: WhenStep, Returns: "restored", Params: []RefParam{nodeParam},
			Summary: "undo update_token, byte for byte",
			Check:   "Reports `would ...` for each file and writes nothing.",
			Example: `k3s.restore_token(node)`,
		},
	}
}

// k3sStructs are the k3s results, typed by the k3sops types the runtime
// converts (field types come from them; see APIReference).
func k3sStructs() []RefStruct {
	return append(append(append(k3sFactStructs(), k3sCheckStructs()...), k3sChangeStructs()...), k3sRotateTokenStructs()...)
}

func k3sFactStructs() []RefStruct {
	return []RefStruct{
		{Name: "facts", Summary: "what k3s.facts returns", goType: reflect.TypeFor[k3sops.Facts](), Fields: []RefField{
			{Name: "name", Doc: "the node's name"},
			{Name: "role", Doc: "server or agent"},
			{Name: "version", Doc: "K3s's version, e.g. v1.30.10+k3s1"},
			{Name: "version_line", Doc: "the first line of `k3s --version`"},
			{Name: "needs_workaround", Doc: "the release has bug #11233 (rotate-ca leaves the old CA on servers joined with --server)"},
			{Name: "bug_gate", Doc: "what decided needs_workaround (the version, or the inventory's bootstrap_bug)"},
			{Name: "service", Doc: "the systemd service"},
			{Name: "service_state", Doc: "its ActiveState (active, failed, ...)"},
			{Name: "data_dir", Doc: "the effective data directory"},
			{Name: "server", Doc: "the effective `server` setting and where it is set"},
			{Name: "server_url", Doc: "its value (\"\" when not set)"},
			{Name: "token", Doc: "the effective `token` setting (its value is redacted)"},
			{Name: "token_kind", Doc: "secure, short, bootstrap, file, invalid or none"},
			{Name: "cluster_init", Doc: "the effective `cluster-init` setting"},
			{Name: "data_dir_setting", Doc: "the effective `data-dir` setting"},
			{Name: "cas", Doc: "the CA bundles on disk, by file"},
			{Name: "sources", Doc: "the config sources read, in K3s's order"},
		}},
		{Name: "setting", Summary: "an effective K3s setting and its source", goType: reflect.TypeFor[k3sops.Setting](), Fields: []RefField{
			{Name: "source", Doc: "the file that sets it (\"\" when not set)"},
			{Name: "line", Doc: "its line there"},
			{Name: "kind", Doc: "config, drop-in, unit-arg, unit-env or env"},
			{Name: "set", Doc: "the setting is set somewhere"},
			{Name: "value", Doc: "the value (absent for secrets)"},
			{Name: "shadowed", Doc: "other sources that set it, overridden by this one"},
		}},
		{Name: "origin", Summary: "a source that also sets a setting", goType: reflect.TypeFor[k3sops.Origin](), Fields: []RefField{
			{Name: "source", Doc: "the file"},
			{Name: "line", Doc: "the line"},
			{Name: "kind", Doc: "config, drop-in, unit-arg, unit-env or env"},
			{Name: "value", Doc: "the value there (absent for secrets)"},
		}},
		{Name: "ca", Summary: "a CA bundle", goType: reflect.TypeFor[k3sops.CA](), Fields: []RefField{
			{Name: "certs", Doc: "certificates in the bundle"},
			{Name: "sha256", Doc: "sha256 of the bundle"},
			{Name: "subject", Doc: "the first certificate's subject"},
			{Name: "roots", Doc: "sha256 (of the DER) of the bundle's self-signed roots, the one its first certificate chains to first; after a cross-signed rotation the others are the roots it was rotated from"},
		}},
		{Name: "datastore", Summary: "what k3s.datastore returns", goType: reflect.TypeFor[k3sops.Datastore](), Fields: []RefField{
			{Name: "key", Doc: "the etcd key of the bootstrap data"},
			{Name: "revision", Doc: "its etcd revision"},
			{Name: "via", Doc: "the server whose tunnel reached etcd"},
			{Name: "files", Doc: "every bootstrap file, by key"},
			{Name: "server_ca", Doc: "the server CA bundle"},
			{Name: "ca_hash", Doc: "its hash, as in secure join tokens"},
			{Name: "readers", Doc: "the servers that read this datastore themselves, each with its own token and etcd endpoint"},
			{Name: "failed", Doc: "the servers tried that could not read it, and why"},
			{Name: "elsewhere", Doc: "the servers that read another datastore (key, server CA) with their own token and etcd endpoint"},
		}},
		{Name: "datastore_file", Summary: "one file of the bootstrap data", goType: reflect.TypeFor[k3sops.DatastoreFile](), Fields: []RefField{
			{Name: "sha256", Doc: "sha256 of the content"},
			{Name: "timestamp", Doc: "K3s's timestamp, RFC 3339 with nanoseconds"},
			{Name: "path", Doc: "the file's place under the server dir (\"\" when kept only in the datastore)"},
			{Name: "subject", Doc: "a CA bundle's first subject"},
			{Name: "certs", Doc: "a CA bundle's certificate count"},
		}},
	}
}

func k3sCheckStructs() []RefStruct {
	return []RefStruct{
		{Name: "verify", Summary: "what k3s.verify returns", goType: reflect.TypeFor[k3sops.VerifyResult](), Fields: []RefField{
			{Name: "ok", Doc: "every focused node holds the datastore's CA (and expect, when given)"},
			{Name: "rows", Doc: "one row per node"},
			{Name: "stale", Doc: "the nodes that do not"},
			{Name: "datastore", Doc: "the datastore as read"},
			{Name: "table", Doc: "the table verify prints"},
			{Name: "planned", Doc: "under --check: expect is the CA this run would rotate to"},
		}},
		{Name: "row", Summary: "one node in k3s.verify", goType: reflect.TypeFor[k3sops.Row](), Fields: []RefField{
			{Name: "node", Doc: "the node"},
			{Name: "role", Doc: "server or agent"},
			{Name: "ok", Doc: "the node holds the datastore's CA"},
			{Name: "disk", Doc: "the disk CA set: ok, OLD <subject>, N file(s) differ, ..."},
			{Name: "live", Doc: "the :6443 chain (servers)"},
			{Name: "cacerts", Doc: "GET /cacerts (servers)"},
			{Name: "agent", Doc: "the agent's server-ca.crt (agents)"},
			{Name: "datastore", Doc: "a server reads the datastore itself: ok, token (its token does not open it: it would not come back from a restart), unreadable (the read through it failed), other (it reads another datastore), - (agents)"},
			{Name: "problems", Doc: "what is wrong"},
			{Name: "warnings", Doc: "what is odd but not wrong"},
			{Name: "service", Doc: "the unit's state when K3s is not active on a server: an outage, not drift"},
			{Name: "previous", Doc: "the disk holds the set the datastore's rotates from (a rotation in progress)"},
		}},
		{Name: "check", Summary: "what k3s.check returns", goType: reflect.TypeFor[k3sops.CheckResult](), Fields: []RefField{
			{Name: "ok", Doc: "no certificate expired, not yet valid or within warn_days"},
			{Name: "rows", Doc: "one row per certificate"},
			{Name: "counts", Doc: "rows by status"},
			{Name: "table", Doc: "the table check prints"},
			{Name: "renew_nodes", Doc: "the nodes with a leaf K3s reissues at their next start (renews_at_restart)"},
		}},
		{Name: "cert", Summary: "one certificate in k3s.check", goType: reflect.TypeFor[k3sops.CertRow](), Fields: []RefField{
			{Name: "node", Doc: "the node"},
			{Name: "file", Doc: "the certificate file"},
			{Name: "subject", Doc: "its subject"},
			{Name: "issuer", Doc: "its issuer"},
			{Name: "expires", Doc: "NotAfter, RFC 3339 in UTC"},
			{Name: "residual_days", Doc: "days left"},
			{Name: "status", Doc: "OK, WARNING (within warn_days), RENEWS-AT-RESTART (a leaf K3s reissues at its next start), EXPIRED or NOT YET VALID"},
			{Name: "usages", Doc: "key usages"},
			{Name: "serial", Doc: "serial number"},
			{Name: "ca", Doc: "a CA certificate"},
			{Name: "k3s_status", Doc: "what `k3s certificate check` says: OK, WARNING (within the release's renewal window), EXPIRED or NOT YET VALID"},
			{Name: "renews_at_restart", Doc: "K3s reissues this leaf at the node's next start (expired, or within renew_days)"},
			{Name: "renew_days", Doc: "the renewal window of the node's K3s release (120 or 90 days)"},
		}},
	}
}

func k3sChangeStructs() []RefStruct {
	edit := []RefField{
		{Name: "changed", Doc: "files were (or under --check would be) edited"},
		{Name: "edits", Doc: "the edits"},
		{Name: "record", Doc: "the directory on the node that keeps the originals"},
	}
	return []RefStruct{
		{Name: "backup", Summary: "what k3s.backup_certs returns", goType: reflect.TypeFor[k3sops.BackupResult](), Fields: []RefField{
			{Name: "name", Doc: "the backup's name"},
			{Name: "changed", Doc: "False when it existed already (or under --check)"},
			{Name: "node_dir", Doc: "backup.tar.gz and manifest.json on the node"},
			{Name: "local_dir", Doc: "the same on the controller"},
			{Name: "files", Doc: "the files archived"},
			{Name: "archive_sha256", Doc: "sha256 of backup.tar.gz"},
		}},
		{Name: "restore", Summary: "what k3s.restore returns", goType: reflect.TypeFor[k3sops.RestoreResult](), Fields: []RefField{
			{Name: "changed", Doc: "files were written"},
			{Name: "backup", Doc: "the backup restored"},
			{Name: "files", Doc: "the files written"},
			{Name: "safety_backup", Doc: "the backup of what they held before"},
		}},
		{Name: "ca_set", Summary: "what k3s.generate_ca returns", goType: reflect.TypeFor[k3sops.CASet](), Fields: []RefField{
			{Name: "path", Doc: "the staged set's directory (for rotate_ca)"},
			{Name: "changed", Doc: "it was staged by this call"},
			{Name: "kind", Doc: "self-signed or custom"},
			{Name: "root_changed", Doc: "the root CA differs from the current one"},
			{Name: "ca_hash", Doc: "the new server CA's hash, as in secure join tokens"},
			{Name: "server_ca", Doc: "the new server CA bundle"},
			{Name: "sha256", Doc: "its sha256 (k3s.verify's expect)"},
			{Name: "files", Doc: "the staged files"},
		}},
		{Name: "rotate_ca", Summary: "what k3s.rotate_ca returns", goType: reflect.TypeFor[k3sops.RotateResult](), Fields: []RefField{
			{Name: "changed", Doc: "rotate-ca ran"},
			{Name: "server_ca", Doc: "the datastore's server CA afterwards"},
		}},
		{Name: "restart", Summary: "what k3s.restart returns", goType: reflect.TypeFor[k3sops.RestartResult](), Fields: []RefField{
			{Name: "ok", Doc: "K3s came up"},
			{Name: "state", Doc: "systemd's ActiveState (active, activating, failed, ...)"},
			{Name: "substate", Doc: "systemd's SubState (running, start, auto-restart, ...)"},
			{Name: "error", Doc: "why K3s is not up (\"\" when ok)"},
			{Name: "journal", Doc: "the journal lines that explain a failed restart, errors first"},
			{Name: "seconds", Doc: "how long it took"},
		}},
		{Name: "snapshot", Summary: "what k3s.snapshot returns", goType: reflect.TypeFor[k3sops.SnapshotResult](), Fields: []RefField{
			{Name: "name", Doc: "K3s's name of the snapshot file: NAME-<node>-<unix time>"},
			{Name: "node", Doc: "the server it was taken on"},
			{Name: "path", Doc: "the file on the node (\"\" under --check)"},
			{Name: "size", Doc: "its size in bytes"},
			{Name: "sha256", Doc: "its sha256, the same on the node and the controller"},
			{Name: "local", Doc: "the controller's copy (0600, in the run's backup directory)"},
			{Name: "token_file", Doc: "the cluster token beside it (0600): a snapshot restores only with its token"},
			{Name: "reused", Doc: "an earlier attempt of the run had taken it already"},
		}},
		{Name: "snapshot_location", Summary: "what k3s.find_snapshot returns", goType: reflect.TypeFor[k3sops.SnapshotLocation](), Fields: []RefField{
			{Name: "path", Doc: "the snapshot on the node (where it would be uploaded to)"},
			{Name: "controller", Doc: "the controller file (\"\" when the snapshot is only on the node)"},
			{Name: "size", Doc: "its size in bytes"},
			{Name: "token_file", Doc: "the token file a restore would use (\"\" if none)"},
		}},
		{Name: "restore_datastore", Summary: "what k3s.restore_datastore returns", goType: reflect.TypeFor[k3sops.RestoreDatastoreResult](), Fields: []RefField{
			{Name: "node", Doc: "the server restored on"},
			{Name: "snapshot", Doc: "the snapshot file on the node"},
			{Name: "uploaded", Doc: "caretaker's copy was uploaded to the node first"},
			{Name: "pre_restore", Doc: "where K3s moved the database it replaced"},
		}},
		{Name: "strip", Summary: "what k3s.strip_server returns", goType: reflect.TypeFor[k3sops.EditResult](), Fields: edit},
		{Name: "edit", Summary: "one edited config source", goType: reflect.TypeFor[k3sops.Edit](), Fields: []RefField{
			{Name: "path", Doc: "the file"},
			{Name: "what", Doc: "what changed in it"},
		}},
		{Name: "restored", Summary: "what k3s.restore_server and k3s.restore_token return", goType: reflect.TypeFor[k3sops.RestoredResult](), Fields: []RefField{
			{Name: "changed", Doc: "files were written"},
			{Name: "files", Doc: "the files written"},
		}},
		{Name: "token", Summary: "what k3s.token returns", goType: reflect.TypeFor[k3sops.TokenResult](), Fields: []RefField{
			{Name: "token", Doc: "the join token (registered as a secret)"},
			{Name: "secure", Doc: "a secure token (K10<ca-hash>::user:password)"},
			{Name: "ca_hash", Doc: "the CA hash it carries"},
			{Name: "file", Doc: "where save=True wrote it (\"\" otherwise)"},
		}},
		{Name: "token_update", Summary: "what k3s.update_token returns", goType: reflect.TypeFor[k3sops.TokenUpdate](), Fields: append(append([]RefField{}, edit...),
			RefField{Name: "token_kind", Doc: "secure, short, bootstrap, file, invalid or none"},
			RefField{Name: "reason", Doc: "why it changed or did not"},
		)},
	}
}
