// What the scheduled units need from the machine they run on: an installed
// binary and SSH keys usable without an agent.

package main

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
)

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
