package main

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/notify"
	"github.com/caretaker/caretaker/runner/transport"
	windowpkg "github.com/caretaker/caretaker/runner/window"
)

func init() {
	extraCommands = append(extraCommands, newScheduleCommand)
}

type scheduleFlags struct {
	playbook    string
	check       bool
	on          string
	name        string
	binary      string
	inventory   string
	cluster     string
	params      []string
	limit       string
	stateDir    string
	window      string
	notifyURL   string
	metricsFile string
	warnDays    int
	user        string
	logFile     string
}

func newScheduleCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "schedule",
		Short: "Print systemd timer units or a crontab line that run caretaker on a schedule",
	}
	c.AddCommand(newSchedulePrintCommand())
	return c
}

func newSchedulePrintCommand() *cobra.Command {
	var f scheduleFlags
	c := &cobra.Command{
		Use:   "print (--playbook NAME | --check) -i INVENTORY [--on daily]",
		Short: "Print a systemd service + timer pair and a crontab line that run a playbook (or `caretaker check`) unattended",
		Long: `print writes, to standard output, a systemd service and timer that run
` + "`caretaker run PLAYBOOK --yes --output json`" + ` (or ` + "`caretaker check`" + ` with --check) on
the schedule given with --on, and the equivalent crontab line. Nothing is
installed: save the units under /etc/systemd/system/ and run
` + "`systemctl daemon-reload && systemctl enable --now NAME.timer`" + `, or add the line
with ` + "`crontab -e`" + `.

--on takes systemd calendar shorthands (minutely, hourly, daily, weekly,
monthly) or "[DAYS] HH:MM" such as "Sat 02:00" or "Mon..Fri 22:30"; other
systemd OnCalendar expressions are passed through (without a crontab line).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return schedulePrint(cmd.OutOrStdout(), &f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.playbook, "playbook", "", "playbook to run (a shipped name or a .star file)")
	fl.BoolVar(&f.check, "check", false, "schedule `caretaker check` (certificate and CA health) instead of a playbook")
	fl.StringVar(&f.on, "on", "daily", `when: daily, hourly, weekly, "Sat 02:00", "Mon..Fri 22:30", or any systemd OnCalendar expression`)
	fl.StringVar(&f.name, "name", "", "unit name (default caretaker-PLAYBOOK or caretaker-check, plus -CLUSTER)")
	fl.StringVar(&f.binary, "binary", "", "path of the caretaker binary (default: this one)")
	fl.StringVarP(&f.inventory, "inventory", "i", "", "inventory file (required; made absolute)")
	fl.StringVar(&f.cluster, "cluster", "", "cluster of the inventory")
	fl.StringArrayVarP(&f.params, "param", "p", nil, "playbook parameter key=value (repeatable)")
	fl.StringVar(&f.limit, "limit", "", "only these nodes")
	fl.StringVar(&f.stateDir, "state-dir", "", "state directory of the scheduled runs (default: yours, so `caretaker runs` shows them)")
	fl.StringVar(&f.window, "window", "", `maintenance window passed to the run, e.g. "Sat 02:00-05:00 Europe/Berlin"`)
	fl.StringVar(&f.notifyURL, "notify-url", "", "URL the run posts its JSON summary to")
	fl.StringVar(&f.metricsFile, "metrics-file", "", "with --check: Prometheus textfile to write, e.g. /var/lib/node_exporter/textfile_collector/caretaker.prom")
	fl.IntVar(&f.warnDays, "warn-days", 30, "with --check: warn about certificates expiring within this many days")
	fl.StringVar(&f.user, "user", "", "user the service runs as (default: you, whose SSH keys and known_hosts the inventory relies on)")
	fl.StringVar(&f.logFile, "log-file", "", "crontab line: append output to this file (default /tmp/NAME.log)")
	return c
}

func schedulePrint(w io.Writer, f *scheduleFlags) error {
	inv, cal, cron, err := validateSchedule(f)
	if err != nil {
		return err
	}
	runAs := f.user
	if runAs == "" {
		if u, err := user.Current(); err == nil {
			runAs = u.Username
		}
	}
	argv, what := scheduleArgv(f, inv)
	name := scheduleUnitName(f)
	writeSystemdUnits(w, f, unitSpec{name: name, what: what, inv: inv, runAs: runAs, cal: cal, argv: argv})
	if cron == "" {
		fmt.Fprintf(w, "# crontab: %q has no crontab equivalent; use the systemd timer\n", f.on)
		return nil
	}
	logFile := f.logFile
	if logFile == "" {
		logFile = "/tmp/" + name + ".log"
	}
	var sh []string
	for _, a := range argv {
		sh = append(sh, strings.ReplaceAll(transport.ShellQuote(a), "%", `\%`))
	}
	fmt.Fprintf(w, "# crontab line (crontab -e, as %s), instead of the timer:\n", orDefault(runAs, "the user whose SSH keys the inventory uses"))
	fmt.Fprintf(w, "%s %s >>%s 2>&1\n", cron, strings.Join(sh, " "), transport.ShellQuote(logFile))
	return nil
}

// validateSchedule checks the flags of schedule print and returns the
// inventory's absolute path and the schedule as OnCalendar and crontab
// expressions (cron is empty when there is no crontab equivalent).
func validateSchedule(f *scheduleFlags) (inv, cal, cron string, err error) {
	if (f.playbook == "") == !f.check {
		return "", "", "", usageError{fmt.Errorf("give either --playbook NAME or --check")}
	}
	if f.inventory == "" {
		return "", "", "", usageError{fmt.Errorf("no inventory: give one with -i FILE (scheduled runs need an absolute path)")}
	}
	inv, err = filepath.Abs(f.inventory)
	if err != nil {
		return "", "", "", err
	}
	if _, err := inventorypkg.Load(inv); err != nil {
		return "", "", "", err
	}
	if f.window != "" {
		if _, err := windowpkg.Parse(f.window); err != nil {
			return "", "", "", usageError{err}
		}
	}
	if f.notifyURL != "" {
		if _, err := notify.New(f.notifyURL); err != nil {
			return "", "", "", usageError{err}
		}
	}
	cal, cron, err = parseOnCalendar(f.on)
	if err != nil {
		return "", "", "", usageError{err}
	}
	return inv, cal, cron, nil
}

// scheduleArgv is the command line the scheduled unit runs and a short
// description of what it does.
func scheduleArgv(f *scheduleFlags, inv string) (argv []string, what string) {
	bin := f.binary
	if bin == "" {
		if exe, err := os.Executable(); err == nil {
			if r, err := filepath.EvalSymlinks(exe); err == nil {
				exe = r
			}
			bin = exe
		} else {
			bin = "/usr/local/bin/caretaker"
		}
	}
	argv = []string{bin}
	if f.check {
		argv = append(argv, "check", "-i", inv, "--output", "json", "--warn-days", strconv.Itoa(f.warnDays))
		if f.metricsFile != "" {
			mf, _ := filepath.Abs(f.metricsFile)
			argv = append(argv, "--metrics-file", mf)
		}
		what = "check certificates and CA consistency"
	} else {
		stateDir := f.stateDir
		if stateDir == "" {
			stateDir = (&runFlags{}).resolvedStateDir()
		}
		if abs, err := filepath.Abs(stateDir); err == nil {
			stateDir = abs
		}
		pb := f.playbook
		if strings.HasSuffix(pb, ".star") || strings.ContainsRune(pb, os.PathSeparator) {
			if abs, err := filepath.Abs(pb); err == nil {
				pb = abs
			}
		}
		argv = append(argv, "run", pb, "-i", inv, "--yes", "--output", "json", "--state-dir", stateDir)
		for _, p := range f.params {
			argv = append(argv, "-p", p)
		}
		if f.window != "" {
			argv = append(argv, "--window", f.window)
		}
		if f.notifyURL != "" {
			argv = append(argv, "--notify-url", f.notifyURL)
		}
		what = "playbook " + f.playbook
	}
	if f.cluster != "" {
		argv = append(argv, "--cluster", f.cluster)
	}
	if f.limit != "" {
		argv = append(argv, "--limit", f.limit)
	}
	return argv, what
}

// scheduleUnitName is the systemd unit name: --name, or one made from the
// playbook (or "check") and the cluster.
func scheduleUnitName(f *scheduleFlags) string {
	name := f.name
	if name == "" {
		if f.check {
			name = "caretaker-check"
		} else {
			name = "caretaker-" + strings.TrimSuffix(filepath.Base(f.playbook), ".star")
		}
		if f.cluster != "" {
			name += "-" + f.cluster
		}
	}
	return unitNameRe.ReplaceAllString(name, "-")
}

// unitSpec is what the systemd service and timer are written from.
type unitSpec struct {
	name, what, inv, runAs, cal string
	argv                        []string
}

// writeSystemdUnits prints the service and timer units.
func writeSystemdUnits(w io.Writer, f *scheduleFlags, u unitSpec) {
	var exec []string
	for _, a := range u.argv {
		exec = append(exec, systemdQuote(a))
	}
	fmt.Fprintf(w, "# /etc/systemd/system/%s.service\n", u.name)
	fmt.Fprintf(w, "[Unit]\nDescription=caretaker: %s (%s)\nWants=network-online.target\nAfter=network-online.target\n\n", u.what, u.inv)
	fmt.Fprintf(w, "[Service]\nType=oneshot\n")
	if u.runAs != "" {
		fmt.Fprintf(w, "User=%s\n", u.runAs)
	}
	fmt.Fprintf(w, "ExecStart=%s\n", strings.Join(exec, " "))
	fmt.Fprintf(w, "# exit codes: 0 ok, 1 failed, 2 bad input, 3 locked by another run, 4 drift or expiring certificates, 5 outside the window\n\n")
	fmt.Fprintf(w, "# /etc/systemd/system/%s.timer\n", u.name)
	fmt.Fprintf(w, "[Unit]\nDescription=Run %s.service %s\n\n", u.name, f.on)
	fmt.Fprintf(w, "[Timer]\nOnCalendar=%s\nPersistent=true\n\n", u.cal)
	fmt.Fprintf(w, "[Install]\nWantedBy=timers.target\n\n")
	fmt.Fprintf(w, "# enable: systemctl daemon-reload && systemctl enable --now %s.timer\n\n", u.name)
}

var unitNameRe = regexp.MustCompile(`[^A-Za-z0-9:_.\\-]+`)

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// systemdQuote quotes one ExecStart argument: systemd splits on spaces,
// honours double quotes with C-style escapes, and expands % specifiers
// and $VARIABLES, which are escaped as %% and $$.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
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
