package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	journalpkg "github.com/caretaker/caretaker/runner/journal"
	"github.com/caretaker/caretaker/runner/session"
)

// addContinueFlags registers the flags resume and undo share with run
// (everything but what the journal fixes: playbook, parameters, limit).
func (f *runFlags) addContinueFlags(c *cobra.Command) {
	c.Flags().StringVarP(&f.inventory, "inventory", "i", "", "inventory file (default: the one the run used)")
	c.Flags().StringVarP(&f.output, "output", "o", "auto", "output: auto (TUI on a terminal, else plain), tui, plain or json")
	c.Flags().BoolVarP(&f.yes, "yes", "y", false, "answer yes to every confirmation and skip the plan screen (unattended runs)")
	c.Flags().StringVar(&f.failure, "on-failure", "stop", "what a failed step does: stop or continue")
	c.Flags().IntVar(&f.maxFailed, "max-failed", 0, "continue until more than this many nodes failed, then stop")
	c.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory holding the journal (default $XDG_STATE_HOME/caretaker or ~/.local/state/caretaker)")
	c.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "plain output: show the Starlark backtrace of failures")
	f.addSessionFlags(c)
}

func newResumeCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "resume RUN",
		Short: "Continue a failed, aborted or killed run where it stopped",
		Long: `resume continues a journaled run (see ` + "`caretaker runs`" + `) that failed, was
aborted, was stopped by its closing maintenance window, or was killed. It
loads the same playbook with the same parameters, limit and inventory, skips
every step that changes nodes and ended ok or changed on a node, and runs
the rest: the step a killed run was in is retried from its start (the
built-in steps are idempotent), read-only steps run again (later steps use
what they find), and the values earlier steps shared are given back. The run
keeps its ID; the journal gets a new attempt.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stateDir := f.resolvedStateDir()
			j, rec, err := journalpkg.Resume(stateDir, args[0])
			if err != nil {
				return err
			}
			defer j.Close() // idempotent: the session closes it first

			if err := rec.Resumable(); err != nil {
				return err
			}
			m := rec.Meta
			if f.inventory == "" {
				f.inventory = m.Inventory
			}
			f.cluster, f.limit, f.libDirs = m.Cluster, m.Limit, m.LibDirs
			f.params = nil
			keys := make([]string, 0, len(m.Params))
			for k := range m.Params {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				f.params = append(f.params, k+"="+m.Params[k])
			}
			plan, err := f.loadPlan(m.PlaybookRef, m.Params)
			if err != nil {
				return fmt.Errorf("load playbook %s of run %s again: %w", m.PlaybookRef, m.RunID, err)
			}
			if err := rec.CheckPlan(plan); err != nil {
				return err
			}
			skip := rec.ResumeDone(plan)
			done := 0
			for _, r := range rec.Results {
				if skip(r.Step, r.Node) {
					done++
				}
			}
			shared, lost := rec.SharedValues()
			msg := fmt.Sprintf("caretaker: resuming run %s (attempt %d) of %s on cluster %s: %d change(s) done earlier are skipped, read-only steps run again", m.RunID, j.Attempt(), m.Playbook, m.Cluster, done)
			if len(lost) > 0 {
				msg += "; shared values that could not be kept: " + strings.Join(lost, "; ")
			}
			if len(rec.Started) > 0 {
				var in []string
				for _, s := range rec.Started {
					in = append(in, fmt.Sprintf("%q on %s", s.StepName, s.Node))
				}
				msg += "; interrupted in step " + strings.Join(in, ", ") + ", retried from its start"
			}
			fmt.Fprintln(cmd.ErrOrStderr(), msg)
			f.cont = &session.Continuation{Journal: j, Done: skip, Shared: shared}
			return executePlan(cmd.Context(), cmd.OutOrStdout(), plan, &f)
		},
	}
	f.addContinueFlags(c)
	return c
}
