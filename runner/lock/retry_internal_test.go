package lock

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRetryTransient: an etcd member that went away mid-request (gRPC
// Unavailable, as while its K3s restarts) is retried; anything else, a
// held lock among them, is not.
func TestRetryTransient(t *testing.T) {
	defer func(p time.Duration) { transientPause = p }(transientPause)
	transientPause = time.Millisecond
	calls := 0
	err := retryTransient(context.Background(), func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("break the cluster lock: %w", status.Error(codes.Unavailable, "error reading from server: EOF"))
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("transient errors: %v after %d calls, want nil after 3", err, calls)
	}
	calls = 0
	locked := &LockedError{Cluster: "c"}
	if err := retryTransient(context.Background(), func() error { calls++; return locked }); !errors.Is(err, locked) || calls != 1 {
		t.Errorf("a held lock was retried: %v after %d calls", err, calls)
	}
	calls = 0
	if err := retryTransient(context.Background(), func() error {
		calls++
		return status.Error(codes.Unavailable, "down")
	}); err == nil || calls != transientTries {
		t.Errorf("a member that stays away: %v after %d calls, want an error after %d", err, calls, transientTries)
	}
}
