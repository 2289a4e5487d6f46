package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/runner"
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
	fl.StringVar(&f.prune, "prune", "30d", "playbook runs: after each successful run, prune journals and backups older than this from the state directory (off: never)")
	return c
}

// installedBinary is where the units expect caretaker when the running
// binary is a temporary or build output.
const installedBinary = "/usr/local/bin/caretaker"

// cronLogDir is where crontab lines log by default.
const cronLogDir = "/var/log/caretaker"

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

// scheduleBinary is the caretaker binary the units run: --binary (made
// absolute), refused when it is a temporary or build output; else this
// binary, or installedBinary when this one is such an output (a note on
// stderr says so).
func scheduleBinary(flag string, stderr io.Writer) (string, error) {
	hint := "install it: install -m 0755 caretaker /usr/local/bin/ and pass --binary " + installedBinary
	if flag != "" {
		bin, err := filepath.Abs(flag)
		if err != nil {
			return "", usageError{fmt.Errorf("--binary %s: %w", flag, err)}
		}
		if why := buildPathReason(bin); why != "" {
			return "", usageError{fmt.Errorf("--binary %s: %s, which a timer or cron job must not run; %s", flag, why, hint)}
		}
		return bin, nil
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "caretaker: schedule print: cannot tell where this binary is (%v); the units run %s\n", err, installedBinary)
		return installedBinary, nil
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	if why := buildPathReason(exe); why != "" {
		fmt.Fprintf(stderr, "caretaker: schedule print: this binary is not installed (%s); the units run %s: install it there (install -m 0755 caretaker /usr/local/bin/), or pass --binary PATH\n", why, installedBinary)
		return installedBinary, nil
	}
	return exe, nil
}

// buildPathReason says why path (or the file its symbolic links lead to)
// must not be scheduled: it is a `go run`/`go test` output (a path element
// starting with go-build), a build output inside a Go source tree (a
// go.mod in its directory or one above), or under a temporary directory
// (os.TempDir(), /tmp, /var/tmp, /dev/shm). It is "" for any other path.
func buildPathReason(path string) string {
	paths := []string{filepath.Clean(path)}
	if r, err := filepath.EvalSymlinks(path); err == nil && r != paths[0] {
		paths = append(paths, r)
	}
	var temps []string
	for _, d := range []string{os.TempDir(), "/tmp", "/var/tmp", "/dev/shm"} {
		temps = append(temps, filepath.Clean(d))
		if r, err := filepath.EvalSymlinks(d); err == nil {
			temps = append(temps, r)
		}
	}
	for _, p := range paths {
		for _, el := range strings.Split(p, string(filepath.Separator)) {
			if strings.HasPrefix(el, "go-build") {
				return fmt.Sprintf("%s is a go run/go test build output", p)
			}
		}
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return fmt.Sprintf("%s is a build output in the Go source tree %s (it has a go.mod)", p, d)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
		for _, t := range temps {
			if rel, err := filepath.Rel(t, p); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
				return fmt.Sprintf("%s is under the temporary directory %s", p, t)
			}
		}
	}
	return ""
}

// primaryGroup is the name of the user's primary group (the user's name
// when it cannot be looked up).
func primaryGroup(name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		return name
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return name
	}
	return g.Name
}

// sshComments are the comment lines about SSH keys for the units and the
// crontab line: always that timers and cron have no SSH agent, then a
// warning per cluster whose nodes rely on one (agent: true) or name no
// key (identity_files, or an ssh_host whose ssh_config entry may).
func sshComments(inv *inventorypkg.Inventory, cluster, runAs string) []string {
	lines := []string{fmt.Sprintf("# timers and cron have no SSH agent (no SSH_AUTH_SOCK): the nodes are reached with the inventory's ssh.identity_files, which %s must be able to read and which must have no passphrase", runAs)}
	for _, cl := range inv.Clusters {
		if cluster != "" && cl.Name != cluster {
			continue
		}
		var agentOnly, agentToo, nokey []string
		for _, n := range cl.Nodes {
			keys := len(n.SSH.IdentityFiles) > 0 || n.SSHHost != ""
			switch {
			case n.SSH.UseAgent && !keys:
				agentOnly = append(agentOnly, n.Name)
			case n.SSH.UseAgent:
				agentToo = append(agentToo, n.Name)
			case !keys:
				nokey = append(nokey, n.Name)
			}
		}
		if len(agentOnly) > 0 {
			lines = append(lines, fmt.Sprintf("# WARNING: cluster %s: ssh.agent is true and no ssh.identity_files are set (%s), but timers have no SSH_AUTH_SOCK: set ssh.identity_files", cl.Name, fewNodes(agentOnly)))
		}
		if len(agentToo) > 0 {
			lines = append(lines, fmt.Sprintf("# WARNING: cluster %s: ssh.agent is true (%s), but timers have no SSH_AUTH_SOCK: only the ssh.identity_files are offered", cl.Name, fewNodes(agentToo)))
		}
		if len(nokey) > 0 {
			lines = append(lines, fmt.Sprintf("# WARNING: cluster %s: no ssh.identity_files (%s): timers have no SSH_AUTH_SOCK, only %s's ~/.ssh/id_ed25519, id_ecdsa and id_rsa are tried: set ssh.identity_files", cl.Name, fewNodes(nokey), runAs))
		}
	}
	return lines
}

