package k3sops

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// RegenerateFile is the file K3s looks for at start to issue a new
// serving certificate for the supervisor port (:6443) instead of serving
// its cached one (SD/tls/dynamic-cert.json, shared through the
// kube-system/k3s-serving secret); K3s deletes it. The rotate-ca handler
// creates it only on the server that took the request, so caretaker
// creates it before every server restart of a rotation.
const RegenerateFile = "tls/dynamic-cert-regenerate"

// RestartOptions say how a restart is done.
type RestartOptions struct {
	// Timeout is how long K3s may take to be up again (default 3m).
	Timeout time.Duration
	// RegenerateCert creates SD/tls/dynamic-cert-regenerate before a
	// server restarts, so that it serves a certificate of the CA on its
	// disk (needed after a CA rotation).
	RegenerateCert bool
	// Fail makes a restart after which K3s is not up an error (with the
	// journal); otherwise the result says so.
	Fail bool
}

// RestartResult is what a restart found.
type RestartResult struct {
	OK bool `json:"ok"`
	// State and Substate are systemd's ActiveState (active, activating,
	// failed, ...) and SubState (running, start, auto-restart, ...).
	State    string `json:"state"`
	Substate string `json:"substate"`
	// Error says why K3s is not up ("" when OK).
	Error string `json:"error"`
	// Journal holds the journal lines that explain a failed restart,
	// errors first.
	Journal []string `json:"journal"`
	Seconds float64  `json:"seconds"`

	reason string
	took   time.Duration // 0 in check mode
}

func restarted(res RestartResult) bool { return res.took > 0 }

// unitStatus is the part of `systemctl show` a restart watches.
type unitStatus struct {
	active, sub, result, invocation string
	restarts                        int
}

// unitShowProps are the properties a restart reads; systemd prints them in
// its own order, as Key=Value lines.
const unitShowProps = "ActiveState,SubState,Result,NRestarts,InvocationID"

func parseUnitShow(out string) unitStatus {
	var st unitStatus
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "ActiveState":
			st.active = v
		case "SubState":
			st.sub = v
		case "Result":
			st.result = v
		case "NRestarts":
			st.restarts, _ = strconv.Atoi(v)
		case "InvocationID":
			st.invocation = v
		}
	}
	return st
}

// describe is the state as an operator reads it: "active", or
// "activating (auto-restart)".
func (st unitStatus) describe() string {
	if st.active == "active" || st.sub == "" {
		return st.active
	}
	return st.active + " (" + st.sub + ")"
}

// unitShow runs `systemctl show` for the node's service.
func (c *Target) unitShow(ctx context.Context) (unitStatus, error) {
	var out strings.Builder
	line := "systemctl show " + transport.ShellQuote(c.Node.K3s.Service) + " --property=" + unitShowProps
	if _, err := c.Exec.Run(ctx, transport.Command{Line: line, Stdout: &out, Timeout: 30 * time.Second}); err != nil {
		return unitStatus{}, c.errorf("%s: %w", line, err)
	}
	st := parseUnitShow(out.String())
	if st.active == "" {
		return st, c.errorf("%s printed no ActiveState (is this systemd?)", line)
	}
	return st, nil
}

