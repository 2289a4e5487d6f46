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
	envFile     string
	metricsFile string
	warnDays    int
	user        string
	logFile     string
	prune       string
}

func newScheduleCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "schedule",
		Short: "Print systemd timer units or a crontab line that run caretaker on a schedule",
	}
	c.AddCommand(newSchedulePrintCommand(), newScheduleNotifyCommand())
	return c
}

func newSchedulePrintCommand() *cobra.Command {
	var f scheduleFlags
	c := &cobra.Command{
		Use:   "print (--playbook NAME | --check) -i INVENTORY [--on daily]",
		Short: "Print a systemd service + timer pair and a crontab line that run a playbook (or `caretaker check`) unattended",
		Long: `print writes, to standard output, a systemd service and timer that run
` + "`caretaker run PLAYBOOK --yes --output json`" + ` (or ` + "`caretaker check`" + ` with --check) on
the schedule given with --on, and the equivalent crontab line with its
logrotate snippet. Nothing is installed: save the units under
/etc/systemd/system/ and run ` + "`systemctl daemon-reload && systemctl enable --now NAME.timer`" + `,
or add the line with ` + "`crontab -e`" + `.

--on takes systemd calendar shorthands (minutely, hourly, daily, weekly,
monthly) or "[DAYS] HH:MM" such as "Sat 02:00" or "Mon..Fri 22:30"; other
systemd OnCalendar expressions are passed through (without a crontab line).

For a playbook, a second service + timer pair (NAME-prune) and a crontab
line run ` + "`caretaker prune --keep 30d`" + ` (--prune) on the state directory
daily at 04:30, so that run journals and backups do not pile up.

The units run an installed binary: --binary, else this one unless it is a
temporary or build output (go run, go build in a source tree), in which
case /usr/local/bin/caretaker. A --binary that is temporary or a build
output is refused. See docs/unattended.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return schedulePrint(cmd.OutOrStdout(), cmd.ErrOrStderr(), &f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.playbook, "playbook", "", "playbook to run (a shipped name or a .star file)")
	fl.BoolVar(&f.check, "check", false, "schedule caretaker check (certificate and CA health) instead of a playbook")
	fl.StringVar(&f.on, "on", "daily", `when: daily, hourly, weekly, "Sat 02:00", "Mon..Fri 22:30", or any systemd OnCalendar expression`)
	fl.StringVar(&f.name, "name", "", "unit name (default caretaker-PLAYBOOK or caretaker-check, plus -CLUSTER)")
	fl.StringVar(&f.binary, "binary", "", "installed caretaker binary the units run (default: this one, or "+installedBinary+" when this one is a temporary or build output)")
	fl.StringVarP(&f.inventory, "inventory", "i", "", "inventory file (required; made absolute)")
	fl.StringVar(&f.cluster, "cluster", "", "cluster of the inventory")
	fl.StringArrayVarP(&f.params, "param", "p", nil, "playbook parameter key=value (repeatable)")
	fl.StringVar(&f.limit, "limit", "", "only these nodes")
	fl.StringVar(&f.stateDir, "state-dir", "", "state directory of the scheduled runs (default: yours, so that caretaker runs lists them)")
	fl.StringVar(&f.window, "window", "", `maintenance window passed to the run, e.g. "Sat 02:00-05:00 Europe/Berlin"`)
	fl.StringVar(&f.notifyURL, "notify-url", "", "webhook URL: the run posts its JSON summary there, and a failed unit (or cron job) posts unit_failed; kept in --env-file, out of the units")
	fl.StringVar(&f.envFile, "env-file", "", "with --notify-url: the 0600 file that holds it (default /etc/caretaker/NAME.env)")
	fl.StringVar(&f.metricsFile, "metrics-file", "", "with --check: Prometheus textfile to write, e.g. /var/lib/node_exporter/textfile_collector/caretaker.prom")
	fl.IntVar(&f.warnDays, "warn-days", 30, "with --check: warn about certificates expiring within this many days")
	fl.StringVar(&f.user, "user", "", "user the service runs as (default: you, whose SSH keys and known_hosts the inventory relies on)")
	fl.StringVar(&f.logFile, "log-file", "", "crontab line: append output to this file (default "+cronLogDir+"/NAME.log, rotated by the printed logrotate snippet)")
	fl.StringVar(&f.prune, "prune", "30d", "playbook runs: a prune timer (and crontab line) removes journals and backups older than this from the state directory daily at 04:30 (off: none)")
	return c
}

// installedBinary is where the units expect caretaker when the running
// binary is a temporary or build output.
const installedBinary = "/usr/local/bin/caretaker"

// cronLogDir is where crontab lines log by default.
const cronLogDir = "/var/log/caretaker"

// pruneCalendar and pruneCron are when the prune timer and the prune
// crontab line run: daily at 04:30.
const (
	pruneCalendar = "*-*-* 04:30:00"
	pruneCron     = "30 4 * * *"
)

// notifyURLRef stands in the command line for the webhook URL, which the
// units and the crontab line read from the env file: systemd writes it as
// ${CARETAKER_NOTIFY_URL}, sh as "$CARETAKER_NOTIFY_URL". (A NUL byte
// cannot come from a command line.)
const notifyURLRef = "\x00notify-url"

// notifyURLEnv is the variable of the env file that holds --notify-url.
const notifyURLEnv = "CARETAKER_NOTIFY_URL"

// schedule is what schedule print writes, resolved from its flags.
type schedule struct {
	name, what, inv string
	runAs, group    string
	cal, cron       string
	bin, stateDir   string
	argv            []string
	prune           []string // the prune command line, nil for none
	notifyURL       string
	envFile         string
	logFile         string
	ssh             []string // comment lines about SSH keys; all but the first are warnings
}

func schedulePrint(w, stderr io.Writer, f *scheduleFlags) error {
	s, err := buildSchedule(f, stderr)
	if err != nil {
		return err
	}
	for _, l := range s.ssh[1:] {
		fmt.Fprintln(stderr, "caretaker: schedule print:", strings.TrimPrefix(l, "# WARNING: "))
	}
	writeService(w, s)
	if s.notifyURL != "" {
		writeNotifyUnit(w, s)
	}
	writeTimer(w, s, f.on)
	if s.prune != nil {
		writePruneUnits(w, s)
	}
	if s.notifyURL != "" {
		writeEnvFile(w, s)
	}
	if s.cron == "" {
		fmt.Fprintf(w, "# crontab: %q has no crontab equivalent; use the systemd timer\n", f.on)
		return nil
	}
	writeCron(w, s)
	return nil
}

// buildSchedule checks the flags and resolves everything the units and the
// crontab line are written from.
func buildSchedule(f *scheduleFlags, stderr io.Writer) (*schedule, error) {
	inv, cal, cron, err := validateSchedule(f)
	if err != nil {
		return nil, err
	}
	bin, err := scheduleBinary(f.binary, stderr)
	if err != nil {
		return nil, err
	}
	s := &schedule{inv: inv.Path, cal: cal, cron: cron, bin: bin, runAs: f.user, notifyURL: f.notifyURL}
	if s.runAs == "" {
		if u, err := user.Current(); err == nil {
			s.runAs = u.Username
		}
	}
	s.group = primaryGroup(s.runAs)
	s.name = scheduleUnitName(f)
	s.stateDir = f.stateDir
	if s.stateDir == "" {
		s.stateDir = (&runFlags{}).resolvedStateDir()
	}
	if abs, err := filepath.Abs(s.stateDir); err == nil {
		s.stateDir = abs
	}
	s.argv, s.what = scheduleArgv(f, s)
	if !f.check && f.prune != "off" {
		s.prune = []string{bin, "prune", "--keep", f.prune, "--state-dir", s.stateDir}
	}
	if s.notifyURL != "" {
		s.envFile = orDefault(f.envFile, "/etc/caretaker/"+s.name+".env")
	}
	s.logFile = orDefault(f.logFile, cronLogDir+"/"+s.name+".log")
	if abs, err := filepath.Abs(s.logFile); err == nil {
		s.logFile = abs
	}
	s.ssh = sshComments(inv, f.cluster, orDefault(s.runAs, "the service's user"))
	return s, nil
}

// validateSchedule checks the flags of schedule print and returns the
// inventory and the schedule as OnCalendar and crontab expressions (cron
// is empty when there is no crontab equivalent).
func validateSchedule(f *scheduleFlags) (inv *inventorypkg.Inventory, cal, cron string, err error) {
	if (f.playbook == "") == !f.check {
		return nil, "", "", usageError{fmt.Errorf("give either --playbook NAME or --check")}
	}
	if f.inventory == "" {
		return nil, "", "", usageError{fmt.Errorf("no inventory: give one with -i FILE (scheduled runs need an absolute path)")}
	}
	path, err := filepath.Abs(f.inventory)
	if err != nil {
		return nil, "", "", fmt.Errorf("inventory %s: %w", f.inventory, err)
	}
	if inv, err = inventorypkg.Load(path); err != nil {
		return nil, "", "", err
	}
	inv.Path = path
	if f.window != "" {
		if _, err := windowpkg.Parse(f.window); err != nil {
			return nil, "", "", usageError{err}
		}
	}
	if f.notifyURL != "" {
		if _, err := notify.New(f.notifyURL); err != nil {
			return nil, "", "", usageError{err}
		}
		if strings.ContainsAny(f.notifyURL, "'\n") {
			return nil, "", "", usageError{fmt.Errorf("--notify-url: write a single quote in the URL as %%27 (the URL is saved single-quoted in the env file)")}
		}
	}
	if f.envFile != "" && !filepath.IsAbs(f.envFile) {
		return nil, "", "", usageError{fmt.Errorf("--env-file %s: give an absolute path", f.envFile)}
	}
	if !f.check && f.prune != "off" {
		if _, err := parseKeep(f.prune); err != nil {
			return nil, "", "", usageError{fmt.Errorf("--prune: %w (or off)", err)}
		}
	}
	cal, cron, err = parseOnCalendar(f.on)
	if err != nil {
		return nil, "", "", usageError{err}
	}
	return inv, cal, cron, nil
}

// scheduleArgv is the command line the scheduled unit runs and a short
// description of what it does.
func scheduleArgv(f *scheduleFlags, s *schedule) (argv []string, what string) {
	argv = []string{s.bin}
	if f.check {
		argv = append(argv, "check", "-i", s.inv, "--output", "json", "--warn-days", strconv.Itoa(f.warnDays))
		if f.metricsFile != "" {
			mf, _ := filepath.Abs(f.metricsFile)
			argv = append(argv, "--metrics-file", mf)
		}
		what = "check certificates and CA consistency"
	} else {
		pb := f.playbook
		if strings.HasSuffix(pb, ".star") || strings.ContainsRune(pb, os.PathSeparator) {
			if abs, err := filepath.Abs(pb); err == nil {
				pb = abs
			}
		}
		argv = append(argv, "run", pb, "-i", s.inv, "--yes", "--output", "json", "--state-dir", s.stateDir)
		for _, p := range f.params {
			argv = append(argv, "-p", p)
		}
		if f.window != "" {
			argv = append(argv, "--window", f.window)
		}
		if f.notifyURL != "" {
			argv = append(argv, "--notify-url", notifyURLRef)
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

var unitNameRe = regexp.MustCompile(`[^A-Za-z0-9:_.\\-]+`)

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
