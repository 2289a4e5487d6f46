package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"go.starlark.net/starlark"
	"golang.org/x/term"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/playbooks"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/session"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
	windowpkg "github.com/caretaker/caretaker/runner/window"
)

// runFlags are shared by run, plan and the commands built on them.
type runFlags struct {
	inventory string
	cluster   string
	params    []string
	libDirs   []string
	limit     string
	check     bool
	output    string
	yes       bool
	failure   string
	maxFailed int
	stateDir  string
	verbose   bool

	// Unattended runs (session.go).
	breakLock     bool
	noClusterLock bool
	window        string
	notifyURL     string
	lockTTL       time.Duration
	// playbookRef is what loadPlan resolved (a shipped name or an absolute
	// path): the journal keeps it for resume.
	playbookRef string
	// paramValues are the parameters the plan was loaded with (parsed once).
	paramValues map[string]string
	// cont is set by resume and undo.
	cont *session.Continuation
}

func (f *runFlags) addLoadFlags(c *cobra.Command) {
	c.Flags().StringVarP(&f.inventory, "inventory", "i", "", "inventory file (YAML) describing the cluster's nodes (required)")
	c.Flags().StringVar(&f.cluster, "cluster", "", "cluster of the inventory to use (needed when it declares several)")
	c.Flags().StringArrayVarP(&f.params, "param", "p", nil, "playbook parameter as key=value (repeatable)")
	c.Flags().StringArrayVar(&f.libDirs, "lib", nil, "directory load() may read modules from (repeatable)")
	c.Flags().StringVar(&f.limit, "limit", "", "only these nodes: all, servers, agents, group:NAME, label:K=V, node names (comma-separated)")
}

func (f *runFlags) addRunFlags(c *cobra.Command) {
	f.addLoadFlags(c)
	c.Flags().BoolVar(&f.check, "check", false, "check mode: read-only calls run, every change is only reported")
	c.Flags().StringVarP(&f.output, "output", "o", "auto", "output: auto (TUI on a terminal, else plain), tui, plain or json")
	c.Flags().BoolVarP(&f.yes, "yes", "y", false, "answer yes to every confirmation and skip the plan screen (unattended runs)")
	c.Flags().StringVar(&f.failure, "on-failure", "stop", "what a failed step does: stop (finish running nodes, start nothing new) or continue (leave failed nodes out of later steps)")
	c.Flags().IntVar(&f.maxFailed, "max-failed", 0, "continue until more than this many nodes failed, then stop (0: see --on-failure)")
	c.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory for journals and backups (default $XDG_STATE_HOME/caretaker or ~/.local/state/caretaker)")
	c.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "plain output: show the Starlark backtrace of failures")
	f.addSessionFlags(c)
}

func (f *runFlags) parseParams() (map[string]string, error) {
	out := map[string]string{}
	for _, p := range f.params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("-p %q: parameters are key=value", p)}
		}
		out[k] = v
	}
	return out, nil
}

// stateDir is where journals, backups and locks live.
func (f *runFlags) resolvedStateDir() string {
	if f.stateDir != "" {
		return f.stateDir
	}
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "caretaker")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "caretaker-state")
	}
	return filepath.Join(home, ".local", "state", "caretaker")
}

// loadPlan reads the inventory and the playbook (a shipped name or a .star
// path) and builds the plan.
func (f *runFlags) loadPlan(playbook string, params map[string]string) (*runner.Plan, error) {
	if f.inventory == "" {
		return nil, usageError{fmt.Errorf("no inventory: give one with -i FILE")}
	}
	inv, err := inventorypkg.Load(f.inventory)
	if err != nil {
		return nil, err
	}
	cluster, err := inv.Cluster(f.cluster)
	if err != nil {
		return nil, err
	}
	pre, err := predeclared()
	if err != nil {
		return nil, err
	}
	f.paramValues = params
	opts := runner.LoadOptions{Params: params, LibDirs: f.libDirs, Predeclared: pre, Cluster: cluster, Limit: f.limit}
	if err := resolvePlaybook(playbook, &opts); err != nil {
		return nil, err
	}
	f.playbookRef = opts.Path
	if opts.FS != nil {
		f.playbookRef = opts.Name
	} else if abs, err := filepath.Abs(opts.Path); err == nil {
		f.playbookRef = abs
	}
	return runner.Load(opts)
}

