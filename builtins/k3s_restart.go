package builtins

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caretaker/caretaker/runner"
	"go.starlark.net/starlark"
)

// journalLines is how many journal lines a failed restart reports.
const journalLines = 30

// journal returns the last lines of the service's journal.
func (c *k3sCall) journal() []string {
	line := fmt.Sprintf("journalctl -u %s -n %d --no-pager", runner.ShellQuote(c.node.K3s.Service), journalLines)
	// A fresh context: the step's may have timed out already, and the
	// journal is what tells the operator why.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx()), 30*time.Second)
	defer cancel()
	var out strings.Builder
	var errb strings.Builder
	_, err := c.ex.Run(ctx, runner.Command{Line: line, Stdout: &out, Stderr: &errb})
	text := strings.TrimRight(out.String(), "\n")
	if err != nil && text == "" {
		return []string{fmt.Sprintf("(%s failed: %v)", line, err)}
	}
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// restartResult is what restart found.
type restartResult struct {
	ok      bool
	state   string
	reason  string
	journal []string
	took    time.Duration
}

// restart restarts the node's K3s service and waits until it is active and,
// on servers, /readyz answers on the supervisor port.
func (c *k3sCall) restart(timeout time.Duration) (restartResult, error) {
	svc := c.node.K3s.Service
	start := time.Now()
	res := restartResult{ok: true, state: "active"}
	err := c.env.Wet(fmt.Sprintf("restart %s on %s and wait until it is up (timeout %s)", svc, c.node.Name, timeout), func() error {
		ctx, cancel := context.WithTimeout(c.ctx(), timeout)
		defer cancel()
		c.env.Output(runner.StreamLog, "systemctl restart "+svc)
		_, _, _, err := RunResult(c.env, c.ex, c.node, runner.Command{Line: "systemctl restart " + runner.ShellQuote(svc), Timeout: timeout}, true, true)
		c.env.MarkChanged()
		if err != nil {
			if errors.Is(err, runner.ErrAborted) || (c.ctx().Err() != nil && !errors.Is(c.ctx().Err(), context.DeadlineExceeded)) {
				return err
			}
			var xe *runner.ExitError
			if errors.As(err, &xe) {
				res.reason = fmt.Sprintf("systemctl restart %s exited with code %d", svc, xe.Code)
			} else {
				res.reason = fmt.Sprintf("systemctl restart %s: %v", svc, err)
			}
			res.ok = false
			res.state, _ = c.serviceState()
			return nil
		}
		if err := c.waitActive(ctx, &res); err != nil {
			return err
		}
		if res.ok && c.node.Role == runner.RoleServer {
			if err := c.waitReady(ctx, &res); err != nil {
				return err
			}
		}
		return nil
	})
	res.took = time.Since(start)
	if err != nil {
		return res, err
	}
	if !res.ok {
		res.journal = c.journal()
	}
	return res, nil
}

// poll calls fn until it reports done, ctx ends, or the run stops.
func poll(ctx context.Context, fn func() (bool, error)) error {
	wait := 100 * time.Millisecond
	for {
		done, err := fn()
		if err != nil || done {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if wait < time.Second {
			wait = wait * 3 / 2
		}
	}
}

func (c *k3sCall) waitActive(ctx context.Context, res *restartResult) error {
	err := poll(ctx, func() (bool, error) {
		if err := c.env.CheckStop(); err != nil {
			return false, err
		}
		st, err := c.serviceState()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, err
		}
		res.state = st
		switch st {
		case "active":
			return true, nil
		case "failed", "inactive":
			res.ok = false
			res.reason = fmt.Sprintf("%s is %s after the restart", c.node.K3s.Service, st)
			return true, nil
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil && c.ctx().Err() == nil {
		res.ok = false
		res.reason = fmt.Sprintf("%s did not become active in time (state %s)", c.node.K3s.Service, res.state)
		return nil
	}
	return err
}

// adminCert is the server's admin client certificate (SD/tls/client-admin
// .crt/.key), which /readyz needs when the API server refuses anonymous
// requests, as K3s configures it. nil when the node has none.
func (c *k3sCall) adminCert() *tls.Certificate {
	crt, key := c.sd()+"/tls/client-admin.crt", c.sd()+"/tls/client-admin.key"
	files, err := c.fetchMap(crt, key)
	if err != nil {
		return nil
	}
	pair, err := tls.X509KeyPair(files[crt].Data, files[key].Data)
	if err != nil {
		return nil
	}
	return &pair
}

func (c *k3sCall) waitReady(ctx context.Context, res *restartResult) error {
	var last string
	admin := c.adminCert()
	err := poll(ctx, func() (bool, error) {
		if err := c.env.CheckStop(); err != nil {
			return false, err
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		code, body, err := c.supervisorGet(pctx, "/readyz", admin)
		switch {
		case err != nil:
			last = err.Error()
		case (code == http.StatusUnauthorized || code == http.StatusForbidden) && admin == nil:
			// Up and answering; without the admin certificate caretaker
			// cannot ask whether it is ready.
			c.env.Output(runner.StreamLog, fmt.Sprintf("/readyz answers HTTP %d without credentials and %s/tls/client-admin.crt is missing: taking the answer as up", code, c.sd()))
			return true, nil
		case code != http.StatusOK:
			last = fmt.Sprintf("HTTP %d %s", code, strings.TrimSpace(string(body)))
		default:
			return true, nil
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil && c.ctx().Err() == nil {
		res.ok = false
		res.reason = fmt.Sprintf("/readyz on %s did not answer ok in time (last: %s)", c.node.K3s.SupervisorEndpoint, last)
		res.state, _ = c.serviceState()
		return nil
	}
	return err
}

// k3s.restart(node, timeout="3m", check=True): restart the node's K3s
// service and wait until it is active and, on servers, /readyz answers on
// the supervisor port. When it does not come up the last journal lines are
// shown and the step fails, or with check=False the result says so:
// struct(ok, state, error, journal, seconds).
func k3sRestart(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		nodeArg starlark.Value = starlark.None
		timeout                = Duration(3 * time.Minute)
		check                  = true
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "node?", &nodeArg, "timeout?", &timeout, "check?", &check); err != nil {
		return nil, err
	}
	c, err := newK3sCall(th, b, nodeArg)
	if err != nil {
		return nil, err
	}
	res, err := c.restart(time.Duration(timeout))
	if err != nil {
		return nil, err
	}
	msg := ""
	if !res.ok {
		for _, l := range res.journal {
			c.env.Output(runner.StreamStderr, l)
		}
		msg = fmt.Sprintf("%s: %s did not come back on %s: %s", b.Name(), c.node.K3s.Service, c.node.Name, res.reason)
		if check {
			return nil, fmt.Errorf("%s; last %d journal lines (journalctl -u %s):\n%s", msg, len(res.journal), c.node.K3s.Service, strings.Join(res.journal, "\n"))
		}
	} else if !c.env.Check {
		c.env.Output(runner.StreamLog, fmt.Sprintf("%s is up after %s", c.node.K3s.Service, res.took.Round(time.Millisecond)))
	}
	return structOf("restart", starlark.StringDict{
		"ok":      starlark.Bool(res.ok),
		"state":   starlark.String(res.state),
		"error":   starlark.String(msg),
		"journal": strList(res.journal),
		"seconds": starlark.Float(res.took.Seconds()),
	}), nil
}
