package window_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/window"
)

func mustWindow(t *testing.T, spec string) *window.Window {
	t.Helper()
	w, err := window.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func at(t *testing.T, zone, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWindowContains(t *testing.T) {
	// 2026-11-28 is a Saturday.
	cases := []struct {
		spec, zone, when string
		in               bool
	}{
		{"Sat 02:00-05:00 Europe/Berlin", "Europe/Berlin", "2026-11-28 02:00", true},
		{"Sat 02:00-05:00 Europe/Berlin", "Europe/Berlin", "2026-11-28 04:59", true},
		{"Sat 02:00-05:00 Europe/Berlin", "Europe/Berlin", "2026-11-28 05:00", false},
		{"Sat 02:00-05:00 Europe/Berlin", "Europe/Berlin", "2026-11-28 01:59", false},
		{"Sat 02:00-05:00 Europe/Berlin", "Europe/Berlin", "2026-11-29 03:00", false},
		// The same instant seen from UTC: 02:30 Berlin (CET, +1) is 01:30 UTC.
		{"Sat 02:00-05:00 Europe/Berlin", "UTC", "2026-11-28 01:30", true},
		{"Sat 02:00-05:00 Europe/Berlin", "UTC", "2026-11-28 04:30", false},
		// Past midnight: opens Friday 22:00, closes Saturday 06:00.
		{"Fri 22:00-06:00 UTC", "UTC", "2026-11-27 23:00", true},
		{"Fri 22:00-06:00 UTC", "UTC", "2026-11-28 05:59", true},
		{"Fri 22:00-06:00 UTC", "UTC", "2026-11-28 06:00", false},
		{"Fri 22:00-06:00 UTC", "UTC", "2026-11-27 05:00", false}, // Friday morning belongs to Thursday's (absent) opening
		{"Mon-Fri 09:00-17:00 UTC", "UTC", "2026-11-25 12:00", true},
		{"Mon-Fri 09:00-17:00 UTC", "UTC", "2026-11-28 12:00", false},
		{"Fri-Mon 00:00-24:00 UTC", "UTC", "2026-11-30 23:59", true}, // wraps Fri..Mon
		{"Fri-Mon 00:00-24:00 UTC", "UTC", "2026-11-25 12:00", false},
		{"Sat,Sun 01:00-02:00 UTC", "UTC", "2026-11-29 01:30", true},
		{"daily 01:00-02:00 UTC", "UTC", "2026-11-25 01:30", true},
		{"01:00-02:00 UTC", "UTC", "2026-11-25 02:30", false},
		{"01:00:00-01:00:30 UTC", "UTC", "2026-11-25 01:00", true},
		// Summer time: 02:00-05:00 Berlin is 00:00-03:00 UTC in July.
		{"Sat 02:00-05:00 Europe/Berlin", "UTC", "2026-07-04 00:30", true},
		{"Sat 02:00-05:00 Europe/Berlin", "UTC", "2026-07-04 03:30", false},
	}
	for _, c := range cases {
		w := mustWindow(t, c.spec)
		when := at(t, c.zone, c.when)
		_, _, in := w.Open(when)
		if in != c.in {
			t.Errorf("%q at %s %s: in = %v, want %v", c.spec, c.when, c.zone, in, c.in)
		}
		if err := w.Check(when); (err == nil) != c.in || (err != nil && !errors.Is(err, window.ErrOutsideWindow)) {
			t.Errorf("%q at %s: Check = %v", c.spec, c.when, err)
		}
	}
}

func TestWindowOpenCloseAndNext(t *testing.T) {
	w := mustWindow(t, "Sat 02:00-05:00 Europe/Berlin")
	open, close, ok := w.Open(at(t, "Europe/Berlin", "2026-11-28 03:10"))
	if !ok || open.Format("Mon 15:04") != "Sat 02:00" || close.Format("Mon 15:04") != "Sat 05:00" {
		t.Errorf("Open = %s .. %s %v", open, close, ok)
	}
	next := w.Next(at(t, "Europe/Berlin", "2026-11-28 05:00"))
	if want := at(t, "Europe/Berlin", "2026-12-05 02:00"); !next.Equal(want) {
		t.Errorf("Next = %s, want %s", next, want)
	}
	err := w.Check(at(t, "Europe/Berlin", "2026-11-26 12:00"))
	for _, want := range []string{"outside the maintenance window", `"Sat 02:00-05:00 Europe/Berlin"`, "Sat 2026-11-28 02:00 CET", "in 38h0m0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %v does not say %q", err, want)
		}
	}
}

func TestWindowParseErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                           "empty window",
		"Sat":                        "no time range",
		"Sat 2:00-5:00":              "", // single-digit hours are fine
		"02:00:30-02:00:45 UTC":      "", // seconds too
		"Sat 02:00:60-03:00":         `"02:00:60" is not a time of day`,
		"Caturday 02:00-05:00":       `unknown day "caturday"`,
		"Sat 02:00-05:61":            `"05:61" is not a time of day`,
		"Sat 25:00-05:00":            `"25:00" is not a time of day`,
		"Sat 24:00-05:00":            `"24:00" is not a time of day`,
		"Sat 02:00-02:00":            "opens and closes at the same time",
		"Sat 02:00-05:00 Mars/Olymp": `unknown time zone "Mars/Olymp"`,
		"Sat 02:00-05:00 UTC extra":  `unexpected "extra"`,
		"Sat Sun 02:00-05:00":        `unexpected "Sun"`,
	} {
		_, err := window.Parse(spec)
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", spec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("%q: err = %v, want %q", spec, err, want)
		}
	}
}

// A run whose window closes starts no new step: it ends "aborted", says
// why, and the error is both ErrOutsideWindow and ErrAborted.
func TestWindowStopsRunBetweenSteps(t *testing.T) {
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
def a(node):
    pass
step("first", a, nodes="s1")
step("second", a, nodes="s1")
`)
	w := mustWindow(t, "Sat 02:00-05:00 UTC")
	clock := at(t, "UTC", "2026-11-28 04:59")
	calls := 0
	guard := w.StepGuard(func() time.Time {
		calls++
		if calls > 1 {
			return clock.Add(2 * time.Minute) // the first step took two minutes
		}
		return clock
	})
	done, err := f.Run(plan, runner.RunOptions{BeforeStep: guard})
	if !errors.Is(err, window.ErrOutsideWindow) || !errors.Is(err, errs.ErrAborted) {
		t.Fatalf("err = %v, want ErrOutsideWindow and ErrAborted", err)
	}
	if done.Status != "aborted" || !strings.Contains(done.Error, `not starting step "second"`) || !strings.Contains(done.Error, "caretaker resume") {
		t.Errorf("RunDone = %q %q", done.Status, done.Error)
	}
	if f.Status("first", "s1") != runner.StatusOK || f.Status("second", "s1") != runner.StatusPending {
		t.Errorf("first %s second %s", f.Status("first", "s1"), f.Status("second", "s1"))
	}
}

func TestChainBeforeStep(t *testing.T) {
	if window.ChainBeforeStep(nil, nil) != nil {
		t.Error("a chain of nothing must be nil")
	}
	boom := errors.New("boom")
	var order []string
	chain := window.ChainBeforeStep(
		func(*runner.Step) error { order = append(order, "a"); return nil },
		nil,
		func(*runner.Step) error { order = append(order, "b"); return boom },
		func(*runner.Step) error { order = append(order, "c"); return nil },
	)
	if err := chain(&runner.Step{}); err != boom || strings.Join(order, "") != "ab" {
		t.Errorf("chain: %v, order %v", err, order)
	}
}