// restart restarts the node's K3s service without blocking on it
// (`systemctl restart --no-block`: with the installer's Type=notify and
// TimeoutStartSec=0 a blocking restart of a K3s that never gets ready
// never returns), then watches the unit and the journal: it is up when a
// new invocation is active and, on servers, /readyz answers ok. New
// error lines of K3s are shown while it waits; a K3s that dies twice with
// the same fatal error is reported at once, not at the timeout.
func (c *Target) restart(ctx context.Context, o RestartOptions) (RestartResult, error) {
	svc := c.Node.K3s.Service
	start := time.Now()
	res := RestartResult{OK: true, State: "active", Journal: []string{}}
	what := fmt.Sprintf("restart %s on %s and wait until it is up (timeout %s)", svc, c.Node.Name, o.Timeout)
	if o.RegenerateCert && c.Node.Role == inventory.RoleServer {
		what += fmt.Sprintf(", creating %s/%s first so that it serves a certificate of the CA on its disk", c.sd(), RegenerateFile)
	}
	var since string
	ran := false // stays false in check mode
	err := c.Run.Wet(what, func() error {
		ran = true
		ctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, errRestartTimeout)
		defer cancel()
		before, clock, err := c.restartNoBlock(ctx, o.RegenerateCert)
		since = clock
		if err != nil {
			return err
		}
		if err := c.waitUp(ctx, before, since, o.Timeout, &res); err != nil {
			return err
		}
		if res.OK && c.Node.Role == inventory.RoleServer {
			if err := c.waitReady(ctx, &res); err != nil || !res.OK || !o.RegenerateCert {
				return err
			}
			c.waitServingSync(ctx, since)
		}
		return nil
	})
	if ran {
		res.took = time.Since(start)
	}
	if err != nil {
		return res, err
	}
	if !res.OK {
		res.Journal = c.journalExcerpt(ctx, since)
	}
	return res, nil
}

// restartNoBlock records the unit's invocation and the node's clock, then
// (after creating the regenerate file on a server, when asked) queues the
// restart. It returns the invocation before the restart and the node's
// clock as seconds since the epoch, for journalctl --since.
func (c *Target) restartNoBlock(ctx context.Context, regenerate bool) (unitStatus, string, error) {
	svc := transport.ShellQuote(c.Node.K3s.Service)
	var out strings.Builder
	line := "date +%s.%N && systemctl show " + svc + " --property=" + unitShowProps
	if _, err := c.Exec.Run(ctx, transport.Command{Line: line, Stdout: &out, Timeout: 30 * time.Second}); err != nil {
		return unitStatus{}, "", c.errorf("read the state of %s: %w", c.Node.K3s.Service, err)
	}
	clock, rest, _ := strings.Cut(out.String(), "\n")
	before := parseUnitShow(rest)
	cmd := "systemctl restart --no-block " + svc
	if regenerate && c.Node.Role == inventory.RoleServer {
		cmd = "touch " + transport.ShellQuote(c.sd()+"/"+RegenerateFile) + " && " + cmd
	}
	c.Run.Output(runner.StreamLog, cmd)
	_, _, _, err := c.Run.RunCommand(ctx, c.Exec, c.Node, transport.Command{Line: cmd, Timeout: time.Minute}, true, true)
	if err != nil {
		return before, strings.TrimSpace(clock), c.errorf("%s: %w", cmd, err)
	}
	return before, strings.TrimSpace(clock), nil
}

// fatalLine matches K3s's (logrus) fatal lines and captures the message.
var fatalLine = regexp.MustCompile(`level=fatal msg="((?:[^"\\]|\\.)*)"`)

// servingSyncLine is what K3s logs once its listener synced with the
// kube-system/k3s-serving secret (before the sync: "Active TLS secret /
// (ver=)").
const servingSyncLine = "Active TLS secret kube-system/k3s-serving (ver="

// servingSyncWait bounds the wait for that line; K3s syncs 0.3-2.3 s
// after the unit is active (measured on real K3s, lab/README.md).
const servingSyncWait = 30 * time.Second

// waitServingSync waits, after a restart that issued a new serving
// certificate, until the server synced with the k3s-serving secret, plus
// a second: that sync can bring the certificate in the secret back (a
// certificate of the previous CA after a rotation) on every server, so a
// check of what the servers serve means something only afterwards.
func (c *Target) waitServingSync(ctx context.Context, since string) {
	line := fmt.Sprintf("journalctl -u %s --since @%s --no-pager -o cat | grep -F %s || true",
		transport.ShellQuote(c.Node.K3s.Service), since, transport.ShellQuote(servingSyncLine))
	deadline := time.Now().Add(servingSyncWait)
	for time.Now().Before(deadline) {
		var out strings.Builder
		if _, err := c.Exec.Run(ctx, transport.Command{Line: line, Stdout: &out, Timeout: 30 * time.Second}); err != nil && ctx.Err() != nil {
			return
		}
		if strings.Contains(out.String(), servingSyncLine) {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	c.Run.Output(runner.StreamLog, fmt.Sprintf("K3s on %s logged no sync with kube-system/k3s-serving within %s of being ready; going on", c.Node.Name, servingSyncWait))
}

// errRestartTimeout is the cause of a restart's ctx that ended because
// the restart's own timeout passed (not because the run stopped).
var errRestartTimeout = errors.New("restart timeout passed")

// timedOut reports whether ctx ended because the restart's own timeout
// passed: then the restart failed and says the state K3s was stuck in;
// any other end of ctx (the run stopped) is passed on as it is.
func timedOut(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), errRestartTimeout)
}

