package main

// End-to-end tests of the run locks (issue 6 "Locks") against the lab: the
// local file lock, the cluster lock in the lab's real etcd (reached through
// a server's SSH tunnel), the holder named in refusals, expiry with the
// lease when the holder is killed, and --break-lock.

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/runner/lock"
)

// lockHolder reads the cluster lock's holder key from etcd (nil: free).
func lockHolder(t *testing.T, cli *clientv3.Client, cluster string) *lock.Holder {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/caretaker/lock/"+cluster+"/holder")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var h lock.Holder
	if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
		t.Fatalf("holder key: %v: %s", err, resp.Kvs[0].Value)
	}
	return &h
}
