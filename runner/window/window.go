package window

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // zone names work on hosts without /usr/share/zoneinfo

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
)

// ErrOutsideWindow says the maintenance window (--window) is closed. A run
// refuses to start outside it; a run whose window closes starts no new
// step and can be resumed in the next window. The CLI exits 5.
var ErrOutsideWindow = errors.New("outside the maintenance window")

// Window is a weekly maintenance window such as "Sat 02:00-05:00
// Europe/Berlin": the days it opens on, the time it opens and closes
// (a close at or before the open is on the next day), and the time zone.
type Window struct {
	spec       string
	days       [7]bool // indexed by time.Weekday
	start, end int     // seconds after midnight; end may be 24h
	loc        *time.Location
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "sunday": time.Sunday,
	"mon": time.Monday, "monday": time.Monday,
	"tue": time.Tuesday, "tues": time.Tuesday, "tuesday": time.Tuesday,
	"wed": time.Wednesday, "wednesday": time.Wednesday,
	"thu": time.Thursday, "thur": time.Thursday, "thurs": time.Thursday, "thursday": time.Thursday,
	"fri": time.Friday, "friday": time.Friday,
	"sat": time.Saturday, "saturday": time.Saturday,
}

// Parse parses a window: "[DAYS] HH:MM-HH:MM [ZONE]" (HH:MM:SS
// works too). DAYS is a
// comma-separated list of days or day ranges (Sat, Mon-Fri, Sat,Sun,
// Fri-Mon), or "daily" / "*"; without DAYS the window opens every day.
// ZONE is an IANA name (Europe/Berlin), UTC or Local (the default).
// Examples: "Sat 02:00-05:00 Europe/Berlin", "Mon-Fri 22:00-06:00 UTC",
// "01:00-03:00".
func Parse(spec string) (*Window, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("--window %q: %s (example: \"Sat 02:00-05:00 Europe/Berlin\"): %w", spec, fmt.Sprintf(format, args...), errs.ErrBadInput)
	}
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return nil, bad("empty window")
	}
	w := &Window{spec: strings.Join(fields, " "), loc: time.Local}
	// The time range is the field with a '-' between two HH:MM.
	ti := -1
	for i, f := range fields {
		if c := strings.Count(f, ":"); c >= 2 && c <= 4 && strings.Contains(f, "-") {
			ti = i
			break
		}
	}
	if ti < 0 {
		return nil, bad("no time range HH:MM-HH:MM")
	}
	if ti > 1 {
		return nil, bad("unexpected %q before the time range", strings.Join(fields[1:ti], " "))
	}
	if len(fields) > ti+2 {
		return nil, bad("unexpected %q after the time zone", strings.Join(fields[ti+2:], " "))
	}
	if ti == 1 {
		if err := w.parseDays(fields[0]); err != nil {
			return nil, bad("%v", err)
		}
	} else {
		for d := range w.days {
			w.days[d] = true
		}
	}
	a, b, _ := strings.Cut(fields[ti], "-")
	var err error
	if w.start, err = parseClock(a, false); err != nil {
		return nil, bad("%v", err)
	}
	if w.end, err = parseClock(b, true); err != nil {
		return nil, bad("%v", err)
	}
	if w.start == w.end {
		return nil, bad("the window opens and closes at the same time")
	}
	if len(fields) == ti+2 {
		zone := fields[ti+1]
		switch strings.ToLower(zone) {
		case "local":
			w.loc = time.Local
		case "utc", "z":
			w.loc = time.UTC
		default:
			loc, err := time.LoadLocation(zone)
			if err != nil {
				return nil, bad("unknown time zone %q (use an IANA name such as Europe/Berlin, or UTC)", zone)
			}
			w.loc = loc
		}
	}
	return w, nil
}

func (w *Window) parseDays(s string) error {
	ls := strings.ToLower(s)
	if ls == "daily" || ls == "*" || ls == "every" {
		for d := range w.days {
			w.days[d] = true
		}
		return nil
	}
	for _, part := range strings.Split(ls, ",") {
		a, b, isRange := strings.Cut(part, "-")
		if !isRange {
			a, b, isRange = strings.Cut(part, "..")
		}
		from, ok := dayNames[a]
		if !ok {
			return fmt.Errorf("unknown day %q (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges like Mon-Fri, or daily)", a)
		}
		to := from
		if isRange {
			if to, ok = dayNames[b]; !ok {
				return fmt.Errorf("unknown day %q (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges like Mon-Fri, or daily)", b)
			}
		}
		for d := from; ; d = (d + 1) % 7 {
			w.days[d] = true
			if d == to {
				break
			}
		}
	}
	return nil
}

