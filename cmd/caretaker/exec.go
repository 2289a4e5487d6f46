package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func init() {
	extraCommands = append(extraCommands, newExecCommand)
}

// newExecCommand is `caretaker exec`: an ad-hoc command on nodes, run as
// the shipped playbook "exec" so that it gets the lock, events, journal,
// resume and check mode of every run.
func newExecCommand() *cobra.Command {
	var f runFlags
	var changes bool
	var serial int
	var timeout string
	c := &cobra.Command{
		Use:   "exec -i INVENTORY [--limit SEL] [--serial N] [--changes] -- CMD...",
		Short: "Run one shell command on nodes, with the lock, events and journal of a run",
		Long: `Run one shell command (sh -c) on the nodes --limit selects (default: all),
like ansible -m shell, for the one-off fix. It runs as the shipped playbook
"exec" (caretaker playbooks show exec): same output (TUI, plain, JSON),
journal, resume and exit codes as caretaker run.

The command is read-only unless --changes: a read-only command also runs in
--check and takes no cluster lock; with --changes it is only reported in
--check, asks before it starts on a terminal (--yes answers), takes the
cluster lock and marks the nodes changed. A non-zero exit fails the node.

  caretaker exec -i inv.yaml -- k3s --version
  caretaker exec -i inv.yaml --limit server-1 --changes -- systemctl start k3s
  caretaker exec -i inv.yaml --limit agents --serial 1 --changes -- systemctl restart k3s-agent`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return usageError{fmt.Errorf("exec: put the command after --, e.g. caretaker exec -i INVENTORY -- %s", strings.Join(args, " "))}
			}
			line := strings.TrimSpace(strings.Join(args, " "))
			if line == "" {
				return usageError{fmt.Errorf("exec: the command after -- is empty")}
			}
			if serial < 0 {
				return usageError{fmt.Errorf("--serial %d: give a number of nodes ≥ 0 (0: all at once)", serial)}
			}
			if d, err := time.ParseDuration(timeout); err != nil || d < time.Second {
				return usageError{fmt.Errorf("--timeout %q: give a duration of at least 1s, e.g. 30s or 5m", timeout)}
			}
			for _, p := range f.params {
				return usageError{fmt.Errorf("exec: -p %s: exec takes no parameters; the command goes after --", p)}
			}
			f.params = []string{"cmd=" + line, "changes=" + strconv.FormatBool(changes), "serial=" + strconv.Itoa(serial), "timeout=" + timeout}
			plan, err := f.planFromArgs("exec")
			if err != nil {
				return err
			}
			return executePlan(cmd.Context(), cmd.OutOrStdout(), plan, &f)
		},
	}
	f.addRunFlags(c)
	c.Flags().BoolVar(&changes, "changes", false, "the command changes the nodes (reported only in --check; takes the cluster lock)")
	c.Flags().IntVar(&serial, "serial", 0, "nodes at a time (0: all at once)")
	c.Flags().StringVar(&timeout, "timeout", "10m", "how long the command may take on one node")
	_ = c.Flags().MarkHidden("param")
	return c
}
