package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// report gathers every section's figures.
type report struct {
	cfg                   *config
	started               time.Time
	took                  time.Duration
	env                   envInfo
	loadBefore, loadAfter string
	compare               *compareResult
	overhead              *overheadResult
	check                 *checkResult
	rotate                *rotateResult
	rotateReal            *rotateRealResult
}

// median of a list of durations (mean of the middle two for even counts).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func minMax(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	lo, hi := ds[0], ds[0]
	for _, d := range ds {
		lo, hi = min(lo, d), max(hi, d)
	}
	return lo, hi
}

// target is one line of the targets table.
type target struct {
	what, goal, got string
	met             *bool // nil: not measured
}

func yes(b bool) *bool { return &b }

// ratio of caretaker's median to another runner's at n, if both ran
// cleanly.
func (c *compareResult) ratio(other string, n int) (float64, bool) {
	a, b := c.get(rCaretaker, n), c.get(other, n)
	if a == nil || b == nil || len(a.times) == 0 || len(b.times) == 0 || len(a.failures) > 0 || len(b.failures) > 0 {
		return 0, false
	}
	return median(a.times).Seconds() / median(b.times).Seconds(), true
}

// ratioLines are `ratio caretaker/X N=n: r` for every measured pair.
func (r *report) ratioLines() []string {
	var out []string
	if r.compare == nil || r.compare.skipped != "" {
		return nil
	}
	for _, n := range r.compare.sizes {
		for _, other := range []string{rAnsibleDefault, rAnsibleTuned, rPSSH, rRaw} {
			if v, ok := r.compare.ratio(other, n); ok {
				out = append(out, fmt.Sprintf("ratio caretaker/%s N=%d: %.3f", other, n, v))
			}
		}
	}
	return out
}

func (r *report) targets() []target {
	var ts []target
	bigN := 50
	if r.compare != nil && len(r.compare.sizes) > 0 {
		bigN = r.compare.sizes[len(r.compare.sizes)-1]
	}
	cmp := func(other, goal string, limit float64) {
		t := target{what: fmt.Sprintf("caretaker/%s at N=%d", other, bigN), goal: goal, got: "not measured"}
		if r.compare != nil {
			if v, ok := r.compare.ratio(other, bigN); ok {
				t.got = fmt.Sprintf("%.3f (%.1f× faster)", v, 1/v)
				if other == rPSSH {
					t.got = fmt.Sprintf("%.2f", v)
				}
				t.met = yes(v <= limit)
			}
		}
		ts = append(ts, t)
	}
	cmp(rAnsibleDefault, "≤ 0.05 (≥ 20× faster)", 0.05)
	cmp(rAnsibleTuned, "≤ 0.2 (≥ 5× faster)", 0.2)
	cmp(rPSSH, "≤ 1.2", 1.2)
	t := target{what: "runner overhead per step per node", goal: "< 1 ms", got: "not measured"}
	if r.overhead != nil {
		if b := r.overhead.find("BenchmarkRunnerOverhead"); b != nil {
			v := b.metrics["overhead-ms/step"]
			t.got, t.met = fmt.Sprintf("%.3f ms", v), yes(v < 1)
		}
	}
	ts = append(ts, t)
	t1 := target{what: "`caretaker check` on 1,000 nodes: wall", goal: "< 10 s", got: "not measured"}
	t2 := target{what: "`caretaker check` on 1,000 nodes: peak RSS", goal: "< 300 MB", got: "not measured"}
	if c := r.check; c != nil {
		if s := c.full(1000); s != nil {
			w, m := median(s.walls), mb(maxOf(s.rss))
			t1.got, t2.got = fmt.Sprintf("%.2f s", w.Seconds()), fmt.Sprintf("%.0f MB", m)
			if s.merged > 0 {
				t1.got += fmt.Sprintf(" (%d labs merged)", s.merged)
				t2.got += fmt.Sprintf(" (%d labs merged)", s.merged)
			}
			t1.met, t2.met = yes(w < 10*time.Second), yes(m < 300)
		} else if s := c.failedAt(1000); s != nil && len(s.walls) > 0 {
			t1.got = fmt.Sprintf("FAILED after %.1f s: %s", s.walls[len(s.walls)-1].Seconds(), s.short)
			t2.got = fmt.Sprintf("%.0f MB in the failed run", mb(maxOf(s.rss)))
			t1.met, t2.met = yes(false), yes(mb(maxOf(s.rss)) < 300)
		} else if s := c.failedAt(1000); s != nil {
			t1.got = "FAILED: " + firstN(s.err, 120)
		} else if s := c.full(1); s != nil {
			t1.got = fmt.Sprintf("%.2f s (only %d nodes)", median(s.walls).Seconds(), s.nodes)
			t2.got = fmt.Sprintf("%.0f MB (only %d nodes)", mb(maxOf(s.rss)), s.nodes)
		}
	}
	ts = append(ts, t1, t2)
	t = target{what: "rotate-ca on 3 servers + 2 agents: wall / restart waits", goal: "≤ 1.2", got: "not measured"}
	if rr := r.rotate; rr != nil && rr.err == "" && rr.waits > 0 {
		v := rr.ratio()
		t.got, t.met = fmt.Sprintf("%.2f (%.2f s / %.2f s)", v, rr.wall.Seconds(), rr.waits.Seconds()), yes(v <= 1.2)
	}
	ts = append(ts, t)
	t1 = target{what: "rotate-ca on 3 real K3s servers: wall / restart waits", goal: "≤ 1.1", got: "not measured"}
	t2 = target{what: "real engine: 3 K3s servers ready (cached root filesystem)", goal: "< 90 s", got: "not measured"}
	if rr := r.rotateReal; rr != nil && rr.real != nil && rr.real.err == "" && rr.real.waits > 0 {
		v := rr.real.ratio()
		t1.got, t1.met = fmt.Sprintf("%.2f (%.2f s / %.2f s)", v, rr.real.wall.Seconds(), rr.real.waits.Seconds()), yes(v <= 1.1)
		up := rr.real.bringUp.Seconds()
		t2.got = fmt.Sprintf("%.1f s", up)
		if rr.cached {
			t2.met = yes(up < 90)
		} else {
			t2.got += " (the root filesystem was built in this run)"
		}
	}
	ts = append(ts, t1, t2)
	return ts
}

