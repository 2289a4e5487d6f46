package lab

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// invocation is one node command run through the shim.
type invocation struct {
	n      *node
	ctx    context.Context
	args   []string
	cwd    string
	env    map[string]string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func (inv *invocation) errf(format string, args ...any) {
	fmt.Fprintf(inv.stderr, format+"\n", args...)
}

// unitFor resolves a unit argument ("k3s", "k3s.service") against the
// node's K3s unit; ok is false for any other unit.
func (inv *invocation) unitFor(arg string) (name string, ok bool) {
	name = arg
	if !strings.Contains(name, ".") {
		name += ".service"
	}
	return name, name == inv.n.unitName()
}

// systemctl simulates the systemctl verbs caretaker uses on the node's K3s
// unit: start, stop, restart (blocking until the Type=notify service is up
// or its start failed, as long as it takes: TimeoutStartSec=0; with
// --no-block they return at once), is-active, is-failed, status, show,
// daemon-reload, reset-failed, is-enabled/enable/disable and cat. The
// unit has Restart=always: a K3s that exits is started again after the
// restart delay (activating/auto-restart meanwhile).
func (inv *invocation) systemctl() int {
	var verb string
	var units, props []string
	quiet, value, noBlock := false, false, false
	for i := 0; i < len(inv.args); i++ {
		a := inv.args[i]
		switch {
		case a == "-q" || a == "--quiet":
			quiet = true
		case a == "--value":
			value = true
		case a == "-p" || a == "--property":
			if i+1 < len(inv.args) {
				i++
				props = append(props, strings.Split(inv.args[i], ",")...)
			}
		case strings.HasPrefix(a, "--property="):
			props = append(props, strings.Split(strings.TrimPrefix(a, "--property="), ",")...)
		case strings.HasPrefix(a, "-p") && len(a) > 2:
			props = append(props, strings.Split(a[2:], ",")...)
		case a == "-n" || a == "--lines":
			i++
		case a == "--no-block":
			noBlock = true
		case strings.HasPrefix(a, "-"):
			// --no-pager, -l, --full, --plain, --no-legend, --system
		case verb == "":
			verb = a
		default:
			units = append(units, a)
		}
	}
	n := inv.n
	switch verb {
	case "":
		inv.errf("systemctl: lab nodes support: start, stop, restart, try-restart, is-active, is-failed, status, show, daemon-reload, reset-failed, is-enabled, enable, disable, cat")
		return 1
	case "daemon-reload", "daemon-reexec":
		if err := n.daemonReload(); err != nil {
			inv.errf("Failed to reload daemon: %v", err)
			return 1
		}
		return 0
	}
	if len(units) == 0 {
		inv.errf("Too few arguments.")
		return 1
	}
	code := 0
	for _, u := range units {
		if c := inv.systemctlUnit(verb, u, unitFlags{quiet: quiet, value: value, noBlock: noBlock, props: props}); c != 0 && code == 0 {
			code = c
		}
	}
	return code
}

// unitFlags are the options of one systemctl call.
type unitFlags struct {
	quiet, value, noBlock bool
	props                 []string
}

func (inv *invocation) systemctlUnit(verb, arg string, f unitFlags) int {
	n := inv.n
	name, ok := inv.unitFor(arg)
	warnChanged := func() {
		if n.unitChangedOnDisk() {
			inv.errf("Warning: The unit file, source configuration file or drop-ins of %s changed on disk. Run 'systemctl daemon-reload' to reload units.", name)
		}
	}
	switch verb {
	case "start", "restart", "try-restart", "reload-or-restart", "stop":
		if !ok {
			inv.errf("Failed to %s %s: Unit %s not found.", verb, name, name)
			return 5
		}
		warnChanged()
		return inv.unitJob(verb, name, f.noBlock)
	case "is-active":
		st := stateInactive
		if ok {
			st = n.getState()
		}
		if !f.quiet {
			fmt.Fprintln(inv.stdout, st)
		}
		if st == stateActive {
			return 0
		}
		return 3
	case "is-failed":
		st := stateInactive
		if ok {
			st = n.getState()
		}
		if !f.quiet {
			fmt.Fprintln(inv.stdout, st)
		}
		if st == stateFailed {
			return 0
		}
		return 1
	case "reset-failed":
		return 0
	case "is-enabled":
		if !ok {
			inv.errf("Failed to get unit file state for %s: No such file or directory", name)
			return 1
		}
		if !f.quiet {
			fmt.Fprintln(inv.stdout, "enabled")
		}
		return 0
	case "enable", "disable":
		if !ok {
			inv.errf("Failed to %s unit: Unit file %s does not exist.", verb, name)
			return 1
		}
		return 0
	case "cat":
		if !ok {
			inv.errf("No files found for %s.", name)
			return 1
		}
		unit, drops, err := n.readUnitFromDisk()
		if err != nil {
			inv.errf("No files found for %s.", name)
			return 1
		}
		fmt.Fprintf(inv.stdout, "# %s\n%s", n.unitFile, unit)
		for _, d := range drops {
			fmt.Fprintf(inv.stdout, "\n# %s\n%s", d.Path, d.Data)
		}
		return 0
	case "status":
		if !ok {
			inv.errf("Unit %s could not be found.", name)
			return 4
		}
		warnChanged()
		return inv.status(name)
	case "show":
		return inv.show(name, ok, f.value, f.props)
	}
	inv.errf("Unknown command verb '%s'.", verb)
	return 1
}

// unitJob runs a start, stop or restart job; blocking ones wait for the
// start's outcome (or for the client to go away).
func (inv *invocation) unitJob(verb, name string, noBlock bool) int {
	n := inv.n
	restart := verb != "start"
	switch verb {
	case "stop":
		if noBlock {
			go n.stopUnit()
		} else {
			n.stopUnit()
		}
		return 0
	case "try-restart":
		if st := n.getState(); st != stateActive && st != stateActivating {
			return 0
		}
	}
	if noBlock {
		if restart {
			n.restartNoBlock()
		} else {
			n.startNoBlock()
		}
		return 0
	}
	if err := waitStart(inv.ctx, n.startJob(restart)); err != nil {
		for _, line := range describeStartError(name, err) {
			inv.errf("%s", line)
		}
		return 1
	}
	return 0
}

func (inv *invocation) status(name string) int {
	n := inv.n
	n.mu.Lock()
	u := n.u
	n.mu.Unlock()
	since := ""
	if !u.stateChange.IsZero() {
		since = fmt.Sprintf(" since %s; %s ago", u.stateChange.Format(systemdTime), time.Since(u.stateChange).Round(time.Second))
	}
	active := fmt.Sprintf("%s (%s)%s", u.active, u.sub, since)
	switch {
	case u.active == stateActive:
		active = "active (running)" + since
	case u.sub == subAutoRestart:
		active = "activating (auto-restart) (Result: " + u.result + ")" + since
	case u.active == stateInactive:
		active = "inactive (dead)" + since
	}
	fmt.Fprintf(inv.stdout, "● %s - %s\n", name, unitDescription)
	fmt.Fprintf(inv.stdout, "     Loaded: loaded (%s; enabled; preset: enabled)\n", n.unitFile)
	fmt.Fprintf(inv.stdout, "     Active: %s\n", active)
	fmt.Fprintf(inv.stdout, "       Docs: https://k3s.io\n")
	if u.mainPID != 0 {
		proc := "k3s-server"
		if !n.isServer() {
			proc = "k3s-agent"
		}
		fmt.Fprintf(inv.stdout, "   Main PID: %d (%s)\n", u.mainPID, proc)
	}
	es := n.journal.snapshot(name)
	if len(es) > 10 {
		es = es[len(es)-10:]
	}
	if len(es) > 0 {
		fmt.Fprintln(inv.stdout)
		for _, e := range es {
			fmt.Fprintln(inv.stdout, n.journal.formatShort(e))
		}
	}
	if u.active == stateActive {
		return 0
	}
	return 3
}

// systemdTime is how systemd prints timestamps (format_timestamp).
const systemdTime = "Mon 2006-01-02 15:04:05 MST"

func fmtTimestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(systemdTime)
}

