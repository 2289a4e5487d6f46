// The crontab lines of schedule print, and --on as OnCalendar and crontab
// schedules.

package main

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/caretaker/caretaker/runner/transport"
)

// cronCommand is a command line for a crontab line: quoted for sh, with
// cron's % escaped.
func cronCommand(argv []string) string {
	var out []string
	for _, a := range argv {
		if a == notifyURLRef {
			out = append(out, `"$`+notifyURLEnv+`"`)
			continue
		}
		out = append(out, strings.ReplaceAll(transport.ShellQuote(a), "%", `\%`))
	}
	return strings.Join(out, " ")
}

// writeCron prints the crontab lines (the run and its prune), how to
// create the log directory, and the logrotate snippet for the log.
func writeCron(w io.Writer, s *schedule) {
	runAs := orDefault(s.runAs, "the user whose SSH keys the inventory uses")
	log := transport.ShellQuote(s.logFile)
	fmt.Fprintf(w, "# crontab lines (crontab -e, as %s), instead of the timers; cron has no journal: they append to %s\n", runAs, s.logFile)
	fmt.Fprintf(w, "# create its directory first (as root): install -d -m 0750 -o %s -g %s %s\n", orDefault(s.runAs, "USER"), orDefault(s.group, "GROUP"), filepath.Dir(s.logFile))
	for _, l := range s.ssh {
		fmt.Fprintln(w, l)
	}
	line := cronCommand(s.argv) + " >>" + log + " 2>&1"
	if s.notifyURL != "" {
		env := transport.ShellQuote(s.envFile)
		notifyCmd := cronCommand([]string{s.bin, "schedule", "notify", "--unit", s.name, "--log", s.logFile})
		line = fmt.Sprintf(". %s && %s || %s --exit-status $? >>%s 2>&1", env, line, notifyCmd, log)
	}
	fmt.Fprintf(w, "%s %s\n", s.cron, line)
	if s.prune != nil {
		fmt.Fprintf(w, "%s %s >>%s 2>&1\n", pruneCron, cronCommand(s.prune), log)
	}
	fmt.Fprintf(w, "\n# /etc/logrotate.d/%s (for the crontab lines): rotate %s weekly, keep 8\n", s.name, s.logFile)
	fmt.Fprintf(w, "%s {\n", s.logFile)
	if s.runAs != "" {
		fmt.Fprintf(w, "\tsu %s %s\n", s.runAs, orDefault(s.group, s.runAs))
	}
	fmt.Fprintf(w, "\tweekly\n\trotate 8\n\tcompress\n\tdelaycompress\n\tmissingok\n\tnotifempty\n")
	if s.runAs != "" {
		fmt.Fprintf(w, "\tcreate 0640 %s %s\n", s.runAs, orDefault(s.group, s.runAs))
	}
	fmt.Fprintf(w, "}\n")
}

var cronDays = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

var shorthands = map[string]string{
	"minutely": "* * * * *",
	"hourly":   "0 * * * *",
	"daily":    "0 0 * * *",
	"weekly":   "0 0 * * 1",
	"monthly":  "0 0 1 * *",
	"yearly":   "0 0 1 1 *",
	"annually": "0 0 1 1 *",
}

var daysRe = regexp.MustCompile(`^[A-Za-z]+((\.\.|[,-])[A-Za-z]+)*$`)

var clockRe = regexp.MustCompile(`^(\d{1,2}):(\d{2})(?::(\d{2}))?$`)

// parseOnCalendar turns --on into a systemd OnCalendar expression and,
// when there is one, the crontab schedule (five fields).
func parseOnCalendar(on string) (calendar, cron string, err error) {
	on = strings.TrimSpace(on)
	if on == "" {
		return "", "", fmt.Errorf("--on is empty: give daily, hourly, \"Sat 02:00\" or a systemd OnCalendar expression")
	}
	if c, ok := shorthands[strings.ToLower(on)]; ok {
		return strings.ToLower(on), c, nil
	}
	fields := strings.Fields(on)
	days, clock := "", fields[len(fields)-1]
	m := clockRe.FindStringSubmatch(clock)
	if m == nil || len(fields) > 3 || (len(fields) == 3 && fields[1] != "*-*-*") {
		// Anything else is systemd's business.
		return on, "", nil
	}
	if len(fields) >= 2 && fields[0] != "*-*-*" {
		days = fields[0]
		if !daysRe.MatchString(days) {
			return on, "", nil // a date expression: systemd's business
		}
	}
	hh, _ := strconv.Atoi(m[1])
	mm, _ := strconv.Atoi(m[2])
	ss := 0
	if m[3] != "" {
		ss, _ = strconv.Atoi(m[3])
	}
	if hh > 23 || mm > 59 || ss > 59 {
		return "", "", fmt.Errorf("--on %q: %q is not a time of day", on, clock)
	}
	cronDOW, calDOW := "*", ""
	if days != "" {
		var cronParts, calParts []string
		for _, part := range strings.Split(days, ",") {
			a, b, isRange := strings.Cut(part, "..")
			if !isRange {
				a, b, isRange = strings.Cut(part, "-")
			}
			da, ok := cronDays[strings.ToLower(a)[:min(3, len(a))]]
			if !ok || len(a) < 3 {
				return "", "", fmt.Errorf("--on %q: unknown day %q (use Mon..Sun)", on, a)
			}
			if !isRange {
				cronParts = append(cronParts, strconv.Itoa(da))
				calParts = append(calParts, dayTitle(a))
				continue
			}
			db, ok := cronDays[strings.ToLower(b)[:min(3, len(b))]]
			if !ok || len(b) < 3 {
				return "", "", fmt.Errorf("--on %q: unknown day %q (use Mon..Sun)", on, b)
			}
			if db < da {
				// Cron ranges do not wrap (Fri-Mon): list both ends.
				cronParts = append(cronParts, fmt.Sprintf("%d-6", da), fmt.Sprintf("0-%d", db))
			} else {
				cronParts = append(cronParts, fmt.Sprintf("%d-%d", da, db))
			}
			calParts = append(calParts, dayTitle(a)+".."+dayTitle(b))
		}
		cronDOW = strings.Join(cronParts, ",")
		calDOW = strings.Join(calParts, ",") + " "
	}
	calendar = fmt.Sprintf("%s*-*-* %02d:%02d:%02d", calDOW, hh, mm, ss)
	cron = fmt.Sprintf("%d %d * * %s", mm, hh, cronDOW)
	if ss != 0 {
		cron = "" // cron has no seconds
	}
	return calendar, cron, nil
}

func dayTitle(d string) string {
	d = strings.ToLower(d)[:3]
	return strings.ToUpper(d[:1]) + d[1:]
}
