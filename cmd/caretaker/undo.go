package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/journal"
	"github.com/caretaker/caretaker/runner/session"
)

func newUndoCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "undo RUN",
		Short: "Run the recorded undo actions of a run, latest first (asks first unless --yes)",
		Long: `undo rolls back what a journaled run changed: built-ins record an undo action
before every change (for example strip_server records how to put the stripped
` + "`server`" + ` sources back byte for byte), and undo replays them in reverse
order, each on the node it was recorded for. Actions that cannot be undone
automatically (a CA rotation: put the backup back) are listed as notes. A
rotation that reached the datastore stays, and so do the edits made for it
whose reversal would stop K3s from starting (` + "`server`" + ` on a server already
on the new CA while others are not, a token pinning the new CA), each with a
note; ` + "`caretaker run rotate-ca`" + ` finishes the rotation.

The undo run takes the same locks as any run, is journaled itself, and holds
the undone run's journal so that it cannot be resumed meanwhile. An
interrupted undo continues where it stopped when ` + "`caretaker undo RUN`" + ` is
run again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stateDir := f.resolvedStateDir()
			release, err := journal.LockRun(stateDir, args[0])
			if err != nil {
				return err
			}
			f.cont = &session.Continuation{Release: release}
			defer func() {
				if f.cont.Release != nil {
					f.cont.Release()
				}
			}()
			rec, err := journal.ReadRun(stateDir, args[0])
			if err != nil {
				return err
			}
			if rec.Meta.UndoOf != "" {
				return fmt.Errorf("run %s is itself an undo (of run %s): %w", rec.Meta.RunID, rec.Meta.UndoOf, errs.ErrBadInput)
			}
			if f.inventory == "" {
				f.inventory = rec.Meta.Inventory
			}
			if f.inventory == "" {
				return usageError{fmt.Errorf("run %s does not name its inventory: give it with -i FILE", rec.Meta.RunID)}
			}
			inv, err := inventorypkg.Load(f.inventory)
			if err != nil {
				return err
			}
			cluster, err := inv.Cluster(rec.Meta.Cluster)
			if err != nil {
				return err
			}
			if len(rec.Undos) == 0 {
				// A run killed or stopped before its first change: there
				// is nothing to put back, which is not a failure.
				fmt.Fprintf(cmd.ErrOrStderr(), "caretaker: run %s recorded no undo actions: nothing to undo (it changed nothing that undo puts back)\n", rec.Meta.RunID)
				return nil
			}
			plan, err := runner.UndoPlan(rec.UndoRun(), cluster)
			if err != nil {
				return err
			}
			f.cluster = cluster.Name
			seqs := rec.UndoOrder()
			f.cont.UndoOf, f.cont.UndoSeqs = rec.Meta.RunID, seqs
			done, earlier := undoneBefore(stateDir, rec.Meta.RunID, seqs)
			f.cont.Done = done
			errOut := cmd.ErrOrStderr()
			if earlier > 0 {
				fmt.Fprintf(errOut, "caretaker: %d undo action(s) of run %s were done by an earlier undo run and are skipped\n", earlier, rec.Meta.RunID)
			}

			interactive := term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stdin.Fd()))
			tui := f.output == "tui" || (f.output == "auto" && interactive)
			if !f.yes && !f.check && !tui {
				fmt.Fprint(errOut, runner.FormatPlan(plan))
				if !interactive {
					return fmt.Errorf("undo changes %d node(s) of cluster %s and asks first, but there is no terminal to ask: check the plan above and run it again with --yes: %w", len(plan.Nodes), cluster.Name, errs.ErrNeedsConfirm)
				}
				ok, err := linePrompter{in: os.Stdin, out: errOut}.Confirm(cmd.Context(), runner.Prompt{Node: cluster.Name, Question: fmt.Sprintf("undo %d recorded change(s) of run %s?", len(plan.Steps), rec.Meta.RunID)})
				if err != nil {
					return err
				}
				if !ok {
					fmt.Fprintln(errOut, "caretaker: nothing was undone")
					return nil
				}
				f.yes = true // the operator answered for the whole undo
			}
			return executePlan(cmd.Context(), cmd.OutOrStdout(), plan, &f)
		},
	}
	f.addContinueFlags(c)
	c.Flags().BoolVar(&f.check, "check", false, "check mode: show what would be put back, change nothing")
	return c
}

// undoneBefore finds the undo actions earlier undo runs of runID completed
// (by seq) and returns the Done function of the new undo run, whose step i
// replays seqs[i], and how many are done.
func undoneBefore(stateDir, runID string, seqs []int) (func(step int, node string) bool, int) {
	recs, _ := journal.ListRuns(stateDir)
	doneSeq := map[int]bool{}
	for _, r := range recs {
		if r.Meta.UndoOf != runID || r.Meta.Check {
			continue
		}
		for i, seq := range r.Meta.UndoSeqs {
			if i < len(r.Meta.Steps) {
				for _, n := range r.Meta.Steps[i].Nodes {
					if r.Completed(i, n) {
						doneSeq[seq] = true
					}
				}
			}
		}
	}
	count := 0
	for _, s := range seqs {
		if doneSeq[s] {
			count++
		}
	}
	return func(step int, node string) bool {
		return step >= 0 && step < len(seqs) && doneSeq[seqs[step]]
	}, count
}