func parseClock(s string, isEnd bool) (int, error) {
	parts := strings.Split(s, ":")
	if len(parts) == 2 {
		parts = append(parts, "00")
	}
	bad := fmt.Errorf("%q is not a time of day HH:MM", s)
	if len(parts) != 3 {
		return 0, bad
	}
	var v [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || (i > 0 && (len(p) != 2 || n > 59)) {
			return 0, bad
		}
		v[i] = n
	}
	if v[0] > 24 || (v[0] == 24 && (v[1] != 0 || v[2] != 0 || !isEnd)) {
		return 0, bad
	}
	return v[0]*3600 + v[1]*60 + v[2], nil
}

// String is the window as given (whitespace normalised).
func (w *Window) String() string { return w.spec }

// Location is the window's time zone.
func (w *Window) Location() *time.Location { return w.loc }

func (w *Window) occurrence(day time.Time) (open, close time.Time) {
	y, m, d := day.Date()
	open = time.Date(y, m, d, w.start/3600, w.start/60%60, w.start%60, 0, w.loc)
	endDay := d
	if w.end <= w.start {
		endDay++
	}
	close = time.Date(y, m, endDay, w.end/3600, w.end/60%60, w.end%60, 0, w.loc)
	return open, close
}

// Open reports whether t is inside the window and, if so, when this
// opening of the window began and when it closes.
func (w *Window) Open(t time.Time) (open, close time.Time, ok bool) {
	lt := t.In(w.loc)
	for _, off := range []int{-1, 0} {
		day := lt.AddDate(0, 0, off)
		if !w.days[day.Weekday()] {
			continue
		}
		o, c := w.occurrence(day)
		if !t.Before(o) && t.Before(c) {
			return o, c, true
		}
	}
	return time.Time{}, time.Time{}, false
}

// Next is the next time the window opens after t.
func (w *Window) Next(t time.Time) time.Time {
	lt := t.In(w.loc)
	for off := 0; off <= 8; off++ {
		day := lt.AddDate(0, 0, off)
		if !w.days[day.Weekday()] {
			continue
		}
		if o, _ := w.occurrence(day); o.After(t) {
			return o
		}
	}
	return time.Time{} // unreachable: a window has at least one day
}

// Check returns nil when t is inside the window, else an error (errors.Is
// ErrOutsideWindow) saying when it next opens.
func (w *Window) Check(t time.Time) error {
	if _, _, ok := w.Open(t); ok {
		return nil
	}
	next := w.Next(t)
	return fmt.Errorf("it is %s, outside the maintenance window %q; it opens next at %s (in %s): %w",
		t.In(w.loc).Format("Mon 2006-01-02 15:04 MST"), w.spec, next.Format("Mon 2006-01-02 15:04 MST"), next.Sub(t).Round(time.Minute), ErrOutsideWindow)
}

// StepGuard returns a RunOptions.BeforeStep that refuses to start a step
// once the window has closed: the run stops cleanly (its status is
// "aborted", errors.Is ErrOutsideWindow and ErrAborted) and the journal
// lets `caretaker resume` finish it in the next window. now is the clock
// (time.Now when nil).
func (w *Window) StepGuard(now func() time.Time) func(*runner.Step) error {
	if now == nil {
		now = time.Now
	}
	return func(s *runner.Step) error {
		t := now()
		if _, _, ok := w.Open(t); ok {
			return nil
		}
		return fmt.Errorf("maintenance window %q closed, not starting step %q (it opens next at %s; continue then with `caretaker resume`): %w: %w",
			w.spec, s.Name, w.Next(t).Format("Mon 2006-01-02 15:04 MST"), ErrOutsideWindow, errs.ErrAborted)
	}
}

// ChainBeforeStep combines BeforeStep hooks: the first error wins.
func ChainBeforeStep(fns ...func(*runner.Step) error) func(*runner.Step) error {
	var live []func(*runner.Step) error
	for _, f := range fns {
		if f != nil {
			live = append(live, f)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return func(s *runner.Step) error {
		for _, f := range live {
			if err := f(s); err != nil {
				return err
			}
		}
		return nil
	}
}
