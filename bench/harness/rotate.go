package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/caretaker/caretaker/lab/realnode"
)

// rotateResult is the rotate-ca section.
type rotateResult struct {
	err      string
	missing  string
	wall     time.Duration // the caretaker process, start to exit
	runDur   time.Duration // run_done's duration
	waits    time.Duration // the restarts themselves, on the critical path
	nRestart int           // restarts seen
	restarts []restartSpan
	steps    []stepSpan
	status   string
	// startDelay is the lab's modelled K3s start-up time; noDelay says
	// why there is none.
	startDelay time.Duration
	noDelay    string
	// bringUp is how long `caretaker lab up` took.
	bringUp time.Duration
}

// restartSpan is one step whose cells restart services: its wall span
// (first start to last done) is time the run has to wait.
type restartSpan struct {
	step  string
	nodes int
	span  time.Duration
}

// stepSpan is one step's wall span in the run.
type stepSpan struct {
	index int
	name  string
	nodes int
	span  time.Duration
	sum   time.Duration
}

// runRotate runs the shipped rotate-ca playbook on a fresh 3-server +
// 2-agent simulator lab and compares its wall time with the time its
// service restarts take.
func runRotate(ctx context.Context, cfg *config) *rotateResult {
	return runRotateOn(ctx, cfg, "rotate", []string{"--ssh", "inprocess", "--servers", "3", "--agents", "2"}, true)
}

// runRotateReal is rotate-ca on 3 servers of each engine, side by side:
// the real engine (real K3s in systemd-nspawn machines, the bootstrap bug
// toggled on) and the simulator with the same topology.
func runRotateReal(ctx context.Context, cfg *config) *rotateRealResult {
	rr := &rotateRealResult{}
	_, err := os.Stat(realnode.DefaultCacheDir)
	rr.cached = err == nil
	if err := realnode.Available(); err != nil {
		rr.missing = err.Error()
		say("rotate-ca on the real engine: NOT RUN: %s", rr.missing)
		return rr
	}
	common := []string{"--servers", "3", "--scenario", "init-replaced", "--bootstrap-bug"}
	rr.real = runRotateOn(ctx, cfg, "rotate-real", append([]string{"--engine", "real"}, common...), false)
	rr.sim = runRotateOn(ctx, cfg, "rotate-real-sim", append([]string{"--agents", "0"}, common...), true)
	return rr
}

// rotateRealResult is the rotate-real section.
type rotateRealResult struct {
	missing   string
	cached    bool // the real engine's root filesystem was built before
	real, sim *rotateResult
}

// runRotateOn brings up a lab with labArgs, runs rotate-ca on it and
// checks the result with `caretaker check`. delay adds the configured
// --start-delay (simulator only).
func runRotateOn(ctx context.Context, cfg *config, name string, labArgs []string, delay bool) *rotateResult {
	r := &rotateResult{}
	o, err := execTimed(ctx, time.Minute, cfg.work, nil, cfg.caretaker, "playbooks")
	if err != nil || !strings.Contains(string(o.stdout), "rotate-ca") {
		r.missing = "the rotate-ca playbook is not shipped yet (`caretaker playbooks` does not list it)"
		say("rotate-ca: NOT RUN: %s", r.missing)
		return r
	}
	args := append([]string{}, labArgs...)
	if delay && cfg.startDelay > 0 {
		args = append(args, "--start-delay", cfg.startDelay.String())
		r.startDelay = cfg.startDelay
	}
	began := time.Now()
	l, err := startLab(ctx, cfg, name, args...)
	r.bringUp = time.Since(began)
	if err != nil {
		r.err = err.Error()
		say("rotate-ca (%s): FAILED: %v", name, err)
		return r
	}
	defer l.stop(ctx)
	o, err = execTimed(ctx, 10*time.Minute, cfg.work, nil, cfg.caretaker, "run", "rotate-ca", "-i", l.inventory, "--yes", "-o", "json",
		"--state-dir", cfg.work+"/"+name+"-state")
	if err != nil {
		r.err = err.Error()
		return r
	}
	r.wall = o.wall
	if err := r.parse(o.stdout); err != nil {
		r.err = err.Error()
		return r
	}
	if o.code != 0 || r.status != "ok" {
		r.err = fmt.Sprintf("caretaker run rotate-ca exit %d, status %q: %s", o.code, r.status, tailOf(append(o.stderr, o.stdout...), 10))
		say("rotate-ca (%s): FAILED: %s", name, r.err)
		return r
	}
	// Independent check: the cluster is healthy on the new CA.
	c, err := execTimed(ctx, 5*time.Minute, cfg.work, nil, cfg.caretaker, "check", "-i", l.inventory)
	if err != nil || c.code != 0 {
		r.err = fmt.Sprintf("after rotate-ca, caretaker check exit %d: %v %s", c.code, err, tailOf(c.stdout, 5))
		return r
	}
	say("rotate-ca (%s): lab up in %.1f s; %.2f s wall (run %.2f s); %d restarts took %.2f s on the critical path; ratio %.2f; the rest: %.2f s",
		name, r.bringUp.Seconds(), r.wall.Seconds(), r.runDur.Seconds(), r.nRestart, r.waits.Seconds(), r.ratio(), (r.wall - r.waits).Seconds())
	return r
}

