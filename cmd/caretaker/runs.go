package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/journal"
)

func init() {
	extraCommands = append(extraCommands, newRunsCommand, newResumeCommand, newUndoCommand)
}

func newRunsCommand() *cobra.Command {
	var f runFlags
	var output, cluster string
	c := &cobra.Command{
		Use:   "runs [RUN]",
		Short: "List journaled runs (ID, playbook, cluster, start, state), or show one run's steps and undo actions",
		Long: `runs lists the runs journaled in the state directory, newest first. A run's
state is ok, failed or aborted (its last attempt ended so), running (a
caretaker process is writing its journal now) or interrupted (the process
died: kill -9, crash, power loss). Failed, aborted and interrupted runs can be
continued with ` + "`caretaker resume RUN`" + ` or rolled back with ` + "`caretaker undo RUN`" + `.

With a RUN, it shows that run: its parameters, the last result of every step
on every node, the step a killed run was in, and its recorded undo actions.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return usageError{fmt.Errorf("--output %q: use table or json", output)}
			}
			stateDir := f.resolvedStateDir()
			out := cmd.OutOrStdout()
			if len(args) == 1 {
				rec, err := journal.ReadRun(stateDir, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(out, rec)
				}
				printRun(out, rec)
				return nil
			}
			recs, err := journal.ListRuns(stateDir)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "caretaker: %v\n", err)
			}
			if cluster != "" {
				var keep []*journal.RunRecord
				for _, r := range recs {
					if r.Meta.Cluster == cluster {
						keep = append(keep, r)
					}
				}
				recs = keep
			}
			if output == "json" {
				if recs == nil {
					recs = []*journal.RunRecord{}
				}
				return writeJSON(out, recs)
			}
			if len(recs) == 0 {
				fmt.Fprintf(out, "no runs journaled in %s\n", stateDir)
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tPLAYBOOK\tCLUSTER\tSTARTED\tSTATE\tATTEMPTS\tSTEPS DONE")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Meta.RunID, r.Meta.Playbook, r.Meta.Cluster, r.Meta.Started.Local().Format("2006-01-02 15:04:05"), stateLabel(r), r.Attempts, cellsDone(r))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory (default $XDG_STATE_HOME/caretaker or ~/.local/state/caretaker)")
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	c.Flags().StringVar(&cluster, "cluster", "", "only runs against this cluster")
	return c
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func stateLabel(r *journal.RunRecord) string {
	s := r.State
	if r.Meta.Check {
		s += " (check)"
	}
	if r.Meta.UndoOf != "" {
		s += " (undo of " + r.Meta.UndoOf + ")"
	}
	return s
}

// cellsDone counts step×node cells that ended ok, changed or skipped, of the plan's.
func cellsDone(r *journal.RunRecord) string {
	total := 0
	for _, s := range r.Meta.Steps {
		n := len(s.Nodes)
		if s.Once && n > 1 {
			n = 1
		}
		total += n
	}
	done := 0
	for _, res := range r.Results {
		if res.Status == runner.StatusOK || res.Status == runner.StatusChanged || res.Status == runner.StatusSkipped {
			done++
		}
	}
	return fmt.Sprintf("%d/%d", done, total)
}

func printRun(w io.Writer, r *journal.RunRecord) {
	printRunHeader(w, r)
	m := r.Meta
	fmt.Fprintf(w, "  journal %s\n", r.Path)
	fmt.Fprintln(w, "steps:")
	printRunSteps(w, r)
	if len(r.Undos) > 0 {
		fmt.Fprintln(w, "undo actions (replayed latest first by `caretaker undo`):")
		for _, u := range r.Undos {
			fmt.Fprintf(w, "  #%d %s on %s, step %q, %s\n", u.Seq, u.Kind, u.Node, u.StepName, u.At.Local().Format("15:04:05"))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if r.Truncated {
		fmt.Fprintln(w, "  (the last journal line was cut short when the process died; it is ignored)")
	}
	switch {
	case r.Resumable() == nil:
		fmt.Fprintf(w, "next: `caretaker resume %s` continues it", m.RunID)
		if len(r.Undos) > 0 {
			fmt.Fprintf(w, "; `caretaker undo %s` rolls back its recorded changes", m.RunID)
		}
		fmt.Fprintln(w)
	case m.UndoOf != "" && r.State != "ok":
		fmt.Fprintf(w, "next: `caretaker undo %s` again finishes the undo\n", m.UndoOf)
	}
}

// printRunHeader prints what a run was: playbook, cluster, state, who
// started it, its inventory, parameters and last error.
func printRunHeader(w io.Writer, r *journal.RunRecord) {
	m := r.Meta
	fmt.Fprintf(w, "run %s: playbook %s on cluster %s — %s\n", m.RunID, m.Playbook, m.Cluster, stateLabel(r))
	fmt.Fprintf(w, "  started %s by %s@%s (pid %d), %d attempt(s)", m.Started.Local().Format("2006-01-02 15:04:05 MST"), m.User, m.Host, m.PID, r.Attempts)
	if r.LastDone != nil {
		fmt.Fprintf(w, ", last ended %s", r.LastDone.At.Local().Format("2006-01-02 15:04:05"))
	}
	fmt.Fprintln(w)
	if m.Inventory != "" {
		fmt.Fprintf(w, "  inventory %s", m.Inventory)
		if m.Limit != "" {
			fmt.Fprintf(w, ", limit %s", m.Limit)
		}
		fmt.Fprintln(w)
	}
	if len(m.ParamValues) > 0 {
		keys := make([]string, 0, len(m.ParamValues))
		for k := range m.ParamValues {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var ps []string
		for _, k := range keys {
			ps = append(ps, k+"="+m.ParamValues[k])
		}
		fmt.Fprintf(w, "  parameters: %s\n", strings.Join(ps, " "))
	}
	if r.LastDone != nil && r.LastDone.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.LastDone.Error)
	}
}

// printRunSteps prints one line per step and node: its status and error,
// skip reason or start time.
func printRunSteps(w io.Writer, r *journal.RunRecord) {
	results := map[string]journal.StepResult{}
	for _, res := range r.Results {
		results[fmt.Sprintf("%d/%s", res.Step, res.Node)] = res
	}
	for _, res := range r.Started {
		results[fmt.Sprintf("%d/%s", res.Step, res.Node)] = res
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range r.Meta.Steps {
		nodes := s.Nodes
		if s.Once && len(nodes) > 1 {
			nodes = nodes[:1]
		}
		for _, n := range nodes {
			status, extra := "pending", ""
			if res, ok := results[fmt.Sprintf("%d/%s", s.Index, n)]; ok {
				status, extra = stepStatus(r, res)
			}
			fmt.Fprintf(tw, "  %d. %s\t%s\t%s\t%s\n", s.Index+1, s.Name, n, status, extra)
		}
	}
	_ = tw.Flush() // a terminal or pipe that fails is not ours to report
}

// stepStatus is the status column of a step result and what follows it.
func stepStatus(r *journal.RunRecord, res journal.StepResult) (string, string) {
	status, extra := string(res.Status), ""
	switch {
	case res.Status == runner.StatusRunning:
		status = "INTERRUPTED"
		if r.State == journal.RunStateRunning {
			status = "running"
		}
		extra = "started " + res.At.Local().Format("15:04:05")
	case res.Error != "":
		extra = res.Error
	case res.Reason != "":
		extra = res.Reason
	}
	if res.Attempt > 1 {
		extra = strings.TrimSpace(fmt.Sprintf("(attempt %d) %s", res.Attempt, extra))
	}
	return status, extra
}