// planFromArgs parses -p (once: the session records the same values) and
// loads the named playbook's plan.
func (f *runFlags) planFromArgs(playbook string) (*runner.Plan, error) {
	params, err := f.parseParams()
	if err != nil {
		return nil, err
	}
	return f.loadPlan(playbook, params)
}

// resolvePlaybook fills in where a playbook comes from: a file on disk
// (a path, or anything ending in .star) or a shipped playbook by name.
func resolvePlaybook(name string, opts *runner.LoadOptions) error {
	if _, err := os.Stat(name); err == nil || strings.HasSuffix(name, ".star") || strings.ContainsRune(name, os.PathSeparator) {
		if err != nil {
			return fmt.Errorf("playbook %s: %w", name, errs.ErrBadInput)
		}
		opts.Path = name
		return nil
	}
	if !playbooks.Has(name) {
		return fmt.Errorf("no playbook %q: give a .star file or one of the shipped playbooks (%s): %w", name, strings.Join(playbooks.Names(), ", "), errs.ErrBadInput)
	}
	opts.Name = name
	opts.Path = name + ".star"
	opts.FS = playbooks.FS
	opts.FSPrefix = "playbooks"
	return nil
}

func newRunCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run PLAYBOOK -i INVENTORY [-p key=value]...",
		Short: "Run a playbook (a shipped name or a .star file) against a cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := f.planFromArgs(args[0])
			if err != nil {
				return err
			}
			return executePlan(cmd.Context(), cmd.OutOrStdout(), plan, &f)
		},
	}
	f.addRunFlags(c)
	return c
}

// executePlan runs a loaded plan with the output the flags ask for and maps
// the outcome to an exit code.
func executePlan(ctx context.Context, stdout io.Writer, plan *runner.Plan, f *runFlags) error {
	output := f.output
	interactive := term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stdin.Fd()))
	if output == "auto" {
		output = "plain"
		if interactive {
			output = "tui"
		}
	}
	switch output {
	case "tui", "plain", "json":
	default:
		return usageError{fmt.Errorf("--output %q: use auto, tui, plain or json", f.output)}
	}
	// Identity files and known_hosts are read on this machine: a wrong
	// one is bad input, refused before any node is dialed.
	if err := inventorypkg.CheckControllerFiles(plan.Nodes); err != nil {
		return err
	}
	if err := f.conflicts(); err != nil {
		return err
	}
	if f.maxFailed < 0 {
		return usageError{fmt.Errorf("--max-failed %d: give a number of nodes ≥ 0 (0: stop or continue as --on-failure says)", f.maxFailed)}
	}
	failure := runner.FailurePolicy{MaxFailed: f.maxFailed}
	switch f.failure {
	case "stop":
	case "continue":
		failure.Continue = true
	default:
		return usageError{fmt.Errorf("--on-failure %q: use stop or continue", f.failure)}
	}
	// Window, notifier, locks, journal and connections (runner/session);
	// the session gives the run its ID.
	sess, err := openSession(ctx, plan, f, f.paramValues)
	if err != nil {
		return err
	}
	defer sess.Close(context.WithoutCancel(ctx))
	opts := sess.RunOptions(runner.RunOptions{
		Check:     f.check,
		AutoYes:   f.yes,
		Connect:   sshnode.Dial,
		Failure:   failure,
		NodeValue: builtins.NodeValue,
	})
	if output == "tui" {
		opts.Sink = sess.Sink(nil)
		return runWithTUI(ctx, plan, opts, f)
	}
	var sink runner.Sink
	if output == "json" {
		sink = runner.NewJSONSink(stdout)
	} else {
		sink = runner.NewPlainSink(stdout, f.verbose)
	}
	opts.Sink = sess.Sink(sink)
	if !f.yes && interactive {
		opts.Prompter = linePrompter{in: os.Stdin, out: os.Stderr}
	}
	run := runner.NewRun(plan, opts)
	stopOnInterrupt(ctx, run, os.Stderr)
	done, err := run.Execute(ctx)
	return runOutcome(done, err)
}

// conflicts refuses flags that contradict each other.
func (f *runFlags) conflicts() error {
	switch {
	case f.breakLock && f.noClusterLock:
		return usageError{errors.New("--break-lock and --no-cluster-lock contradict each other: --break-lock takes the cluster lock from another run, --no-cluster-lock takes none; give one of them")}
	case f.breakLock && f.check:
		return usageError{errors.New("--break-lock with --check: a check-mode run takes no cluster lock, so it would stop another run for nothing; leave --break-lock out of the rehearsal")}
	}
	return nil
}