func (r *rotateResult) ratio() float64 {
	if r.waits <= 0 {
		return 0
	}
	return r.wall.Seconds() / r.waits.Seconds()
}

// parse reads rotate-ca's JSON events: per step the wall span and the
// cells; a step is a restart step when a cell's output says it ran
// `systemctl restart` (k3s.restart logs that line).
func (r *rotateResult) parse(out []byte) error {
	p := &rotateEvents{steps: map[int]*rotStep{}}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var ev rotEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return fmt.Errorf("rotate-ca printed a line that is not JSON: %.80q", line)
		}
		p.add(r, ev)
	}
	r.summarize(p)
	if (len(r.restarts) == 0 || len(p.waits) == 0) && r.status == "ok" {
		return fmt.Errorf("rotate-ca's events show no restart (`systemctl restart` and `... is up after D` lines from k3s.restart): cannot measure its waits")
	}
	return nil
}

// rotEvent is the part of a JSON event parse reads.
type rotEvent struct {
	Type     string    `json:"type"`
	Step     *int      `json:"step"`
	StepName string    `json:"step_name"`
	Node     string    `json:"node"`
	Text     string    `json:"text"`
	Status   string    `json:"status"`
	At       time.Time `json:"at"`
	Duration int64     `json:"duration_ns"`
}

// rotCell is one step on one node: when it started and ended.
type rotCell struct{ start, done time.Time }

// rotStep is one step of the run: its cells and whether it restarted K3s.
type rotStep struct {
	name    string
	cells   map[string]*rotCell
	restart bool
}

// rotateEvents collects the steps and restart waits of the events.
type rotateEvents struct {
	steps map[int]*rotStep
	waits []interval
}

// step returns step i, made on first use; a non-empty name names it.
func (p *rotateEvents) step(i int, name string) *rotStep {
	s := p.steps[i]
	if s == nil {
		s = &rotStep{name: name, cells: map[string]*rotCell{}}
		p.steps[i] = s
	}
	if name != "" {
		s.name = name
	}
	return s
}

// add takes one event in (run_done's status and duration go to r).
func (p *rotateEvents) add(r *rotateResult, ev rotEvent) {
	switch ev.Type {
	case "step_started":
		s := p.step(*ev.Step, ev.StepName)
		s.cells[ev.Node] = &rotCell{start: ev.At}
	case "step_done":
		s := p.step(*ev.Step, ev.StepName)
		c := s.cells[ev.Node]
		if c == nil {
			c = &rotCell{start: ev.At.Add(-time.Duration(ev.Duration))}
			s.cells[ev.Node] = c
		}
		c.done = ev.At
	case "output":
		text := strings.TrimSpace(ev.Text)
		// k3s.restart logs its command: "systemctl restart --no-block
		// <service>", after "touch .../dynamic-cert-regenerate && " on
		// the servers of a rotation.
		if ev.Step != nil && strings.Contains(text, "systemctl restart") {
			p.step(*ev.Step, "").restart = true
		}
		// k3s.restart logs "<service> is up after <duration>" when the
		// service is active again (and /readyz answers on servers).
		if _, d, ok := strings.Cut(text, " is up after "); ok {
			if took, err := time.ParseDuration(d); err == nil {
				p.waits = append(p.waits, interval{ev.At.Add(-took), ev.At})
			}
		}
	case "run_done":
		r.status = ev.Status
		r.runDur = time.Duration(ev.Duration)
	}
}

// summarize fills r's steps, restart steps and waits from the events, in
// step order.
func (r *rotateResult) summarize(p *rotateEvents) {
	idx := make([]int, 0, len(p.steps))
	for i := range p.steps {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		s := p.steps[i]
		var first, last time.Time
		var sum time.Duration
		for _, c := range s.cells {
			if first.IsZero() || c.start.Before(first) {
				first = c.start
			}
			if c.done.After(last) {
				last = c.done
			}
			if !c.done.IsZero() {
				sum += c.done.Sub(c.start)
			}
		}
		sp := stepSpan{index: i, name: s.name, nodes: len(s.cells), span: last.Sub(first), sum: sum}
		r.steps = append(r.steps, sp)
		if s.restart {
			r.restarts = append(r.restarts, restartSpan{step: s.name, nodes: len(s.cells), span: sp.span})
		}
	}
	r.nRestart = len(p.waits)
	r.waits = unionLength(p.waits)
}

// interval is a span of wall time.
type interval struct{ from, to time.Time }

// unionLength is the wall time covered by at least one interval: restarts
// that overlap (parallel ones) count once.
func unionLength(iv []interval) time.Duration {
	sort.Slice(iv, func(i, j int) bool { return iv[i].from.Before(iv[j].from) })
	var total time.Duration
	var cur interval
	for i, x := range iv {
		switch {
		case i == 0:
			cur = x
		case !x.from.After(cur.to):
			if x.to.After(cur.to) {
				cur.to = x.to
			}
		default:
			total += cur.to.Sub(cur.from)
			cur = x
		}
	}
	if len(iv) > 0 {
		total += cur.to.Sub(cur.from)
	}
	return total
}
