package runner

import (
	"bytes"
	"context"
	"io"
	"time"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// RunCommand runs a command on node n for a builtin, streaming its output
// into the run's events (unless quiet) and returning stdout and stderr as
// well. It is the one place builtins start commands, so check mode and a
// graceful stop apply to all of them: changes=true marks a command that
// changes the node, which check mode reports ("would run on ...") instead
// of running; changes=false is a read-only command that runs in check mode
// too.
func (e *Env) RunCommand(ctx context.Context, ex transport.Executor, n *inventory.Node, c transport.Command, changes, quiet bool) (transport.Result, string, string, error) {
	var (
		res            transport.Result
		outBuf, errBuf bytes.Buffer
	)
	run := func() error {
		emit := func(stream string) func(string) {
			return func(line string) {
				if !quiet {
					e.Emit(OutputLine{Step: e.Step, Node: n.Name, Stream: stream, Text: line, At: time.Now()})
				}
			}
		}
		ow, ew := NewLineWriter(emit(StreamStdout)), NewLineWriter(emit(StreamStderr))
		c.Stdout = io.MultiWriter(&outBuf, ow)
		c.Stderr = io.MultiWriter(&errBuf, ew)
		var err error
		res, err = ex.Run(ctx, c)
		ow.Flush()
		ew.Flush()
		if changes && err == nil {
			e.MarkChanged()
		}
		return err
	}
	var err error
	if changes {
		err = e.Wet("run on "+n.Name+": "+c.Line, run)
	} else if err = e.CheckStop(); err == nil {
		err = run()
	}
	return res, outBuf.String(), errBuf.String(), err
}
