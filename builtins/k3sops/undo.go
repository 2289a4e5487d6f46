package k3sops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// The undo actions the K3s operations record, replayed by `caretaker
// undo`. Each is idempotent: the records they read say what is already
// done.
//
// A CA rotation is not undone (its record only documents it), so an undo
// of a run whose rotation reached the datastore must leave the edits made
// for the new CA where putting them back would break the next start of K3s
// (found by the crash-consistency test, cmd/caretaker/crash_test.go):
//
//   - `server` stays removed on a server that already holds the datastore's
//     CA while another server still holds the one it rotates from: with
//     `server` back, K3s would take the CA from that peer's disk (k3s#11233)
//     and refuse to start ("newer than datastore"). restore_server and a
//     finished rotate-ca put it back once every server holds the new CA.
//   - a token keeps the new CA hash while the datastore holds that CA: the
//     recorded token pins a CA the cluster no longer serves, and K3s refuses
//     such a token at its next start.
//
// Each says so in a note; the k3s.rotate_ca action's note says whether the
// rotation reached the datastore and how to finish it.
func init() {
	runner.RegisterUndo("k3s.restore_server", undoStrip)
	runner.RegisterUndo("k3s.restore_token", undoToken)
	runner.RegisterUndo("k3s.restore", undoRestore)
	runner.RegisterUndo("k3s.rotate_ca", undoRotateCA)
}

// undoTarget is the target of an undo step: the node the change was made
// on.
func undoTarget(env *runner.Env, op string) (*Target, error) {
	if env.Node == nil || env.Exec == nil {
		return nil, fmt.Errorf("%s: undo needs the node the change was made on", op)
	}
	return &Target{Run: env, Node: env.Node, Exec: env.Exec, Op: op}, nil
}

// pendingRecords reports whether the node has unrestored records of kind.
func (c *Target) pendingRecords(ctx context.Context, kind string) (bool, error) {
	recs, err := c.loadRecords(ctx, kind)
	if err != nil {
		return false, err
	}
	for _, r := range recs {
		if r.Restored == nil {
			return true, nil
		}
	}
	return false, nil
}

// editsInPlace reports whether a file of an unrestored record of kind
// holds the edited content now (a run killed between recording an edit and
// making it leaves the original in place).
func (c *Target) editsInPlace(ctx context.Context, kind string) (bool, error) {
	recs, err := c.loadRecords(ctx, kind)
	if err != nil {
		return false, err
	}
	var paths []string
	for _, r := range recs {
		if r.Restored == nil {
			for _, f := range r.Files {
				paths = append(paths, f.Path)
			}
		}
	}
	cur, err := c.fetchMap(ctx, paths...)
	if err != nil {
		return false, err
	}
	for _, r := range recs {
		if r.Restored != nil {
			continue
		}
		for _, f := range r.Files {
			if now, ok := cur[f.Path]; ok && sha256Hex(now.Data) == f.AfterSHA256 {
				return true, nil
			}
		}
	}
	return false, nil
}

// undoStrip puts back what StripServer removed, unless a CA rotation is
// half done and this server already holds the new CA (see init).
func undoStrip(ctx context.Context, env *runner.Env, data []byte) error {
	c, err := undoTarget(env, "k3s.restore_server")
	if err != nil {
		return err
	}
	if pending, err := c.pendingRecords(ctx, "strip"); err != nil || !pending {
		if err == nil {
			c.Run.Output(runner.StreamLog, "nothing to restore")
		}
		return err
	}
	if c.Node.Role == inventory.RoleServer {
		sp, err := readCASplit(ctx, env, c.Op, env.Cluster())
		switch {
		case err != nil:
			c.Run.Output(runner.StreamLog, fmt.Sprintf("cannot tell whether a CA rotation is half done (%v): putting `server` back as recorded", err))
		case sp.holds[c.Node.Name] && len(sp.behind) > 0:
			env.Note(fmt.Sprintf("%s: kept `server` removed: %s already holds the datastore's CA %s while %s still hold the one it rotates from; with `server` back, its next start would take the CA from a peer's disk (k3s#11233) and fail. `caretaker run rotate-ca` finishes the rotation and puts `server` back (or `caretaker run restore-server` once every server holds the new CA)",
				c.Node.Name, c.Node.Name, caDesc(sp.ds.serverCA()), strings.Join(sp.behind, ", ")))
			return runner.Skip("kept `server` removed until every server holds the datastore's CA: see the note")
		}
	}
	_, err = c.restoreRecords(ctx, "strip")
	return err
}

