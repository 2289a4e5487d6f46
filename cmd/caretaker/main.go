// Command caretaker runs Starlark maintenance playbooks against the nodes
// of K3s clusters over SSH. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/caretaker/caretaker/runner/errs"
)

// Exit codes (DESIGN.md): 0 all done; 1 a step failed (or the run was
// aborted); 2 bad input; 3 locked by another run; 4 check/verify found drift
// or expiring certificates; 5 outside the maintenance window.
const (
	exitOK       = 0
	exitFailed   = 1
	exitBadInput = 2
	exitLocked   = 3
	exitDrift    = 4
	exitWindow   = 5
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func main() {
	if code, handled := runShim(os.Args); handled {
		os.Exit(code)
	}
	quietKubernetesClient()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// quietKubernetesClient keeps client-go's own logging (klog) and the API
// server's warnings off stdout and stderr, which belong to the TUI and the
// printers: what the k8s operations learn, they report as errors and
// output lines of their step.
func quietKubernetesClient() {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
}

// execute runs the command line and returns the process exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(goTestStyleArgs(args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	return exitCode(root.ExecuteContext(ctx), stderr)
}

// exitCode maps an error to the exit codes of DESIGN.md and reports it.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	code := exitFailed
	if errors.As(err, &ee) {
		code = ee.code
	} else if errors.Is(err, errs.ErrBadInput) || isUsageError(err) {
		code = exitBadInput
	} else if errors.Is(err, errs.ErrLocked) {
		code = exitLocked
	}
	if !silent(err) {
		fmt.Fprintln(stderr, "caretaker:", err)
	}
	return code
}

// silentError is an error already reported to the operator (by the summary
// of a run); main only sets the exit code.
type silentError struct{ error }

func silent(err error) bool {
	var s silentError
	return errors.As(err, &s)
}

type usageError struct{ error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "caretaker",
		Short:         "Run maintenance playbooks against K3s clusters over SSH",
		Long:          "caretaker runs Starlark maintenance playbooks (CA rotation, certificate checks, backups) against the nodes of K3s clusters over SSH, with a live terminal view or plain/JSON output for unattended runs.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	root.AddCommand(newRunCommand(), newPlanCommand(), newPlaybooksCommand(), newVersionCommand())
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	argsAreUsage(root)
	return root
}

// argsAreUsage makes a wrong number of arguments bad input (exit 2) that
// says where to look, like a wrong flag, on every command.
func argsAreUsage(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{fmt.Errorf("%s: %w (usage: %s; see %s --help)", strings.TrimPrefix(cmd.CommandPath(), "caretaker "), err, cmd.UseLine(), cmd.CommandPath())}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		argsAreUsage(sub)
	}
}

// extraCommands are added by other files of this package (lab, check, ...).
var extraCommands []func() *cobra.Command

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print caretaker's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "caretaker %s\n", version)
			return nil
		},
	}
}
