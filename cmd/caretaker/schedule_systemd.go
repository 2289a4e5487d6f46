// The systemd units of schedule print.

package main

import (
	"fmt"
	"io"
	"strings"
)

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
		fmt.Fprintf(w, "# journals and backups older than %s are pruned by %s-prune.timer\n", s.prune[3], s.name)
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
	if s.prune != nil {
		fmt.Fprintf(w, "# enable (with the prune timer below): systemctl daemon-reload && systemctl enable --now %s.timer %s-prune.timer\n\n", s.name, s.name)
		return
	}
	fmt.Fprintf(w, "# enable: systemctl daemon-reload && systemctl enable --now %s.timer\n\n", s.name)
}

// writePruneUnits prints the service + timer pair that runs caretaker
// prune on the schedule's state directory daily at 04:30, as the crontab
// prune line does. A pair of its own rather than an ExecStartPost= of the
// run's service: journals and backups are pruned on time even when runs
// keep failing, and a failed prune is its own failed unit, not the run's.
// It has no OnFailure=: the notify unit reports the run's service.
func writePruneUnits(w io.Writer, s *schedule) {
	keep := s.prune[3]
	fmt.Fprintf(w, "# /etc/systemd/system/%s-prune.service\n", s.name)
	fmt.Fprintf(w, "# removes run journals and controller-side backups older than %s from %s; never a running run, nor the newest run of a playbook on a cluster\n", keep, s.stateDir)
	fmt.Fprintf(w, "[Unit]\nDescription=caretaker: prune journals and backups older than %s (%s)\n\n", keep, s.stateDir)
	fmt.Fprintf(w, "[Service]\nType=oneshot\n")
	if s.runAs != "" {
		fmt.Fprintf(w, "User=%s\n", s.runAs)
	}
	fmt.Fprintf(w, "SyslogIdentifier=%s-prune\n", s.name)
	fmt.Fprintf(w, "ExecStart=%s\n\n", systemdCommand(s.prune))
	fmt.Fprintf(w, "# /etc/systemd/system/%s-prune.timer\n", s.name)
	fmt.Fprintf(w, "[Unit]\nDescription=Run %s-prune.service daily at 04:30\n\n", s.name)
	fmt.Fprintf(w, "[Timer]\nOnCalendar=%s\nPersistent=true\n\n", pruneCalendar)
	fmt.Fprintf(w, "[Install]\nWantedBy=timers.target\n\n")
}

// writeEnvFile prints the env file that keeps the webhook URL out of the
// units and the crontab.
func writeEnvFile(w io.Writer, s *schedule) {
	owner := orDefault(s.runAs, "root")
	fmt.Fprintf(w, "# %s: holds the webhook URL, which may carry a token; create it first, readable by %s only:\n", s.envFile, owner)
	fmt.Fprintf(w, "#   install -D -m 0600 -o %s -g %s /dev/null %s\n", owner, orDefault(s.group, owner), s.envFile)
	fmt.Fprintf(w, "%s='%s'\n\n", notifyURLEnv, s.notifyURL)
}
