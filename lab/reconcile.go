package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// reconciler applies bootstrap data to one server's disk (§2 "Reconcile").
type reconciler struct {
	n              *node
	sdHost, sdView string
	passphrase     string
}

// httpBootstrap fetches /v1-k3s/server-bootstrap from the join URL and
// reconciles against it (isHTTP=true). The timeout is 15 s on fixed
// releases and the client default (10 s) before.
func (rc reconciler) httpBootstrap(ctx context.Context, cai *clientInfo, fixed bool) error {
	timeout := 10 * time.Second
	if fixed {
		timeout = 15 * time.Second
	}
	body, err := cai.get(ctx, "/v1-k3s/server-bootstrap", timeout)
	if err != nil {
		return err
	}
	d, err := k3s.UnmarshalBootstrap(body)
	if err != nil {
		return err
	}
	return rc.reconcile(d)
}

// localReconcile reads the datastore (the temporary etcd of the releases
// of interest) and reconciles (isHTTP=false).
func (rc reconciler) localReconcile(ctx context.Context) error {
	n := rc.n
	headWording := n.version.Major == 1 && n.version.Minor >= 35
	if headWording {
		n.logK3s("info", "Reconciling bootstrap data between datastore and disk")
		n.logK3s("info", "Opening etcd MVCC KV backend database at %s", filepath.Join(rc.sdView, "db", "etcd-tmp", "member", "snap", "db"))
		n.logK3s("info", "Opened etcd MVCC KV store")
	} else {
		n.logK3s("info", "Starting temporary etcd to reconcile with datastore")
		n.logK3s("info", "etcd temporary data store connection OK")
	}
	d, err := n.readLocalBootstrap(ctx, rc.sdHost, rc.passphrase)
	if err != nil {
		if errors.Is(err, errNoBootstrapKey) {
			if headWording {
				n.logK3s("info", "Closing etcd MVCC KV store")
			}
			return nil
		}
		return err
	}
	if !headWording {
		n.logK3s("info", "Reconciling bootstrap data between datastore and disk")
	}
	if err := rc.compare(d); err != nil {
		return err
	}
	if headWording {
		n.logK3s("info", "Closing etcd MVCC KV store")
		n.logK3s("info", "Successfully reconciled with local datastore")
	}
	return nil
}

// reconcile is ReconcileBootstrapData for data fetched over HTTP.
func (rc reconciler) reconcile(d k3s.BootstrapData) error {
	rc.n.logK3s("info", "Reconciling bootstrap data between datastore and disk")
	return rc.compare(d)
}

// compare runs the per-file rules (§2 "Reconcile" 1, 3-5): missing cert
// dirs → write everything; identical → skip; disk newer by ≥ 3 s → fatal;
// else update every file and set its mtime to the stored Timestamp.
func (rc reconciler) compare(d k3s.BootstrapData) error {
	n := rc.n
	for _, dir := range []string{"cred", "tls", "tls/etcd"} {
		if empty, err := dirEmpty(filepath.Join(rc.sdHost, dir)); err != nil || empty {
			return k3s.WriteBootstrapToDir(rc.sdHost, d)
		}
	}
	var newer []string
	update := false
	for _, bf := range k3s.BootstrapFiles {
		stored, ok := d[bf.Key]
		if !ok {
			continue
		}
		view := filepath.Join(rc.sdView, bf.Path)
		host := filepath.Join(rc.sdHost, bf.Path)
		disk, err := os.ReadFile(host)
		exists := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to get update status of %s: reconcile failed to open: %w", bf.Key, err)
		}
		var mtime time.Time
		if exists {
			if fi, err := os.Stat(host); err == nil {
				mtime = fi.ModTime()
			}
		}
		switch k3s.ReconcileFile(exists, disk, mtime, stored) {
		case k3s.ReconcileUpdate:
			update = true
			if !exists {
				n.logK3s("warning", "%s doesn't exist. continuing...", view)
			} else {
				n.logK3s("warning", "%s", k3s.WillBeUpdatedMessage(view))
			}
		case k3s.ReconcileNewerOnDisk:
			update = true
			newer = append(newer, view)
		}
	}
	if len(newer) > 0 {
		return fatalf("%s", k3s.NewerThanDatastoreMessage(newer))
	}
	if update {
		n.logK3s("warning", "Updating bootstrap data on disk from datastore")
		return k3s.WriteBootstrapToDir(rc.sdHost, d)
	}
	return nil
}

// readSDFiles reads the bootstrap files of SD keyed by SD-relative path.
func readSDFiles(sdHost string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		b, err := os.ReadFile(filepath.Join(sdHost, bf.Path))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		out[bf.Path] = b
	}
	return out, nil
}