// undoToken puts back what UpdateToken changed, unless the datastore no
// longer holds the CA the recorded token pins (see init).
func undoToken(ctx context.Context, env *runner.Env, data []byte) error {
	c, err := undoTarget(env, "k3s.restore_token")
	if err != nil {
		return err
	}
	if pending, err := c.pendingRecords(ctx, "token"); err != nil || !pending {
		if err == nil {
			c.Run.Output(runner.StreamLog, "nothing to restore")
		}
		return err
	}
	var d undoData
	edited, err := c.editsInPlace(ctx, "token")
	if err != nil {
		return err
	}
	if edited && json.Unmarshal(data, &d) == nil && d.FromCAHash != "" {
		ds, err := DatastoreEach(ctx, env, c.Op, nil, clusterServers(env.Cluster(), c.Node))
		if err != nil {
			return c.errorf("cannot tell whether the recorded token still matches the cluster's CA, so it is not put back: %w; run `caretaker undo` again once a server answers", err)
		}
		if cur, err := k3s.HashCA(ds.serverCA()); err == nil && cur != d.FromCAHash {
			env.Note(fmt.Sprintf("%s: kept the token with the new CA hash: the datastore holds CA %s, and the recorded token pins the previous one (%.12s…), which K3s would refuse at its next start",
				c.Node.Name, caDesc(ds.serverCA()), d.FromCAHash))
			return runner.Skip("kept the token that pins the datastore's CA: see the note")
		}
	}
	_, err = c.restoreRecords(ctx, "token")
	return err
}

// undoRestore puts back the safety backup Restore took before it
// overwrote files.
func undoRestore(ctx context.Context, env *runner.Env, data []byte) error {
	c, err := undoTarget(env, "k3s.restore")
	if err != nil {
		return err
	}
	var d struct {
		Backup string `json:"backup"`
	}
	if err := json.Unmarshal(data, &d); err != nil || d.Backup == "" {
		return fmt.Errorf("k3s.restore undo: the record names no safety backup: %s", data)
	}
	_, err = c.restoreBackup(ctx, d.Backup, false)
	return err
}

// undoRotateCA does not undo a rotation: it says whether the rotation
// reached the datastore and, if it did, how to finish it or put the
// previous CA back. A datastore that still holds the previous CA (the run
// stopped between recording the action and rotating) needs nothing.
func undoRotateCA(ctx context.Context, env *runner.Env, data []byte) error {
	c, err := undoTarget(env, "k3s.rotate_ca")
	if err != nil {
		return err
	}
	var d struct {
		Previous string `json:"previous_server_ca_sha256"`
	}
	_ = json.Unmarshal(data, &d)
	ds, err := DatastoreEach(ctx, env, c.Op, nil, clusterServers(env.Cluster(), c.Node))
	if err != nil {
		env.Note(fmt.Sprintf("%s: no automatic undo for k3s.rotate_ca, and the datastore cannot be read now (%v): `caretaker run rotate-ca` finishes a rotation in progress; %s", c.Node.Name, err, describeRotateUndo(data)))
		return runner.Skip("cannot be undone automatically: see the note")
	}
	if d.Previous != "" && sha256Hex(ds.serverCA()) == d.Previous {
		c.Run.Output(runner.StreamLog, fmt.Sprintf("the datastore still holds the CA from before the run (%s): the rotation never reached it, nothing to undo", caDesc(ds.serverCA())))
		return nil
	}
	env.Note(fmt.Sprintf("%s: no automatic undo for k3s.rotate_ca: the datastore keeps the new CA %s. Finish the rotation with `caretaker run rotate-ca` (it continues where the run stopped); %s",
		c.Node.Name, caDesc(ds.serverCA()), describeRotateUndo(data)))
	return runner.Skip("cannot be undone automatically: see the note")
}

// describeRotateUndo is the "how" of a k3s.rotate_ca record.
func describeRotateUndo(data []byte) string {
	var d struct {
		How string `json:"how"`
	}
	if json.Unmarshal(data, &d) == nil && d.How != "" {
		return d.How
	}
	return string(data)
}

// clusterServers is every server of the cluster, first among them.
func clusterServers(cl *inventory.Cluster, first *inventory.Node) []*inventory.Node {
	out := []*inventory.Node{first}
	if cl != nil {
		out = append(out, cl.Nodes...)
	}
	return out
}

// caSplit is how the servers' disks stand to the datastore's server CA.
type caSplit struct {
	ds     *Datastore
	holds  map[string]bool // server → its disk server CA is the datastore's
	behind []string        // servers whose disk server CA is another
}

// readCASplit reads the datastore and every server's disk server CA.
func readCASplit(ctx context.Context, run Run, op string, cl *inventory.Cluster) (*caSplit, error) {
	if cl == nil {
		return nil, fmt.Errorf("%s: no cluster to read", op)
	}
	var servers []*inventory.Node
	for _, n := range cl.Nodes {
		if n.Role == inventory.RoleServer {
			servers = append(servers, n)
		}
	}
	ds, err := DatastoreEach(ctx, run, op, nil, servers)
	if err != nil {
		return nil, err
	}
	disks, errs := forEachNode(ctx, run, servers, op, func(c *Target) ([]byte, error) {
		files, err := c.fetchMap(ctx, c.sd()+"/"+k3s.PathServerCA)
		if err != nil {
			return nil, err
		}
		return files[c.sd()+"/"+k3s.PathServerCA].Data, nil
	})
	sp := &caSplit{ds: ds, holds: map[string]bool{}}
	for i, n := range servers {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if bytes.Equal(disks[i], ds.serverCA()) {
			sp.holds[n.Name] = true
		} else {
			sp.behind = append(sp.behind, n.Name)
		}
	}
	return sp, nil
}