// errorLine matches K3s's (logrus) error and fatal lines.
var errorLine = regexp.MustCompile(`level=(error|fatal) `)

// waitUp polls the unit until a new invocation is active, the unit gives
// up, K3s crash-loops on one fatal error, or ctx ends (then res says the
// state it was stuck in). Only ctx stops it: a graceful stop of the run
// lets a restart that was started finish.
func (c *Target) waitUp(ctx context.Context, before unitStatus, since string, timeout time.Duration, res *RestartResult) error {
	w := &upWatch{c: c, before: before, since: since, shown: map[string]bool{}, fatal: map[string]int{}}
	var journalAt time.Time
	err := pollEvery(ctx, unitPollInterval, func() (bool, error) {
		st, err := c.unitShow(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, err
		}
		res.State, res.Substate = st.active, st.sub
		// The unit's state is cheap to ask often (a restart is seen
		// within unitPollInterval); the journal is read once a second.
		if done := st.active == "active" && st.invocation != before.invocation; done || time.Since(journalAt) >= time.Second {
			w.showNewErrors(ctx)
			journalAt = time.Now()
		}
		return w.judge(st, res), nil
	})
	if err != nil && timedOut(ctx) {
		res.OK = false
		res.reason = w.stuck(timeout, unitStatus{active: res.State, sub: res.Substate}.describe())
		return nil
	}
	return err
}

// upWatch is the state of one waitUp.
type upWatch struct {
	c      *Target
	before unitStatus
	since  string
	shown  map[string]bool // error lines already shown
	fatal  map[string]int  // fatal message → times seen
	errs   []string        // error lines seen, in order
}

// judge decides from one status whether waiting is over.
func (w *upWatch) judge(st unitStatus, res *RestartResult) bool {
	svc := w.c.Node.K3s.Service
	restarted := st.invocation != "" && st.invocation != w.before.invocation
	switch {
	case !restarted:
		return false // the restart job has not started the new invocation yet
	case st.active == "active":
		return true
	case st.active == "failed":
		res.OK = false
		res.reason = fmt.Sprintf("%s failed after the restart (systemd result %s)%s", svc, st.result, w.cause())
		return true
	case st.active == "inactive":
		res.OK = false
		res.reason = fmt.Sprintf("%s is inactive after the restart (it was stopped)%s", svc, w.cause())
		return true
	}
	for msg, n := range w.fatal {
		if n >= 2 {
			res.OK = false
			res.reason = fmt.Sprintf("%s crash-loops: K3s exited %d times with the same fatal error (systemd restarts it every few seconds, %d restarts so far): %s", svc, n, st.restarts-w.before.restarts, msg)
			return true
		}
	}
	if failed := st.restarts - w.before.restarts; failed >= crashLoopRestarts {
		res.OK = false
		res.reason = fmt.Sprintf("%s crash-loops: its start failed %d times since the restart and systemd keeps restarting it (Restart=always)%s", svc, failed, w.cause())
		return true
	}
	return false
}

// crashLoopRestarts is how many automatic restarts of the unit since
// caretaker's restart make it a crash loop (each is a start that failed:
// K3s exited, or an ExecStartPre failed).
const crashLoopRestarts = 2

// cause is the last error K3s logged since the restart, for a reason.
func (w *upWatch) cause() string {
	if len(w.errs) == 0 {
		return ""
	}
	return "; last K3s error: " + shortJournalLine(w.errs[len(w.errs)-1])
}

