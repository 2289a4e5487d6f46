package lab_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// TestStartDelay: with StartDelay the lab comes up as fast as ever, and a
// restart afterwards takes at least the delay (K3s's start-up time) before
// systemctl returns and the service is active.
func TestStartDelay(t *testing.T) {
	const delay = 400 * time.Millisecond
	l := labtest.Start(t, lab.Options{Servers: 1, Agents: 0, StartDelay: delay})
	if l.UpDuration() > 10*time.Second {
		t.Errorf("lab up took %s", l.UpDuration())
	}
	c := connect(t, l)
	start := time.Now()
	c.mustRun("server-1", "systemctl restart k3s")
	if took := time.Since(start); took < delay {
		t.Errorf("restart returned after %s, before the start delay of %s", took, delay)
	}
	if out := c.mustRun("server-1", "systemctl is-active k3s"); strings.TrimSpace(out) != "active" {
		t.Errorf("after the restart: %q, want active", out)
	}
}
