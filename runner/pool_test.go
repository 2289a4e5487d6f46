package runner_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// A dial that failed only because the caller's ctx ended (one step's
// timeout) is not remembered; a real failure is, for the rest of the run.
func TestPoolForgetsDialsCancelledByTheCaller(t *testing.T) {
	n := &inventory.Node{Name: "s1", Cluster: "t"}
	dials := 0
	down := false
	p := runner.NewPool(func(ctx context.Context, _ *inventory.Node) (transport.Executor, error) {
		dials++
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dial s1: %w", err)
		}
		if down {
			return nil, fmt.Errorf("dial s1: connection refused: %w", errs.ErrUnreachable)
		}
		return fake.New("s1"), nil
	})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Get(cancelled, n); !errors.Is(err, context.Canceled) {
		t.Fatalf("first Get with an ended ctx: %v", err)
	}
	ex, err := p.Get(context.Background(), n)
	if err != nil || ex == nil || dials != 2 {
		t.Fatalf("second Get: %v %v after %d dials, want a connection from a second dial", ex, err, dials)
	}
	if again, _ := p.Get(context.Background(), n); again != ex || dials != 2 {
		t.Errorf("third Get dialled again (%d dials) or returned another executor", dials)
	}

	m := &inventory.Node{Name: "s2", Cluster: "t"}
	down = true
	if _, err := p.Get(context.Background(), m); !errors.Is(err, errs.ErrUnreachable) {
		t.Fatalf("Get of a node that is down: %v", err)
	}
	down = false
	if _, err := p.Get(context.Background(), m); !errors.Is(err, errs.ErrUnreachable) || dials != 3 {
		t.Errorf("an unreachable node was dialled again (%d dials) or its failure forgotten: %v", dials, err)
	}
}

func TestErrorKinds(t *testing.T) {
	cases := []struct {
		err  error
		kind string
	}{
		{nil, ""},
		{fmt.Errorf("step x: %w", errs.ErrNeedsConfirm), errs.KindNeedsConfirm},
		{fmt.Errorf("dial: %w", errs.ErrUnreachable), errs.KindUnreachable},
		{fmt.Errorf("ssh: %w", errs.ErrHostKey), errs.KindHostKey},
		{fmt.Errorf("-p x: %w", errs.ErrBadInput), errs.KindBadInput},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), errs.KindTimeout},
		{&transport.ExitError{Node: "s1", Line: "false", Code: 1}, errs.KindNonZeroExit},
		{errors.New("something else"), errs.KindOther},
	}
	for _, c := range cases {
		if got := errs.Kind(c.err); got != c.kind {
			t.Errorf("Kind(%v) = %q, want %q", c.err, got, c.kind)
		}
	}
}