// runOutcome maps a finished run to the process's exit code; the summary
// was already printed by the sink. A run stopped by its closing window
// exits 5, one that lost its cluster lock 3, one that failed only with
// drift 4.
func runOutcome(done runner.RunDone, err error) error {
	if err == nil {
		return nil
	}
	if hint := needsConfirmHint(done); hint != nil {
		return withCode(exitFailed, hint)
	}
	switch {
	case errors.Is(err, windowpkg.ErrOutsideWindow):
		return withCode(exitWindow, silentError{err})
	case errors.Is(err, errs.ErrLocked):
		return withCode(exitLocked, silentError{err})
	case onlyDrift(done):
		return withCode(exitDrift, silentError{err})
	}
	return withCode(exitFailed, silentError{err})
}

// onlyDrift says whether a failed run failed only with drift (CA drift,
// expiring certificates: fail(kind="drift"), k3s.check(fail=True), stale
// nodes in k3s.verify(fail=True)): it exits 4 like caretaker check. Any
// other failure (an unreachable node, a command) makes it 1.
func onlyDrift(done runner.RunDone) bool {
	if done.Status != "failed" || len(done.Failed) == 0 {
		return false
	}
	for _, f := range done.Failed {
		if f.Kind != errs.KindDrift {
			return false
		}
	}
	return true
}

// stopOnInterrupt turns the first Ctrl-C into a graceful stop (running
// commands finish, nothing new starts) and the second into an abort.
func stopOnInterrupt(ctx context.Context, c runner.Controller, w io.Writer) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt)
	var n atomic.Int32
	go func() {
		for {
			select {
			case <-ctx.Done():
				signal.Stop(sigs)
				return
			case <-sigs:
				if n.Add(1) == 1 {
					fmt.Fprintln(w, "caretaker: stopping after the running commands finish (Ctrl-C again to abort them now)")
					c.Stop(false)
				} else {
					fmt.Fprintln(w, "caretaker: aborting running commands")
					c.Stop(true)
				}
			}
		}
	}()
}

// linePrompter asks confirm() questions on a terminal, one line each.
type linePrompter struct {
	in  io.Reader
	out io.Writer
}

func (p linePrompter) Confirm(ctx context.Context, q runner.Prompt) (bool, error) {
	hint := "[y/N]"
	if q.Default {
		hint = "[Y/n]"
	}
	fmt.Fprintf(p.out, "%s: %s %s ", q.Node, q.Question, hint)
	ans := make(chan string, 1)
	go func() {
		var buf [256]byte
		n, _ := p.in.Read(buf[:])
		ans <- strings.TrimSpace(strings.ToLower(string(buf[:n])))
	}()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case a := <-ans:
		switch a {
		case "y", "yes":
			return true, nil
		case "":
			return q.Default, nil
		}
		return false, nil
	}
}

func newPlanCommand() *cobra.Command {
	var f runFlags
	var output string
	c := &cobra.Command{
		Use:   "plan PLAYBOOK -i INVENTORY",
		Short: "Print a playbook's plan (steps × nodes) without touching any node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("--output %q: use text or json", output)}
			}
			plan, err := f.planFromArgs(args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				b, _ := runner.MarshalEvent(plannedEvent(plan))
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprint(cmd.OutOrStdout(), runner.FormatPlan(plan))
			return nil
		},
	}
	f.addLoadFlags(c)
	c.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return c
}

// plannedEvent is what `plan -o json` prints.
func plannedEvent(plan *runner.Plan) runner.Planned {
	ev := planEvent(plan)
	return runner.Planned{Playbook: ev.Playbook, Cluster: ev.Cluster, Params: ev.Params, Steps: ev.Steps, Nodes: ev.Nodes, At: time.Now().UTC()}
}

// planEvent is the plan as the TUI's plan screen shows it.
func planEvent(plan *runner.Plan) runner.RunStarted {
	ev := runner.RunStarted{Playbook: plan.Playbook, Cluster: plan.Cluster.Name, Params: plan.ParamValues()}
	for _, s := range plan.Steps {
		ev.Steps = append(ev.Steps, s.Info())
	}
	for _, n := range plan.Nodes {
		ev.Nodes = append(ev.Nodes, runner.NodeInfo{Name: n.Name, Role: n.Role, Address: n.Address, Groups: n.Groups})
	}
	return ev
}

func predeclared() (starlark.StringDict, error) { return builtins.Predeclared() }