func (t target) verdict() string {
	switch {
	case t.met == nil:
		return "—"
	case *t.met:
		return "met"
	default:
		return "MISSED"
	}
}

// failed reports whether any run failed its own verification or a
// section broke (a piece that is simply missing does not count).
func (r *report) failed() bool {
	if c := r.compare; c != nil {
		if len(c.labErr) > 0 {
			return true
		}
		for _, m := range c.series {
			for _, s := range m {
				if len(s.failures) > 0 {
					return true
				}
			}
		}
	}
	if r.overhead != nil && r.overhead.err != "" {
		return true
	}
	if r.check != nil && r.check.failed() {
		return true
	}
	if r.rotate != nil && r.rotate.err != "" {
		return true
	}
	if rr := r.rotateReal; rr != nil && ((rr.real != nil && rr.real.err != "") || (rr.sim != nil && rr.sim.err != "")) {
		return true
	}
	return false
}

// summary is what the harness prints at the end.
func (r *report) summary() string {
	var b strings.Builder
	b.WriteString("== caretaker benchmark ==\n")
	fmt.Fprintf(&b, "machine: %s; load before %s, after %s\n", r.env.cpu, r.loadBefore, r.loadAfter)
	if c := r.compare; c != nil {
		if c.skipped != "" {
			fmt.Fprintf(&b, "comparison: NOT RUN: %s\n", c.skipped)
		} else {
			b.WriteString(r.compareTable(false))
			for _, l := range r.ratioLines() {
				b.WriteString(l + "\n")
			}
		}
	}
	if o := r.overhead; o != nil {
		if o.err != "" {
			fmt.Fprintf(&b, "overhead: FAILED: %s\n", o.err)
		} else if x := o.find("BenchmarkRunnerOverhead"); x != nil {
			fmt.Fprintf(&b, "runner overhead: %.3f ms per step per node (raw session %.3f ms, caretaker step %.3f ms, ratio %.2f)\n",
				x.metrics["overhead-ms/step"], x.metrics["raw-ms/step"], x.metrics["caretaker-ms/step"], x.metrics["ratio"])
		}
		if x := o.find("BenchmarkFanOut200"); x != nil {
			fmt.Fprintf(&b, "fan-out 200 in-process nodes: %.2f s wall, %.0f MB peak heap\n", x.metrics["wall-s"], x.metrics["peak-heap-MB"])
		}
	}
	if c := r.check; c != nil {
		for _, s := range c.series {
			switch {
			case s.err != "":
				fmt.Fprintf(&b, "check on %d nodes (%s): FAILED: %s\n", s.nodes, s.label, s.err)
			case len(s.walls) > 0:
				fmt.Fprintf(&b, "check on %d in-process nodes (%s): %.2f s wall (median of %d), peak RSS %.0f MB\n",
					s.nodes, s.label, median(s.walls).Seconds(), len(s.walls), mb(maxOf(s.rss)))
			}
		}
		if c.missing != "" {
			fmt.Fprintf(&b, "check: MISSING PIECE: %s\n", c.missing)
		}
	}
	if rr := r.rotate; rr != nil {
		switch {
		case rr.missing != "":
			fmt.Fprintf(&b, "rotate-ca: NOT RUN: %s\n", rr.missing)
		case rr.err != "":
			fmt.Fprintf(&b, "rotate-ca: FAILED: %s\n", rr.err)
		default:
			fmt.Fprintf(&b, "rotate-ca on 3 servers + 2 agents: %.2f s wall, %d restarts %.2f s: ratio %.2f; the rest %.2f s\n", rr.wall.Seconds(), rr.nRestart, rr.waits.Seconds(), rr.ratio(), (rr.wall - rr.waits).Seconds())
		}
	}
	b.WriteString("targets:\n")
	for _, t := range r.targets() {
		fmt.Fprintf(&b, "  %-58s %-24s %-8s %s\n", t.what, t.goal, t.verdict(), t.got)
	}
	return b.String()
}

