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
// or failed), is-active, is-failed, status, show, daemon-reload,
// reset-failed, is-enabled/enable/disable and cat. K3s units restart on
// failure (Restart=always); the lab leaves a failed unit failed so that
// the failure can be seen.
func (inv *invocation) systemctl() int {
	var verb string
	var units, props []string
	quiet, value := false, false
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
		case strings.HasPrefix(a, "-"):
			// --no-pager, --no-block, -l, --full, --plain, --no-legend, --system
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
		if c := inv.systemctlUnit(verb, u, quiet, value, props); c != 0 && code == 0 {
			code = c
		}
	}
	return code
}

func (inv *invocation) systemctlUnit(verb, arg string, quiet, value bool, props []string) int {
	n := inv.n
	name, ok := inv.unitFor(arg)
	warnChanged := func() {
		if n.unitChangedOnDisk() {
			inv.errf("Warning: The unit file, source configuration file or drop-ins of %s changed on disk. Run 'systemctl daemon-reload' to reload units.", name)
		}
	}
	jobFailed := func() int {
		inv.errf("Job for %s failed because the control process exited with error code.", name)
		inv.errf("See \"systemctl status %s\" and \"journalctl -xeu %s\" for details.", name, name)
		return 1
	}
	switch verb {
	case "start", "restart", "try-restart", "reload-or-restart", "stop":
		if !ok {
			inv.errf("Failed to %s %s: Unit %s not found.", verb, name, name)
			return 5
		}
		warnChanged()
		n.opMu.Lock()
		defer n.opMu.Unlock()
		switch verb {
		case "stop":
			n.stop()
			return 0
		case "try-restart":
			if n.getState() != stateActive {
				return 0
			}
			n.stop()
		case "restart", "reload-or-restart":
			n.stop()
		}
		if err := n.start(inv.ctx); err != nil {
			return jobFailed()
		}
		return 0
	case "is-active":
		st := stateInactive
		if ok {
			st = n.getState()
		}
		if !quiet {
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
		if !quiet {
			fmt.Fprintln(inv.stdout, st)
		}
		if st == stateFailed {
			return 0
		}
		return 1
	case "reset-failed":
		if ok && n.getState() == stateFailed {
			n.setState(stateInactive)
		}
		return 0
	case "is-enabled":
		if !ok {
			inv.errf("Failed to get unit file state for %s: No such file or directory", name)
			return 1
		}
		if !quiet {
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
		return inv.show(name, ok, value, props)
	}
	inv.errf("Unknown command verb '%s'.", verb)
	return 1
}

func (inv *invocation) status(name string) int {
	n := inv.n
	n.mu.Lock()
	st, pid, since := n.state, n.pid, n.activeSince
	n.mu.Unlock()
	active := st
	switch st {
	case stateActive:
		active = fmt.Sprintf("active (running) since %s; %s ago", since.Format("Mon 2006-01-02 15:04:05 MST"), time.Since(since).Round(time.Second))
	case stateFailed:
		active = "failed (Result: exit-code)"
	case stateInactive:
		active = "inactive (dead)"
	}
	dot := "●"
	fmt.Fprintf(inv.stdout, "%s %s - Lightweight Kubernetes\n", dot, name)
	fmt.Fprintf(inv.stdout, "     Loaded: loaded (%s; enabled; preset: enabled)\n", n.unitFile)
	fmt.Fprintf(inv.stdout, "     Active: %s\n", active)
	fmt.Fprintf(inv.stdout, "       Docs: https://k3s.io\n")
	if st == stateActive {
		proc := "k3s-server"
		if !n.isServer() {
			proc = "k3s-agent"
		}
		fmt.Fprintf(inv.stdout, "   Main PID: %d (%s)\n", pid, proc)
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
	if st == stateActive {
		return 0
	}
	return 3
}

func (inv *invocation) show(name string, ok, value bool, props []string) int {
	n := inv.n
	n.mu.Lock()
	st, pid, since := n.state, n.pid, n.activeSince
	n.mu.Unlock()
	sub := map[string]string{stateActive: "running", stateActivating: "start", stateDeactivating: "stop", stateFailed: "failed", stateInactive: "dead"}[st]
	all := [][2]string{
		{"Id", name}, {"LoadState", "loaded"}, {"ActiveState", st}, {"SubState", sub},
		{"MainPID", "0"}, {"FragmentPath", n.unitFile}, {"UnitFileState", "enabled"},
		{"Type", "notify"}, {"Result", "success"}, {"ActiveEnterTimestamp", ""},
	}
	if !ok {
		all = [][2]string{{"Id", name}, {"LoadState", "not-found"}, {"ActiveState", stateInactive}, {"SubState", "dead"}, {"MainPID", "0"}}
	} else {
		if st == stateActive {
			all[4][1] = strconv.Itoa(pid)
			all[9][1] = since.Format("Mon 2006-01-02 15:04:05 MST")
		}
		if st == stateFailed {
			all[8][1] = "exit-code"
		}
	}
	for _, kv := range all {
		if len(props) > 0 && !contains(props, kv[0]) {
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
