package lab

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// journalctl prints the node's journal in journald's formats (systemd
// 252, Debian 12: short-iso prints the zone offset as +0000, as seen on a real node): -u UNIT (repeatable), -n/--lines,
// --since/--until, -o short|short-iso|short-precise|cat|json, -g/--grep,
// -r, -q; -f is not supported (the lab answers and exits).
func (inv *invocation) journalctl() int {
	var units []string
	lines := -1
	output := "short"
	var since, until time.Time
	var grep *regexp.Regexp
	reverse, quiet := false, false
	next := func(i *int, a string) (string, bool) {
		if *i+1 >= len(inv.args) {
			inv.errf("journalctl: option '%s' requires an argument", a)
			return "", false
		}
		*i++
		return inv.args[*i], true
	}
	for i := 0; i < len(inv.args); i++ {
		a := inv.args[i]
		var val string
		name := a
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "--") {
			name, val = k, v
		}
		need := func() bool {
			if val != "" {
				return true
			}
			v, ok := next(&i, a)
			val = v
			return ok
		}
		switch {
		case name == "-u" || name == "--unit":
			if !need() {
				return 1
			}
			units = append(units, val)
		case strings.HasPrefix(a, "-u") && len(a) > 2:
			units = append(units, a[2:])
		case name == "-n" || name == "--lines":
			if !need() {
				return 1
			}
			if val == "all" || val == "+0" {
				lines = -1
				break
			}
			v, err := strconv.Atoi(strings.TrimPrefix(val, "+"))
			if err != nil {
				inv.errf("Failed to parse lines '%s'", val)
				return 1
			}
			lines = v
		case strings.HasPrefix(a, "-n") && len(a) > 2:
			v, err := strconv.Atoi(a[2:])
			if err != nil {
				inv.errf("Failed to parse lines '%s'", a[2:])
				return 1
			}
			lines = v
		case name == "-o" || name == "--output":
			if !need() {
				return 1
			}
			output = val
		case name == "-S" || name == "--since" || name == "-U" || name == "--until":
			if !need() {
				return 1
			}
			t, err := parseJournalTime(val, time.Now())
			if err != nil {
				inv.errf("Failed to parse timestamp: %s", val)
				return 1
			}
			if name == "-S" || name == "--since" {
				since = t
			} else {
				until = t
			}
		case name == "-g" || name == "--grep":
			if !need() {
				return 1
			}
			re, err := regexp.Compile(val)
			if err != nil {
				inv.errf("Bad pattern \"%s\": %v", val, err)
				return 1
			}
			grep = re
		case name == "-r" || name == "--reverse":
			reverse = true
		case name == "-q" || name == "--quiet":
			quiet = true
		case name == "-f" || name == "--follow":
			inv.errf("journalctl: --follow is not supported on lab nodes")
			return 1
		case name == "-e" || name == "--pager-end":
			if lines < 0 {
				lines = 1000
			}
		default:
			// --no-pager, -b, -x, --no-hostname, --utc, -a: accepted.
		}
	}
	var es []entry
	for _, e := range inv.n.journal.snapshot("") {
		if len(units) > 0 {
			match := false
			for _, u := range units {
				name := u
				if !strings.Contains(name, ".") {
					name += ".service"
				}
				if e.Unit == name {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		if !since.IsZero() && e.At.Before(since) {
			continue
		}
		if !until.IsZero() && e.At.After(until) {
			continue
		}
		if grep != nil && !grep.MatchString(e.Msg) {
			continue
		}
		es = append(es, e)
	}
	if lines >= 0 && len(es) > lines {
		es = es[len(es)-lines:]
	}
	if reverse {
		for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
			es[i], es[j] = es[j], es[i]
		}
	}
	if len(es) == 0 {
		if !quiet && output != "json" && output != "cat" {
			fmt.Fprintln(inv.stdout, "-- No entries --")
		}
		return 0
	}
	host := inv.n.name
	for _, e := range es {
		switch output {
		case "cat":
			fmt.Fprintln(inv.stdout, e.Msg)
		case "short-iso":
			fmt.Fprintf(inv.stdout, "%s %s %s[%d]: %s\n", e.At.Format("2006-01-02T15:04:05-0700"), host, e.Ident, e.PID, e.Msg)
		case "short-precise":
			fmt.Fprintf(inv.stdout, "%s %s %s[%d]: %s\n", e.At.Format("Jan 02 15:04:05.000000"), host, e.Ident, e.PID, e.Msg)
		case "json":
			b, _ := json.Marshal(map[string]string{
				"__REALTIME_TIMESTAMP": strconv.FormatInt(e.At.UnixMicro(), 10),
				"_HOSTNAME":            host,
				"SYSLOG_IDENTIFIER":    e.Ident,
				"_PID":                 strconv.Itoa(e.PID),
				"_SYSTEMD_UNIT":        e.Unit,
				"MESSAGE":              e.Msg,
			})
			fmt.Fprintln(inv.stdout, string(b))
		default:
			fmt.Fprintln(inv.stdout, inv.n.journal.formatShort(e))
		}
	}
	return 0
}

// parseJournalTime understands the --since/--until forms scripts use:
// "YYYY-MM-DD HH:MM:SS", "YYYY-MM-DD", "HH:MM:SS", RFC 3339, "@UNIX",
// "now", "today", "yesterday", "-30s" / "-5min" and "5 min ago".
func parseJournalTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "now":
		return now, nil
	case "today":
		y, m, d := now.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, now.Location()), nil
	case "yesterday":
		y, m, d := now.AddDate(0, 0, -1).Date()
		return time.Date(y, m, d, 0, 0, 0, 0, now.Location()), nil
	}
	if strings.HasPrefix(s, "@") {
		f, err := strconv.ParseFloat(s[1:], 64)
		if err != nil {
			return time.Time{}, err
		}
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	rel := ""
	sign := time.Duration(1)
	switch {
	case strings.HasPrefix(s, "-"):
		rel, sign = s[1:], -1
	case strings.HasPrefix(s, "+"):
		rel = s[1:]
	case strings.HasSuffix(s, " ago"):
		rel, sign = strings.TrimSuffix(s, " ago"), -1
	}
	if rel != "" {
		d, err := parseSpan(rel)
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(sign * d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			y, m, d := now.Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, now.Location()), nil
		}
	}
	return time.Time{}, fmt.Errorf("unknown time %q", s)
}

// parseSpan parses systemd time spans such as "30s", "5min", "2 h".
func parseSpan(s string) (time.Duration, error) {
	s = strings.ReplaceAll(strings.TrimSpace(s), " ", "")
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, err
	}
	unit := map[string]time.Duration{
		"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hour": time.Hour, "hours": time.Hour, "d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
		"ms": time.Millisecond, "us": time.Microsecond,
	}[s[i:]]
	if unit == 0 {
		return 0, fmt.Errorf("unknown unit %q", s[i:])
	}
	return time.Duration(v * float64(unit)), nil
}