func fmtMono(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }

// showProperties lists the unit's properties in the order systemd prints
// them: the org.freedesktop.systemd1.Service interface first, then Unit.
func (n *node) showProperties(name string) [][2]string {
	n.mu.Lock()
	u := n.u
	n.mu.Unlock()
	restartUSec := strings.ReplaceAll(n.lab.opts.RestartDelay.String(), "0s", "s")
	if n.lab.opts.RestartDelay%time.Second == 0 {
		restartUSec = strconv.Itoa(int(n.lab.opts.RestartDelay/time.Second)) + "s"
	}
	return [][2]string{
		{"Type", "notify"}, {"ExitType", "main"}, {"Restart", "always"}, {"NotifyAccess", "main"},
		{"RestartUSec", restartUSec}, {"TimeoutStartUSec", "infinity"}, {"TimeoutStopUSec", "1min 30s"},
		{"MainPID", strconv.Itoa(u.mainPID)}, {"ControlPID", "0"}, {"StatusErrno", "0"},
		{"Result", u.result}, {"ReloadResult", "success"}, {"CleanResult", "success"},
		{"UID", "[not set]"}, {"GID", "[not set]"}, {"NRestarts", strconv.Itoa(u.nRestarts)}, {"OOMPolicy", "stop"},
		{"ExecMainStartTimestamp", fmtTimestamp(u.execMainStart)}, {"ExecMainStartTimestampMonotonic", fmtMono(u.execMainStartMono)},
		{"ExecMainPID", strconv.Itoa(u.mainPID)},
		{"Id", name}, {"Names", name}, {"Description", unitDescription}, {"LoadState", "loaded"},
		{"ActiveState", u.active}, {"FreezerState", "running"}, {"SubState", u.sub},
		{"FragmentPath", n.unitFile}, {"UnitFileState", "enabled"}, {"UnitFilePreset", "enabled"},
		{"StateChangeTimestamp", fmtTimestamp(u.stateChange)}, {"StateChangeTimestampMonotonic", fmtMono(u.stateChangeMono)},
		{"ActiveEnterTimestamp", fmtTimestamp(u.activeEnter)}, {"ActiveEnterTimestampMonotonic", fmtMono(u.activeEnterMono)},
		{"ActiveExitTimestamp", fmtTimestamp(u.activeExit)}, {"ActiveExitTimestampMonotonic", fmtMono(u.activeExitMono)},
		{"CanStart", "yes"}, {"CanStop", "yes"}, {"CanRestart", "yes"},
		{"InvocationID", u.invocationID},
	}
}

// show is `systemctl show`: Key=Value lines in systemd's own order, not
// the requested one; properties named with -p are printed even when
// empty, others only when set (systemctl without --all).
func (inv *invocation) show(name string, ok, value bool, props []string) int {
	all := [][2]string{{"Id", name}, {"Names", name}, {"LoadState", "not-found"}, {"ActiveState", stateInactive}, {"FreezerState", "running"}, {"SubState", subDead}, {"MainPID", "0"}}
	if ok {
		all = inv.n.showProperties(name)
	}
	for _, kv := range all {
		if len(props) > 0 && !contains(props, kv[0]) {
			continue
		}
		if len(props) == 0 && kv[1] == "" {
			continue
		}
		if value {
			fmt.Fprintln(inv.stdout, kv[1])
		} else {
			fmt.Fprintf(inv.stdout, "%s=%s\n", kv[0], kv[1])
		}
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
