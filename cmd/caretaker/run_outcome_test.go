package main

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
)

// A run whose failures are all drift (check-certs finding CA drift or
// expiring certificates) exits 4, like caretaker check; an unreachable
// node among them makes it 1.
func TestRunOutcomeDrift(t *testing.T) {
	drift := errs.Drift(fmt.Errorf("1 certificate(s) need attention"))
	if !errors.Is(drift, errs.ErrDrift) || errs.Kind(drift) != errs.KindDrift || drift.Error() != "1 certificate(s) need attention" {
		t.Fatalf("errs.Drift: %v (kind %s)", drift, errs.Kind(drift))
	}
	failed := errors.New("run failed")
	for _, c := range []struct {
		kinds []string
		want  int
	}{
		{[]string{errs.KindDrift}, exitDrift},
		{[]string{errs.KindDrift, errs.KindDrift}, exitDrift},
		{[]string{errs.KindDrift, errs.KindUnreachable}, exitFailed},
		{[]string{errs.KindOther}, exitFailed},
		{nil, exitFailed},
	} {
		done := runner.RunDone{Status: "failed"}
		for _, k := range c.kinds {
			done.Failed = append(done.Failed, runner.StepDone{Kind: k})
		}
		if got := exitCode(runOutcome(done, failed), io.Discard); got != c.want {
			t.Errorf("failed cells of kinds %v: exit %d, want %d", c.kinds, got, c.want)
		}
	}
}