// stuck explains a restart that did not finish in time.
func (w *upWatch) stuck(timeout time.Duration, state string) string {
	svc := w.c.Node.K3s.Service
	msg := fmt.Sprintf("%s on %s is still %s %s after the restart: K3s has not reported ready", svc, w.c.Node.Name, state, timeout)
	if strings.HasPrefix(state, "activating") {
		msg += " (the installer's unit has TimeoutStartSec=0, so systemd waits for it forever; a longer timeout does not help unless K3s is only slow)"
	}
	return msg + w.cause()
}

// showNewErrors prints the K3s error lines logged since the restart that
// were not shown yet, and counts fatal ones.
func (w *upWatch) showNewErrors(ctx context.Context) {
	if w.since == "" {
		return
	}
	line := fmt.Sprintf("journalctl -u %s --since @%s --no-pager -o short-iso | grep -E 'level=(error|fatal) ' | tail -n 50", transport.ShellQuote(w.c.Node.K3s.Service), w.since)
	var out strings.Builder
	if _, err := w.c.Exec.Run(ctx, transport.Command{Line: line, Stdout: &out, Timeout: 30 * time.Second}); err != nil {
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" || w.shown[l] {
			continue
		}
		w.shown[l] = true
		w.errs = append(w.errs, l)
		if m := fatalLine.FindStringSubmatch(l); m != nil {
			w.fatal[m[1]]++
		}
		w.c.Run.Output(runner.StreamStderr, "journal: "+shortJournalLine(l))
	}
}

// shortJournalLine drops journald's prefix (time, host, unit[pid]) and
// logrus's time field from a K3s journal line.
func shortJournalLine(l string) string {
	if i := strings.Index(l, "]: "); i >= 0 {
		l = l[i+3:]
	}
	if strings.HasPrefix(l, "time=\"") {
		if i := strings.Index(l[6:], "\" "); i >= 0 {
			l = l[6+i+2:]
		}
	}
	return l
}

// journalExcerptLines is how many journal lines a failed restart reports.
const journalExcerptLines = 30

// journalExcerpt returns what explains a failed restart: the K3s error and
// fatal lines logged since the restart first (each once, newest last),
// then the last lines of the journal since the restart without etcd's
// JSON records and Kubernetes' info lines, which drown the cause (issue
// 10: 373 of 621 lines in 10 s were etcd "request stats").
func (c *Target) journalExcerpt(ctx context.Context, since string) []string {
	// A fresh context: the step's may have timed out already, and the
	// journal is what tells the operator why.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	sel := "--since @" + since
	if since == "" {
		sel = "-n 2000"
	}
	line := fmt.Sprintf("journalctl -u %s %s --no-pager -o short-iso | tail -n 5000", transport.ShellQuote(c.Node.K3s.Service), sel)
	var out, errb strings.Builder
	_, err := c.Exec.Run(ctx, transport.Command{Line: line, Stdout: &out, Stderr: &errb})
	text := strings.TrimRight(out.String(), "\n")
	if err != nil && text == "" {
		return []string{fmt.Sprintf("(%s failed: %v)", line, err)}
	}
	return excerpt(strings.Split(text, "\n"), journalExcerptLines)
}

// excerpt picks at most max lines of a journal: error and fatal lines of
// K3s first (deduplicated by message, newest kept), then the tail of the
// other meaningful lines.
func excerpt(lines []string, max int) []string {
	var errs, rest []string
	seen := map[string]int{}
	for _, l := range lines {
		body := shortJournalLine(l)
		switch {
		case l == "" || strings.HasPrefix(body, "{"): // etcd's JSON records
		case errorLine.MatchString(l):
			if i, ok := seen[body]; ok {
				errs = append(errs[:i], errs[i+1:]...)
				for k, v := range seen {
					if v > i {
						seen[k] = v - 1
					}
				}
			}
			seen[body] = len(errs)
			errs = append(errs, l)
		case len(body) > 5 && body[0] == 'I' && body[1] >= '0' && body[1] <= '9': // klog info
		default:
			rest = append(rest, l)
		}
	}
	if len(errs) > max/2 {
		errs = errs[len(errs)-max/2:]
	}
	room := max - len(errs)
	if len(errs) > 0 {
		room-- // the separator line
	}
	if len(rest) > room {
		rest = rest[len(rest)-room:]
	}
	out := append([]string{}, errs...)
	if len(errs) > 0 && len(rest) > 0 {
		out = append(out, "-- the last other lines since the restart:")
	}
	return append(out, rest...)
}