// fewNodes names up to four nodes.
func fewNodes(names []string) string {
	if len(names) > 4 {
		return fmt.Sprintf("%s and %d more", strings.Join(names[:4], ", "), len(names)-4)
	}
	return strings.Join(names, ", ")
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

// systemdCommand is a command line as ExecStart= takes it.
func systemdCommand(argv []string) string {
	var out []string
	for _, a := range argv {
		if a == notifyURLRef {
			out = append(out, "${"+notifyURLEnv+"}")
			continue
		}
		out = append(out, systemdQuote(a))
	}
	return strings.Join(out, " ")
}

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

// writeService prints the service unit.
func writeService(w io.Writer, s *schedule) {
	fmt.Fprintf(w, "# /etc/systemd/system/%s.service\n", s.name)
	for _, l := range s.ssh {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "[Unit]\nDescription=caretaker: %s (%s)\nWants=network-online.target\nAfter=network-online.target\n", s.what, s.inv)
	if s.notifyURL != "" {
		fmt.Fprintf(w, "OnFailure=%s-notify.service\n", s.name)
	}
	fmt.Fprintf(w, "\n[Service]\nType=oneshot\n")
	if s.runAs != "" {
		fmt.Fprintf(w, "User=%s\n", s.runAs)
	}
	if s.notifyURL != "" {
		fmt.Fprintf(w, "# the webhook URL (it may hold a token) is read from %s, not written here\nEnvironmentFile=%s\n", s.envFile, s.envFile)
	}
	fmt.Fprintf(w, "# output (JSON events) goes to the journal: journalctl -t %s\nSyslogIdentifier=%s\n", s.name, s.name)
	fmt.Fprintf(w, "ExecStart=%s\n", systemdCommand(s.argv))
	if s.prune != nil {
		fmt.Fprintf(w, "# after a successful run: remove journals and backups older than %s (never the newest run of a playbook on a cluster); its failure does not fail the unit\n", s.prune[3])
		fmt.Fprintf(w, "ExecStartPost=-%s\n", systemdCommand(s.prune))
	}
	fmt.Fprintf(w, "# exit codes: 0 ok, 1 failed, 2 bad input, 3 locked by another run, 4 drift or expiring certificates, 5 outside the window\n\n")
}

// writeNotifyUnit prints the OnFailure= unit that reports a failed run.
func writeNotifyUnit(w io.Writer, s *schedule) {
	fmt.Fprintf(w, "# /etc/systemd/system/%s-notify.service\n", s.name)
	fmt.Fprintf(w, "# started by systemd when %s.service fails (OnFailure=): posts unit_failed to the webhook\n", s.name)
	fmt.Fprintf(w, "[Unit]\nDescription=caretaker: report a failure of %s.service\n\n", s.name)
	fmt.Fprintf(w, "[Service]\nType=oneshot\n")
	if s.runAs != "" {
		fmt.Fprintf(w, "User=%s\n", s.runAs)
	}
	fmt.Fprintf(w, "EnvironmentFile=%s\nSyslogIdentifier=%s-notify\n", s.envFile, s.name)
	fmt.Fprintf(w, "ExecStart=%s\n\n", systemdCommand([]string{s.bin, "schedule", "notify", "--unit", s.name + ".service"}))
}

// writeTimer prints the timer unit.
func writeTimer(w io.Writer, s *schedule, on string) {
	fmt.Fprintf(w, "# /etc/systemd/system/%s.timer\n", s.name)
	fmt.Fprintf(w, "[Unit]\nDescription=Run %s.service %s\n\n", s.name, on)
	fmt.Fprintf(w, "[Timer]\nOnCalendar=%s\nPersistent=true\n\n", s.cal)
	fmt.Fprintf(w, "[Install]\nWantedBy=timers.target\n\n")
	fmt.Fprintf(w, "# enable: systemctl daemon-reload && systemctl enable --now %s.timer\n\n", s.name)
}

// writeEnvFile prints the env file that keeps the webhook URL out of the
// units and the crontab.
func writeEnvFile(w io.Writer, s *schedule) {
	owner := orDefault(s.runAs, "root")
	fmt.Fprintf(w, "# %s: holds the webhook URL, which may carry a token; create it first, readable by %s only:\n", s.envFile, owner)
	fmt.Fprintf(w, "#   install -D -m 0600 -o %s -g %s /dev/null %s\n", owner, orDefault(s.group, owner), s.envFile)
	fmt.Fprintf(w, "%s='%s'\n\n", notifyURLEnv, s.notifyURL)
}

// writeCron prints the crontab lines (the run and its prune), how to
// create the log directory, and the logrotate snippet for the log.
func writeCron(w io.Writer, s *schedule) {
	runAs := orDefault(s.runAs, "the user whose SSH keys the inventory uses")
	log := transport.ShellQuote(s.logFile)
	fmt.Fprintf(w, "# crontab lines (crontab -e, as %s), instead of the timer; cron has no journal: they append to %s\n", runAs, s.logFile)
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
		fmt.Fprintf(w, "30 4 * * * %s >>%s 2>&1\n", cronCommand(s.prune), log)
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

// exitMeanings are what caretaker's exit codes mean, for unit_failed.
var exitMeanings = map[string]string{
	"1": "a step failed, the run was aborted, or a node could not be reached",
	"2": "bad input: playbook, inventory, parameter or flag",
	"3": "locked by another run",
	"4": "CA drift or expired/expiring certificates",
	"5": "outside the maintenance window",
}

// unitFailure is the body `schedule notify` posts: the fields of every
// notification, plus the unit and how it ended.
type unitFailure struct {
	notify.Notification
	Unit          string `json:"unit"`
	ExitStatus    string `json:"exit_status,omitempty"`
	ServiceResult string `json:"service_result,omitempty"`
	InvocationID  string `json:"invocation_id,omitempty"`
}

func newScheduleNotifyCommand() *cobra.Command {
	var unit, rawURL, exitStatus, logFile string
	c := &cobra.Command{
		Use:   "notify --unit NAME",
		Short: "Post a unit_failed notification to $" + notifyURLEnv + " (the OnFailure= unit and crontab line of schedule print run it)",
		Long: `notify posts {"event": "unit_failed", "status": "failed", "unit": ..., "exit_status": ...,
"text": ...} (JSON, like the notifications of --notify-url) to the URL in $` + notifyURLEnv + `
(or --url; the units read it from their env file, so that it is in no
unit file and no process list). systemd (251 or later) tells an OnFailure=
unit how the failed unit ended ($MONITOR_EXIT_STATUS, $MONITOR_SERVICE_RESULT,
$MONITOR_INVOCATION_ID); a crontab line passes --exit-status $?.
Each POST has a 10 s timeout and one retry; it exits 1 when the POST fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if unit == "" {
				return usageError{fmt.Errorf("schedule notify: give --unit NAME (the unit or job that failed)")}
			}
			rawURL = orDefault(rawURL, os.Getenv(notifyURLEnv))
			if rawURL == "" {
				return usageError{fmt.Errorf("schedule notify: no URL: set $%s (the env file of the schedule) or give --url", notifyURLEnv)}
			}
			if _, err := notify.New(rawURL); err != nil {
				return usageError{err}
			}
			msg := unitFailureMessage(unit, orDefault(exitStatus, os.Getenv("MONITOR_EXIT_STATUS")), logFile, time.Now())
			body, err := json.Marshal(msg)
			if err != nil {
				return fmt.Errorf("schedule notify: %w", err)
			}
			if err := postJSON(cmd.Context(), rawURL, body); err != nil {
				return fmt.Errorf("schedule notify: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&unit, "unit", "", "the unit (or crontab job) that failed (required)")
	c.Flags().StringVar(&rawURL, "url", "", "webhook URL (default $"+notifyURLEnv+"; a URL on the command line shows in process lists)")
	c.Flags().StringVar(&exitStatus, "exit-status", "", "how it ended (default $MONITOR_EXIT_STATUS, which systemd sets)")
	c.Flags().StringVar(&logFile, "log", "", "where its output is (default: the journal of the unit)")
	return c
}

// unitFailureMessage is the unit_failed notification of unit.
func unitFailureMessage(unit, exitStatus, logFile string, now time.Time) unitFailure {
	_, host := runner.Operator()
	m := unitFailure{
		Notification:  notify.Notification{Event: "unit_failed", Host: host, Status: "failed", At: now.UTC()},
		Unit:          unit,
		ExitStatus:    exitStatus,
		ServiceResult: os.Getenv("MONITOR_SERVICE_RESULT"),
		InvocationID:  os.Getenv("MONITOR_INVOCATION_ID"),
	}
	how := "failed"
	switch {
	case exitMeanings[exitStatus] != "":
		how = fmt.Sprintf("failed with exit status %s (%s)", exitStatus, exitMeanings[exitStatus])
	case exitStatus != "":
		how = "failed: exit status " + exitStatus
	case m.ServiceResult != "":
		how = "failed: " + m.ServiceResult
	}
	m.Error = how
	where := "journalctl -u " + unit
	if m.InvocationID != "" {
		where = "journalctl _SYSTEMD_INVOCATION_ID=" + m.InvocationID
	}
	if logFile != "" {
		where = logFile
	}
	m.Text = fmt.Sprintf("caretaker: %s on %s %s; see %s", unit, host, how, where)
	return m
}

// postJSON posts body to rawURL: 10 s timeout, one retry after a second.
// Its errors name the URL's scheme and host only: the path or query may
// hold a token.
func postJSON(ctx context.Context, rawURL string, body []byte) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("parse the URL: %w", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("post to %s://%s: %w", u.Scheme, u.Host, stripURLError(err))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			last = stripURLError(err)
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		last = fmt.Errorf("HTTP %s", resp.Status)
	}
	return fmt.Errorf("post to %s://%s: %w", u.Scheme, u.Host, last)
}

// stripURLError drops the URL from an *url.Error.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
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