// compareTable renders medians (min–max) per runner and N.
func (r *report) compareTable(md bool) string {
	c := r.compare
	var b strings.Builder
	if md {
		b.WriteString("| runner, cold connections |")
		for _, n := range c.sizes {
			fmt.Fprintf(&b, " N=%d |", n)
		}
		b.WriteString("\n|---|")
		for range c.sizes {
			b.WriteString("---|")
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "%-18s", "median (min-max)")
		for _, n := range c.sizes {
			fmt.Fprintf(&b, " %22s", fmt.Sprintf("N=%d", n))
		}
		b.WriteString("\n")
	}
	labels := map[string]string{
		rCaretaker:      "caretaker",
		rAnsibleDefault: "Ansible, forks 5, pipelining off (defaults)",
		rAnsibleTuned:   "Ansible, forks 50, pipelining on",
		rPSSH:           "parallel-ssh -p 50",
		rRaw:            "floor: plain x/crypto/ssh, one goroutine per node, no playbook",
	}
	for _, name := range runnerNames {
		if _, ok := c.series[name]; !ok {
			continue
		}
		if md {
			fmt.Fprintf(&b, "| %s |", labels[name])
		} else {
			fmt.Fprintf(&b, "%-18s", name)
		}
		for _, n := range c.sizes {
			s := c.get(name, n)
			cellText := "—"
			switch {
			case s == nil && c.labErr[n] != "":
				cellText = "lab failed"
			case s == nil:
			case s.missing != "":
				cellText = "not installed"
			case len(s.failures) > 0:
				cellText = fmt.Sprintf("FAILED %d/%d", len(s.failures), len(s.failures)+len(s.times))
			case len(s.times) > 0:
				lo, hi := minMax(s.times)
				cellText = fmt.Sprintf("%.2f s (%.2f–%.2f)", median(s.times).Seconds(), lo.Seconds(), hi.Seconds())
			}
			if md {
				fmt.Fprintf(&b, " %s |", cellText)
			} else {
				fmt.Fprintf(&b, " %22s", cellText)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// markdown renders bench/results.md.
func (r *report) markdown() string {
	var b strings.Builder
	cfg := r.cfg
	r.markdownHeader(&b)
	r.markdownCompare(&b)
	r.markdownOverhead(&b)
	r.markdownCheck(&b)
	r.markdownRotate(&b)
	b.WriteString(r.rotateRealMarkdown())

	if notes, err := os.ReadFile(filepath.Join(cfg.repo, "bench", "profiling.md")); err == nil {
		b.WriteString("\n")
		b.Write(notes)
	}
	b.WriteString("\n## Reproduce\n\n```sh\nsudo make bench        # installs openssh-server, ansible, pssh with apt when missing; ~10 min\n")
	b.WriteString("bash bench/run.sh -only compare -sizes 50 -runs 5    # one section, other sizes\n```\n")
	return b.String()
}

// markdownHeader writes the title, the machine and the targets table.
func (r *report) markdownHeader(b *strings.Builder) {
	b.WriteString("# Benchmark results\n\n")
	b.WriteString("Written by `make bench` (bench/run.sh → bench/harness); rerun it to refresh. Figures are wall-clock\n")
	b.WriteString("times on a shared machine: compare rows, not absolutes.\n\n")
	fmt.Fprintf(b, "- date: %s; the whole benchmark took %s\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.took.Round(time.Second))
	fmt.Fprintf(b, "- machine: %s, Linux %s\n", r.env.cpu, r.env.kernel)
	fmt.Fprintf(b, "- load average (1/5/15 min): %s before, %s after (other work shares these cores)\n", r.loadBefore, r.loadAfter)
	for _, v := range r.env.versions {
		fmt.Fprintf(b, "- %s\n", v)
	}

	b.WriteString("\n## Targets\n\n| what | target | result | figure |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.what, t.goal, t.verdict(), t.got)
	}
}

// markdownCompare writes the section comparing the runners on real OpenSSH nodes.
func (r *report) markdownCompare(b *strings.Builder) {
	cfg := r.cfg
	b.WriteString("\n## Same job, three runners, real OpenSSH nodes\n\n")
	b.WriteString("Job: on every node archive `server/tls` to a timestamped private backup and return the sha256 of\n")
	b.WriteString("`server/tls/server-ca.crt` to the controller (`bench/tls-backup.star`, `bench/ansible/tls-backup.yml`, and\n")
	b.WriteString("parallel-ssh with the same shell command). Nodes: `caretaker lab up --ssh openssh` (one OpenSSH sshd per\n")
	b.WriteString("node in its own mount namespace, loopback addresses). Every run is cold (a fresh process, no\n")
	b.WriteString("connection kept from an earlier run: Ansible gets a fresh ControlMaster directory per run and its\n")
	b.WriteString("masters are closed afterwards) and is verified: N checksums, each equal to the sha256 of the node's\n")
	b.WriteString("file as read on this machine, and exactly one new 0600 archive per node; a run that fails that is\n")
	b.WriteString("reported as FAILED and not timed. ")
	fmt.Fprintf(b, "%d runs per cell, interleaved (caretaker, ansible-default, ansible-tuned, pssh, raw-go, then again);\n", cfg.runs)
	b.WriteString("median with min–max. The last row is the floor: a fresh Go process (`bench/harness raw-ssh`) that dials\n")
	b.WriteString("every node with plain golang.org/x/crypto/ssh and runs the command in one session, without playbook,\n")
	b.WriteString("events, journal or locks. Ansible runs without fact gathering (the job needs none) and with\n")
	b.WriteString("`interpreter_python` set, both in its favour; OpenSSH clients use their default key exchange.\n\n")
	if c := r.compare; c == nil {
		b.WriteString("Not run this time (`-only`).\n")
	} else if c.skipped != "" {
		fmt.Fprintf(b, "**Not run: %s.**\n", c.skipped)
	} else {
		b.WriteString(r.compareTable(true))
		b.WriteString("\n```\n")
		for _, l := range r.ratioLines() {
			b.WriteString(l + "\n")
		}
		b.WriteString("```\n")
		if s := c.get(rCaretaker, cfg.sizes[len(cfg.sizes)-1]); s != nil && len(s.rss) > 0 {
			fmt.Fprintf(b, "\ncaretaker's peak RSS at N=%d: %.0f MB.\n", s.n, mb(maxOf(s.rss)))
		}
		var notes []string
		for _, name := range runnerNames {
			for _, n := range c.sizes {
				s := c.get(name, n)
				if s == nil {
					continue
				}
				if s.missing != "" && n == c.sizes[0] {
					notes = append(notes, fmt.Sprintf("%s not run: %s", name, s.missing))
				}
				for _, f := range s.failures {
					notes = append(notes, fmt.Sprintf("%s N=%d FAILED %s", name, n, f))
				}
			}
		}
		for n, e := range c.labErr {
			notes = append(notes, fmt.Sprintf("N=%d: the lab did not come up: %s", n, e))
		}
		if len(notes) > 0 {
			b.WriteString("\n")
			for _, n := range notes {
				fmt.Fprintf(b, "- %s\n", n)
			}
		}
	}
}

// markdownOverhead writes the section of the runner-overhead Go benchmarks.
func (r *report) markdownOverhead(b *strings.Builder) {
	b.WriteString("\n## Runner overhead (Go benchmarks, in-process SSH)\n\n")
	if o := r.overhead; o == nil {
		b.WriteString("Not run this time (`-only`).\n")
	} else if o.err != "" {
		fmt.Fprintf(b, "**FAILED:** %s\n", o.err)
	} else {
		if x := o.find("BenchmarkRunnerOverhead"); x != nil {
			fmt.Fprintf(b, "One step running `true` on one node, %d times (plan → run → Starlark → executor → SSH session →\n", x.iters)
			b.WriteString("events) against the same command on a raw x/crypto/ssh session over a kept connection:\n\n")
			b.WriteString("| raw session | caretaker step | overhead per step per node | ratio |\n|---|---|---|---|\n")
			fmt.Fprintf(b, "| %.3f ms | %.3f ms | %.3f ms | %.2f |\n", x.metrics["raw-ms/step"], x.metrics["caretaker-ms/step"], x.metrics["overhead-ms/step"], x.metrics["ratio"])
		}
		if x := o.find("BenchmarkFanOut200"); x != nil {
			fmt.Fprintf(b, "\nFan-out: one step on 200 in-process SSH nodes at once, cold: %.2f s wall, %.0f MB peak heap.\n", x.metrics["wall-s"], x.metrics["peak-heap-MB"])
		}
		b.WriteString("\n```\n" + strings.Join(o.cmd, "\n") + "\n```\n")
	}
}

// markdownCheck writes the section of `caretaker check` at scale.
func (r *report) markdownCheck(b *strings.Builder) {
	cfg := r.cfg
	b.WriteString("\n## `caretaker check` at scale (in-process lab)\n\n")
	if c := r.check; c == nil {
		b.WriteString("Not run this time (`-only`).\n")
	} else {
		if c.missing != "" {
			fmt.Fprintf(b, "**Missing piece:** %s. Measured instead: one lab of %d nodes, and %d nodes from several\n", c.missing, labMax, cfg.checkN)
			b.WriteString("labs merged into one inventory (their datastores and CAs differ, so the expected verdict is broken, exit 1: every\n")
			b.WriteString("node outside the first lab is named, its servers reading another datastore; the harness checks exactly that;\n")
			b.WriteString("several lab daemons and etcds share the cores).\n\n")
		}
		b.WriteString("`caretaker check -i INV -o json`, in-process lab nodes (the lab daemons share the 2 cores), a fresh\n")
		b.WriteString("process per run, 3 runs; wall is the median, peak RSS the maximum over the runs (getrusage).\n\n")
		b.WriteString("CPU is user + system time (medians): caretaker's process, and the lab daemons' (their SSH servers,\n")
		b.WriteString("the shells and tools they run, etcd), which run on the same two cores: on a real cluster that part\n")
		b.WriteString("runs on the nodes. Their sum over two cores bounds the wall time from below.\n\n")
		b.WriteString("| inventory | nodes | wall (median, min–max) | CPU caretaker | CPU lab | peak RSS | result |\n|---|---|---|---|---|---|---|\n")
		for _, s := range c.series {
			if s.err != "" {
				fmt.Fprintf(b, "| %s | %d | **FAILED** | | | %.0f MB | %s |\n", s.label, s.nodes, mb(maxOf(s.rss)), s.err)
				continue
			}
			lo, hi := minMax2(s.walls)
			fmt.Fprintf(b, "| %s | %d | %.2f s (%.2f–%.2f) | %.2f s | %.2f s | %.0f MB | %s |\n", s.label, s.nodes, median(s.walls).Seconds(), lo, hi,
				median(s.cpu).Seconds(), median(s.labCPU).Seconds(), mb(maxOf(s.rss)), firstN(s.summary, 90))
		}
	}
}

// markdownRotate writes the section of rotate-ca on the 3-server + 2-agent lab.
func (r *report) markdownRotate(b *strings.Builder) {
	b.WriteString("\n## rotate-ca on the 3-server + 2-agent lab\n\n")
	if rr := r.rotate; rr == nil {
		b.WriteString("Not run this time (`-only`).\n")
	} else if rr.missing != "" {
		fmt.Fprintf(b, "**Not run:** %s.\n", rr.missing)
	} else if rr.err != "" {
		fmt.Fprintf(b, "**FAILED:** %s\n", rr.err)
	} else {
		if rr.startDelay > 0 {
			fmt.Fprintf(b, "The lab models K3s's start-up time: every service start takes %s (`caretaker lab up --start-delay %s`;\n", rr.startDelay, rr.startDelay)
			b.WriteString("real K3s servers took 10–15 s per restart in the captured run, shared/k3s-golden).\n\n")
		} else if rr.noDelay != "" {
			fmt.Fprintf(b, "**Note:** %s.\n\n", rr.noDelay)
		}
		fmt.Fprintf(b, "`caretaker run rotate-ca --yes -o json` on a fresh in-process lab: **%.2f s** wall (the run itself: %.2f s).\n", rr.wall.Seconds(), rr.runDur.Seconds())
		fmt.Fprintf(b, "Its %d service restarts, each from `systemctl restart` until the service is active (and `/readyz` answers\n", rr.nRestart)
		fmt.Fprintf(b, "on servers) as k3s.restart reports it, cover **%.2f s** of wall time (overlaps counted once): ratio **%.2f**;\n", rr.waits.Seconds(), rr.ratio())
		fmt.Fprintf(b, "everything else (facts, preflight, backups, CA generation, rotate-ca, verifications, restore, process\n")
		fmt.Fprintf(b, "start) takes **%.2f s**. Afterwards `caretaker check` finds the cluster healthy.\n\n", (rr.wall - rr.waits).Seconds())
		b.WriteString("| # | step | nodes | span | restart |\n|---|---|---|---|---|\n")
		restart := map[string]bool{}
		for _, s := range rr.restarts {
			restart[s.step] = true
		}
		for _, s := range rr.steps {
			mark := ""
			if restart[s.name] {
				mark = "yes"
			}
			fmt.Fprintf(b, "| %d | %s | %d | %.2f s | %s |\n", s.index, s.name, s.nodes, s.span.Seconds(), mark)
		}
	}
}

func minMax2(ds []time.Duration) (float64, float64) {
	lo, hi := minMax(ds)
	return lo.Seconds(), hi.Seconds()
}

// rotateRealMarkdown is the section of rotate-ca on 3 servers of each
// engine.
func (r *report) rotateRealMarkdown() string {
	var b strings.Builder
	b.WriteString("\n## rotate-ca on 3 servers: real K3s beside the simulator\n\n")
	rr := r.rotateReal
	switch {
	case rr == nil:
		b.WriteString("Not run this time (`-only`).\n")
		return b.String()
	case rr.missing != "":
		fmt.Fprintf(&b, "**Not run:** %s.\n", rr.missing)
		return b.String()
	}
	b.WriteString("The same topology on both engines: 3 servers, the cluster-init server replaced (every server joins through a\n")
	b.WriteString("peer), the bootstrap bug k3s#11233 on (`--bootstrap-bug`), `caretaker run rotate-ca --yes -o json`, then\n")
	b.WriteString("`caretaker check`. Restart waits are the restarts as k3s.restart reports them (from `systemctl restart\n")
	b.WriteString("--no-block` until the unit is active and `/readyz` answers), overlaps counted once.\n\n")
	b.WriteString("| | real engine | simulator |\n|---|---|---|\n")
	cell := func(x *rotateResult, f func(*rotateResult) string) string {
		switch {
		case x == nil:
			return "not run"
		case x.err != "":
			return "FAILED: " + firstN(x.err, 80)
		}
		return f(x)
	}
	row := func(label string, f func(*rotateResult) string) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", label, cell(rr.real, f), cell(rr.sim, f))
	}
	row("lab up (3 servers ready)", func(x *rotateResult) string { return fmt.Sprintf("%.1f s", x.bringUp.Seconds()) })
	row("rotate-ca wall", func(x *rotateResult) string { return fmt.Sprintf("%.2f s", x.wall.Seconds()) })
	row("restarts", func(x *rotateResult) string { return fmt.Sprint(x.nRestart) })
	row("restart waits", func(x *rotateResult) string { return fmt.Sprintf("%.2f s", x.waits.Seconds()) })
	row("wall / restart waits", func(x *rotateResult) string { return fmt.Sprintf("**%.2f**", x.ratio()) })
	row("everything else", func(x *rotateResult) string { return fmt.Sprintf("%.2f s", (x.wall - x.waits).Seconds()) })
	if rr.sim != nil && rr.sim.startDelay > 0 {
		fmt.Fprintf(&b, "\nThe simulator models K3s's start-up time with `--start-delay %s`.", rr.sim.startDelay)
	}
	if !rr.cached {
		b.WriteString(" The real engine's root filesystem was built during this run (once per machine, ~35 s), so its lab-up time includes the build.")
	}
	b.WriteString("\n")
	return b.String()
}