// unitPollInterval is how often a restart asks systemd for the unit's
// state: one `systemctl show` on the node's open SSH connection.
const unitPollInterval = 250 * time.Millisecond

// pollEvery calls fn every interval until it reports done, ctx ends, or
// fn fails.
func pollEvery(ctx context.Context, interval time.Duration, fn func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := fn()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// poll calls fn until it reports done, ctx ends, or fn fails, waiting
// longer between calls (up to a second) the longer it takes.
func poll(ctx context.Context, fn func() (bool, error)) error {
	wait := 200 * time.Millisecond
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

// adminCert is the server's admin client certificate (SD/tls/client-admin
// .crt/.key), which /readyz needs when the API server refuses anonymous
// requests, as K3s configures it. nil when the node has none.
func (c *Target) adminCert(ctx context.Context) *tls.Certificate {
	crt, key := c.sd()+"/tls/client-admin.crt", c.sd()+"/tls/client-admin.key"
	files, err := c.fetchMap(ctx, crt, key)
	if err != nil {
		return nil
	}
	pair, err := tls.X509KeyPair(files[crt].Data, files[key].Data)
	if err != nil {
		return nil
	}
	return &pair
}

func (c *Target) waitReady(ctx context.Context, res *RestartResult) error {
	var last string
	admin := c.adminCert(ctx)
	err := poll(ctx, func() (bool, error) {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		code, body, err := c.supervisorGet(pctx, "/readyz", admin)
		switch {
		case err != nil:
			last = err.Error()
		case (code == http.StatusUnauthorized || code == http.StatusForbidden) && admin == nil:
			// Up and answering; without the admin certificate caretaker
			// cannot ask whether it is ready.
			c.Run.Output(runner.StreamLog, fmt.Sprintf("/readyz answers HTTP %d without credentials and %s/tls/client-admin.crt is missing: taking the answer as up", code, c.sd()))
			return true, nil
		case code != http.StatusOK:
			last = fmt.Sprintf("HTTP %d %s", code, strings.TrimSpace(string(body)))
		default:
			return true, nil
		}
		return false, nil
	})
	if err != nil && timedOut(ctx) {
		res.OK = false
		res.reason = fmt.Sprintf("/readyz on %s did not answer ok in time (last: %s)", c.Node.K3s.SupervisorEndpoint, last)
		if st, err := c.unitShow(context.WithoutCancel(ctx)); err == nil {
			res.State, res.Substate = st.active, st.sub
		}
		return nil
	}
	return err
}

// Restart restarts the node's K3s service without blocking on systemd
// and waits until a new invocation is active and, on servers, /readyz
// answers on the supervisor port. K3s's new error lines are shown while it
// waits; a crash loop on one fatal error ends the wait early. When K3s does
// not come up, the journal lines that explain it are shown and, with
// o.Fail, it is an error.
func Restart(ctx context.Context, c *Target, o RestartOptions) (*RestartResult, error) {
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	res, err := c.restart(ctx, o)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: %s on %s: %w", c.Op, c.Node.K3s.Service, c.Node.Name, err)
		}
		return nil, err
	}
	res.Seconds = res.took.Seconds()
	switch {
	case !res.OK:
		for _, l := range res.Journal {
			c.Run.Output(runner.StreamStderr, l)
		}
		res.Error = fmt.Sprintf("%s: %s did not come back on %s: %s", c.Op, c.Node.K3s.Service, c.Node.Name, res.reason)
		if o.Fail {
			return nil, fmt.Errorf("%s; journal since the restart (errors first):\n%s", res.Error, strings.Join(res.Journal, "\n"))
		}
	case restarted(res):
		c.Run.Output(runner.StreamLog, fmt.Sprintf("%s is up after %s", c.Node.K3s.Service, res.took.Round(time.Millisecond)))
	}
	return &res, nil
}
