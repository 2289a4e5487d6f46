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
	q, ok := inv.journalArgs()
	if !ok {
		return 1
	}
	es := q.entries(inv.n.journal.snapshot(""))
	if len(es) == 0 {
		if !q.quiet && q.output != "json" && q.output != "cat" {
			fmt.Fprintln(inv.stdout, "-- No entries --")
		}
		return 0
	}
	inv.printJournal(es, q.output)
	return 0
}

// journalQuery is what a journalctl command line asks for.
type journalQuery struct {
	units          []string
	lines          int
	output         string
	since, until   time.Time
	grep           *regexp.Regexp
	reverse, quiet bool
}

// journalArgs parses journalctl's options; false once it has printed an error.
func (inv *invocation) journalArgs() (journalQuery, bool) {
	q := journalQuery{lines: -1, output: "short"}
	for i := 0; i < len(inv.args); i++ {
		if !q.option(inv, &i) {
			return q, false
		}
	}
	return q, true
}

// optionArg consumes the argument of option a at *i; false once it has printed an error.
func (inv *invocation) optionArg(i *int, a string) (string, bool) {
	if *i+1 >= len(inv.args) {
		inv.errf("journalctl: option '%s' requires an argument", a)
		return "", false
	}
	*i++
	return inv.args[*i], true
}

// option applies the option at inv.args[*i] (and its argument); false once it has printed an error.
func (q *journalQuery) option(inv *invocation, i *int) bool {
	a := inv.args[*i]
	var val string
	name := a
	if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "--") {
		name, val = k, v
	}
	switch {
	case journalValueOptions[name]:
		if val == "" {
			v, ok := inv.optionArg(i, a)
			if !ok {
				return false
			}
			val = v
		}
		return q.valueOption(inv, name, val)
	case strings.HasPrefix(a, "-u") && len(a) > 2:
		q.units = append(q.units, a[2:])
	case strings.HasPrefix(a, "-n") && len(a) > 2:
		v, err := strconv.Atoi(a[2:])
		if err != nil {
			inv.errf("Failed to parse lines '%s'", a[2:])
			return false
		}
		q.lines = v
	case name == "-r" || name == "--reverse":
		q.reverse = true
	case name == "-q" || name == "--quiet":
		q.quiet = true
	case name == "-f" || name == "--follow":
		inv.errf("journalctl: --follow is not supported on lab nodes")
		return false
	case name == "-e" || name == "--pager-end":
		if q.lines < 0 {
			q.lines = 1000
		}
	default:
		// --no-pager, -b, -x, --no-hostname, --utc, -a: accepted.
	}
	return true
}

// journalValueOptions are the options that take a value (the next
// argument, or after = for the long ones).
var journalValueOptions = map[string]bool{
	"-u": true, "--unit": true, "-n": true, "--lines": true, "-o": true, "--output": true,
	"-S": true, "--since": true, "-U": true, "--until": true, "-g": true, "--grep": true,
}

// valueOption applies option name with its value val; false once it has
// printed an error.
func (q *journalQuery) valueOption(inv *invocation, name, val string) bool {
	switch name {
	case "-u", "--unit":
		q.units = append(q.units, val)
	case "-n", "--lines":
		if val == "all" || val == "+0" {
			q.lines = -1
			break
		}
		v, err := strconv.Atoi(strings.TrimPrefix(val, "+"))
		if err != nil {
			inv.errf("Failed to parse lines '%s'", val)
			return false
		}
		q.lines = v
	case "-o", "--output":
		q.output = val
	case "-S", "--since", "-U", "--until":
		t, err := parseJournalTime(val, time.Now())
		if err != nil {
			inv.errf("Failed to parse timestamp: %s", val)
			return false
		}
		if name == "-S" || name == "--since" {
			q.since = t
		} else {
			q.until = t
		}
	case "-g", "--grep":
		re, err := regexp.Compile(val)
		if err != nil {
			inv.errf("Bad pattern \"%s\": %v", val, err)
			return false
		}
		q.grep = re
	}
	return true
}

// entries keeps the entries q selects, in the order it asks for.
func (q *journalQuery) entries(all []entry) []entry {
	var es []entry
	for _, e := range all {
		if len(q.units) > 0 {
			match := false
			for _, u := range q.units {
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
		if !q.since.IsZero() && e.At.Before(q.since) {
			continue
		}
		if !q.until.IsZero() && e.At.After(q.until) {
			continue
		}
		if q.grep != nil && !q.grep.MatchString(e.Msg) {
			continue
		}
		es = append(es, e)
	}
	if q.lines >= 0 && len(es) > q.lines {
		es = es[len(es)-q.lines:]
	}
	if q.reverse {
		for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
			es[i], es[j] = es[j], es[i]
		}
	}
	return es
}

// printJournal prints es in journalctl's output format output.
func (inv *invocation) printJournal(es []entry, output string) {
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
