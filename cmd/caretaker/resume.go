package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/runner"
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
loads the same playbook with the same parameters (-p corrects one: any
before the run changed something, afterwards only those the playbook
declares resumable, such as durations), limit and inventory, skips
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
			corrections, err := f.parseParams()
			if err != nil {
				return err
			}
			params := map[string]string{}
			for k, v := range m.Params {
				params[k] = v
			}
			for k, v := range corrections {
				params[k] = v
			}
			f.params = sortedPairs(params)
			plan, err := f.loadPlan(m.PlaybookRef, params)
			if err != nil {
				return fmt.Errorf("load playbook %s of run %s again: %w", m.PlaybookRef, m.RunID, err)
			}
			if err := rec.CheckPlan(plan); err != nil {
				return err
			}
			if changed := changedSources(m.Sources, plan.Sources); len(changed) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "caretaker: the playbook changed since run %s started: %s; this attempt runs the changed source (same steps)\n", m.RunID, strings.Join(changed, ", "))
			}
			skip := rec.ResumeDone(plan)
			done := 0
			for _, r := range rec.Results {
				if skip(r.Step, r.Node) {
					done++
				}
			}
			changed, err := paramCorrections(plan, m.ParamValues, corrections, done, m.RunID)
			if err != nil {
				return err
			}
			if len(changed) > 0 {
				j.CorrectParams(params)
				fmt.Fprintf(cmd.ErrOrStderr(), "caretaker: parameters corrected for this attempt: %s\n", strings.Join(changed, ", "))
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
	c.Flags().StringArrayVarP(&f.params, "param", "p", nil, "correct a parameter as key=value (repeatable): any before the run changed something, afterwards only those the playbook declares resumable (durations)")
	return c
}

// sortedPairs renders params as key=value in key order.
func sortedPairs(params map[string]string) []string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+params[k])
	}
	return out
}

// paramCorrections lists the parameters resume -p changes ("name old →
// new") and refuses a change that could make finished work wrong: once
// done > 0 changes of the run are finished, only parameters declared
// resumable may change.
func paramCorrections(plan *runner.Plan, before map[string]string, corrections map[string]string, done int, runID string) ([]string, error) {
	now := plan.ParamValues()
	var changed, refused []string
	for _, p := range plan.Params {
		if _, given := corrections[p.Name]; !given || before[p.Name] == now[p.Name] {
			continue
		}
		changed = append(changed, fmt.Sprintf("%s %s → %s", p.Name, before[p.Name], now[p.Name]))
		if done > 0 && !p.Resumable {
			refused = append(refused, p.Name)
		}
	}
	sort.Strings(changed)
	if len(refused) > 0 {
		return nil, usageError{fmt.Errorf("resume -p %s: refused: %d change(s) of run %s are already done with the old value, and the playbook does not declare %s resumable (param(..., resumable = True)); finish with the old value, or `caretaker undo %s` and start a new run",
			strings.Join(refused, ", "), done, runID, strings.Join(refused, ", "), runID)}
	}
	return changed, nil
}

// changedSources lists the playbook files whose content differs between
// the run's start and now ("rotate-ca.star changed", "x.star is new").
// A run journaled before sources were recorded has none to compare.
func changedSources(then, now map[string]string) []string {
	if len(then) == 0 {
		return nil
	}
	var out []string
	for f, sum := range now {
		old, ok := then[f]
		switch {
		case !ok:
			out = append(out, f+" is newly loaded")
		case old != sum:
			out = append(out, f+" changed")
		}
	}
	for f := range then {
		if _, ok := now[f]; !ok {
			out = append(out, f+" is no longer loaded")
		}
	}
	sort.Strings(out)
	return out
}
