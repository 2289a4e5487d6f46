package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
	"github.com/google/renameio/v2"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/caretaker/caretaker/runner"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
)

// Two locks keep two runs off one cluster (DESIGN.md "Lock"):
//
//   - a local lock: a flock on <state dir>/locks/<cluster>.lock, so two
//     caretaker processes on one machine cannot overlap; the kernel drops
//     it when its process dies, however it dies;
//   - a cluster lock in the cluster's own etcd: a concurrency.Mutex under
//     /caretaker/lock/<cluster>/mutex on a session lease, so operators on
//     two machines cannot overlap either. The holder is stored beside it
//     on the same lease (/caretaker/lock/<cluster>/holder); when its
//     process dies the lease expires after its TTL and both keys go.
//
// A refusal is a *LockedError (errors.Is ErrLocked) that names the holder.

// DefaultLockTTL is the lease TTL of the cluster lock: how long the lock
// outlives a holder that died without releasing it.
const DefaultLockTTL = 60 * time.Second

// Holder says who holds a lock.
type Holder struct {
	User     string    `json:"user"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	RunID    string    `json:"run_id"`
	Playbook string    `json:"playbook"`
	Since    time.Time `json:"since"`
}

// NewHolder describes this process running runID.
func NewHolder(runID, playbook string) Holder {
	u, h := runner.Operator()
	return Holder{User: u, Host: h, PID: os.Getpid(), RunID: runID, Playbook: playbook, Since: time.Now()}
}

// String names the holder for messages, e.g. "alice@ops-1 (pid 4242), run
// 20261127-153012-rotate-ca-4f2a (playbook rotate-ca) since 2026-11-27
// 15:30:12 UTC (5m ago)".
func (h Holder) String() string {
	s := fmt.Sprintf("%s@%s (pid %d)", h.User, h.Host, h.PID)
	if h.RunID != "" {
		s += ", run " + h.RunID
	}
	if h.Playbook != "" {
		s += " (playbook " + h.Playbook + ")"
	}
	if !h.Since.IsZero() {
		s += fmt.Sprintf(" since %s (%s ago)", h.Since.UTC().Format("2006-01-02 15:04:05 UTC"), time.Since(h.Since).Round(time.Second))
	}
	return s
}

// LockedError is the refusal to run because another run holds a lock.
type LockedError struct {
	Cluster string
	// Scope is "local" (this machine's file lock) or "cluster" (etcd).
	Scope string
	// Holder is who holds it; nil when it could not be read.
	Holder *Holder
	// Hint says how the lock ends or can be broken.
	Hint string
}

// Error names the cluster, where it is locked, the holder and the way out.
func (e *LockedError) Error() string {
	where := "in its etcd"
	if e.Scope == "local" {
		where = "on this machine"
	}
	who := "an unknown holder"
	if e.Holder != nil {
		who = e.Holder.String()
	}
	msg := fmt.Sprintf("cluster %q is locked %s by %s", e.Cluster, where, who)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Unwrap() error { return errspkg.ErrLocked }

// LocalLock is the per-cluster file lock of this machine.
type LocalLock struct {
	fl         *flock.Flock
	holderPath string
}

func lockFileBase(stateDir, cluster string) string {
	return filepath.Join(stateDir, "locks", url.PathEscape(cluster))
}

// TakeLocal takes the local lock of cluster in stateDir, or fails with a
// *LockedError naming the process that holds it. A local lock cannot be
// broken: it ends with its process (the kernel releases it even on kill -9).
func TakeLocal(stateDir, cluster string, h Holder) (*LocalLock, error) {
	base := lockFileBase(stateDir, cluster)
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return nil, fmt.Errorf("create the lock directory: %w (is --state-dir writable?)", err)
	}
	fl := flock.New(base+".lock", flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", base+".lock", err)
	}
	if !ok {
		le := &LockedError{Cluster: cluster, Scope: "local"}
		if b, err := os.ReadFile(base + ".holder.json"); err == nil {
			var other Holder
			if json.Unmarshal(b, &other) == nil {
				le.Holder = &other
			}
		}
		le.Hint = "wait for that run to end, or stop it (a local lock ends with its process; --break-lock does not break it)"
		if le.Holder != nil {
			le.Hint = fmt.Sprintf("wait for that run to end, or stop pid %d (a local lock ends with its process; --break-lock does not break it)", le.Holder.PID)
		}
		return nil, le
	}
	b, _ := json.Marshal(h)
	if err := renameio.WriteFile(base+".holder.json", b, 0o600); err != nil {
		fl.Unlock()
		return nil, fmt.Errorf("record the lock holder: %w", err)
	}
	return &LocalLock{fl: fl, holderPath: base + ".holder.json"}, nil
}

// Unlock releases the local lock.
func (l *LocalLock) Unlock() error {
	if l == nil || l.fl == nil {
		return nil
	}
	os.Remove(l.holderPath)
	return l.fl.Unlock()
}

// ClusterOptions tune LockCluster.
type ClusterOptions struct {
	// TTL of the session lease; 0 means DefaultLockTTL. etcd rounds it to
	// whole seconds (at least 1).
	TTL time.Duration
	// Break revokes the lease of the current holder first (--break-lock).
	// Its process notices that it lost the lock (ClusterLock.Lost) and
	// stops before its next step.
	Break bool
}

// ClusterLock is a held cluster lock in etcd.
type ClusterLock struct {
	cluster string
	session *concurrency.Session
	mutex   *concurrency.Mutex
	// Broken is the holder whose lock was broken with Break, if any.
	Broken *Holder
	// BrokenLease is the lease revoked with Break (0: none).
	BrokenLease int64
}

func clusterLockKeys(cluster string) (mutexPrefix, holderKey string) {
	base := "/caretaker/lock/" + url.PathEscape(cluster)
	return base + "/mutex", base + "/holder"
}

// TakeCluster takes the cluster lock in the cluster's etcd (cli, dialed
// through a server node's SSH tunnel) and records h as its holder on the
// same lease. While another session holds it, it fails at once with a
// *LockedError naming the holder. The lock lasts until Unlock, or until
// the lease expires (TTL after this process stops keeping it alive).
func TakeCluster(ctx context.Context, cli *clientv3.Client, cluster string, h Holder, opts ClusterOptions) (*ClusterLock, error) {
	var lock *ClusterLock
	err := retryTransient(ctx, func() error {
		var err error
		lock, err = takeClusterOnce(ctx, cli, cluster, h, opts)
		return err
	})
	return lock, err
}

// transientTries and transientPause bound retryTransient: a member that
// restarts (every server restarts during a CA rotation) is back within
// seconds, and the client then uses another member or the same again.
var (
	transientTries = 6
	transientPause = 2 * time.Second
)

// retryTransient runs fn again while it fails only because the etcd
// member the client talked to went away mid-request (gRPC Unavailable:
// "error reading from server: EOF" while its K3s restarts). Every
// operation it retries is idempotent (breaking a lock, taking it with a
// new session, reading the holder).
func retryTransient(ctx context.Context, fn func() error) error {
	var err error
	for i := 0; i < transientTries; i++ {
		if err = fn(); err == nil || !isUnavailable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(transientPause):
		}
	}
	return err
}

// isUnavailable finds a gRPC Unavailable status anywhere in err's chain.
func isUnavailable(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if status.Code(e) == codes.Unavailable {
			return true
		}
	}
	return false
}

func takeClusterOnce(ctx context.Context, cli *clientv3.Client, cluster string, h Holder, opts ClusterOptions) (*ClusterLock, error) {
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	secs := int((ttl + time.Second - 1) / time.Second)
	mutexPrefix, holderKey := clusterLockKeys(cluster)
	lock := &ClusterLock{cluster: cluster}
	if opts.Break {
		holder, lease, err := breakClusterLock(ctx, cli, mutexPrefix, holderKey)
		if err != nil {
			return nil, fmt.Errorf("break the cluster lock of %q: %w", cluster, err)
		}
		lock.Broken, lock.BrokenLease = holder, lease
	}
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(secs), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("open an etcd session for the cluster lock of %q: %w", cluster, err)
	}
	m := concurrency.NewMutex(session, mutexPrefix)
	if err := m.TryLock(ctx); err != nil {
		session.Close()
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, describeClusterHolder(ctx, cli, cluster, mutexPrefix, holderKey)
		}
		return nil, fmt.Errorf("take the cluster lock of %q in etcd: %w", cluster, err)
	}
	lock.session, lock.mutex = session, m
	val, _ := json.Marshal(h)
	resp, err := cli.Txn(ctx).If(m.IsOwner()).Then(clientv3.OpPut(holderKey, string(val), clientv3.WithLease(session.Lease()))).Commit()
	if err != nil || !resp.Succeeded {
		lock.Unlock(context.WithoutCancel(ctx))
		if err == nil {
			err = errors.New("lost the lock while recording its holder")
		}
		return nil, fmt.Errorf("record the holder of the cluster lock of %q: %w", cluster, err)
	}
	return lock, nil
}

// describeClusterHolder builds the refusal: who holds the lock and how
// long its lease still runs.
func describeClusterHolder(ctx context.Context, cli *clientv3.Client, cluster, mutexPrefix, holderKey string) error {
	le := &LockedError{Cluster: cluster, Scope: "cluster"}
	owner, err := cli.Get(ctx, mutexPrefix+"/", clientv3.WithFirstCreate()...)
	var lease clientv3.LeaseID
	if err == nil && len(owner.Kvs) > 0 {
		lease = clientv3.LeaseID(owner.Kvs[0].Lease)
	}
	if resp, err := cli.Get(ctx, holderKey); err == nil && len(resp.Kvs) > 0 {
		var h Holder
		if json.Unmarshal(resp.Kvs[0].Value, &h) == nil {
			le.Holder = &h
		}
	}
	hint := "it ends when that run ends, or when its lease expires after the holder dies"
	if lease != 0 {
		if ttl, err := cli.TimeToLive(ctx, lease); err == nil && ttl.GrantedTTL > 0 {
			hint = fmt.Sprintf("it ends when that run ends, or %ds after its holder dies (lease %x, TTL %ds)", ttl.GrantedTTL, int64(lease), ttl.GrantedTTL)
		}
	}
	le.Hint = hint + "; if that holder is stuck, --break-lock revokes its lease"
	return le
}

// breakClusterLock revokes the lease of the lock's owner (and removes a
// holder key left on another lease). It returns who held it; a lock that
// nobody holds breaks nothing.
func breakClusterLock(ctx context.Context, cli *clientv3.Client, mutexPrefix, holderKey string) (*Holder, int64, error) {
	var holder *Holder
	if resp, err := cli.Get(ctx, holderKey); err != nil {
		return nil, 0, err
	} else if len(resp.Kvs) > 0 {
		var h Holder
		if json.Unmarshal(resp.Kvs[0].Value, &h) == nil {
			holder = &h
		}
	}
	owners, err := cli.Get(ctx, mutexPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	var revoked int64
	for _, kv := range owners.Kvs {
		if kv.Lease != 0 {
			if _, err := cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil, 0, fmt.Errorf("revoke lease %x: %w", kv.Lease, err)
			}
			if revoked == 0 {
				revoked = kv.Lease
			}
		} else if _, err := cli.Delete(ctx, string(kv.Key)); err != nil {
			return nil, 0, err
		}
	}
	if _, err := cli.Delete(ctx, holderKey); err != nil {
		return nil, 0, err
	}
	if revoked == 0 && len(owners.Kvs) == 0 {
		holder = nil
	}
	return holder, revoked, nil
}

// ReadClusterHolder returns who holds the cluster lock, or nil when
// nobody does.
func ReadClusterHolder(ctx context.Context, cli *clientv3.Client, cluster string) (*Holder, error) {
	mutexPrefix, holderKey := clusterLockKeys(cluster)
	owners, err := cli.Get(ctx, mutexPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("read the cluster lock of %q: %w", cluster, err)
	}
	if owners.Count == 0 {
		return nil, nil
	}
	resp, err := cli.Get(ctx, holderKey)
	if err != nil {
		return nil, fmt.Errorf("read the holder of the cluster lock of %q: %w", cluster, err)
	}
	h := &Holder{}
	if len(resp.Kvs) > 0 {
		if err := json.Unmarshal(resp.Kvs[0].Value, h); err != nil {
			return nil, fmt.Errorf("decode the holder of the cluster lock of %q: %w", cluster, err)
		}
	}
	return h, nil
}

// Lost is closed when the lock's lease is gone: revoked by --break-lock
// elsewhere, or expired because etcd could not be reached for a TTL. A run
// must stop starting steps when it fires.
func (l *ClusterLock) Lost() <-chan struct{} { return l.session.Done() }

// Lease is the lock's lease ID.
func (l *ClusterLock) Lease() int64 { return int64(l.session.Lease()) }

// Unlock releases the lock and revokes its lease.
func (l *ClusterLock) Unlock(ctx context.Context) error {
	if l == nil || l.session == nil {
		return nil
	}
	var errs []error
	select {
	case <-l.session.Done():
	default:
		if l.mutex != nil {
			uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := l.mutex.Unlock(uctx); err != nil && !errors.Is(err, concurrency.ErrLockReleased) {
				errs = append(errs, err)
			}
			cancel()
		}
	}
	if err := l.session.Close(); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("release the cluster lock of %q: %w", l.cluster, errors.Join(errs...))
	}
	return nil
}

// ErrNoEtcd says no server of the cluster holds an etcd client certificate, so
// the cluster does not run embedded etcd (a single server on SQLite, or an
// external datastore) and there is no etcd to hold a cluster lock in.
var ErrNoEtcd = errors.New("the cluster runs no embedded etcd")

// DialClusterEtcd connects to the cluster's etcd through every server of
// servers that answers, each with its own etcd client certificate and
// SSH connection from pool (DialEtcdCluster), so that the client (and a
// cluster lock on it) survives the restart of any one server. It returns
// the client and the servers it goes through, or ErrNoEtcd when every
// reachable server lacks an etcd client certificate.
func DialClusterEtcd(ctx context.Context, pool *runner.Pool, servers []*inventory.Node) (*clientv3.Client, []*inventory.Node, error) {
	var errs []error
	var eps []*EtcdEndpoint
	reached, noEtcd := 0, 0
	for _, n := range servers {
		if n.Role != inventory.RoleServer {
			continue
		}
		ex, err := pool.Get(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reached++
		ep, err := NewEtcdEndpoint(ctx, ex, n)
		if errors.Is(err, ErrNoEtcd) {
			noEtcd++
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		eps = append(eps, ep)
	}
	if reached > 0 && noEtcd == reached {
		return nil, nil, ErrNoEtcd
	}
	if len(eps) == 0 {
		if len(errs) == 0 {
			return nil, nil, fmt.Errorf("no server node to reach etcd through: %w", errspkg.ErrBadInput)
		}
		return nil, nil, fmt.Errorf("reach the cluster's etcd: %w", errors.Join(errs...))
	}
	cli, err := DialEtcdCluster(ctx, eps)
	if err != nil {
		return nil, nil, err
	}
	var via []*inventory.Node
	for _, ep := range eps {
		via = append(via, ep.Node)
	}
	return cli, via, nil
}
