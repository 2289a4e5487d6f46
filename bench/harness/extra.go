package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// goBench is one benchmark's line of `go test -bench` output.
type goBench struct {
	name    string
	iters   int
	metrics map[string]float64 // unit → value
}

// parseGoBench reads the Benchmark lines of `go test -bench` output.
func parseGoBench(out string) []goBench {
	var list []goBench
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		iters, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		b := goBench{name: f[0], iters: iters, metrics: map[string]float64{}}
		if i := strings.LastIndexByte(b.name, '-'); i > 0 {
			if _, err := strconv.Atoi(b.name[i+1:]); err == nil {
				b.name = b.name[:i]
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			b.metrics[f[i+1]] = v
		}
		list = append(list, b)
	}
	return list
}

// overheadResult is the runner overhead section (Go benchmarks).
type overheadResult struct {
	err     string
	cmd     []string
	benches []goBench
	took    time.Duration
}

func (r *overheadResult) find(name string) *goBench {
	for i := range r.benches {
		if r.benches[i].name == name {
			return &r.benches[i]
		}
	}
	return nil
}

// runOverhead runs runner's BenchmarkRunnerOverhead (cfg.benchtime) and
// BenchmarkFanOut200 (once) and extracts their figures.
func runOverhead(ctx context.Context, cfg *config) *overheadResult {
	r := &overheadResult{}
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	runs := [][]string{
		{"test", "-run", "^$", "-bench", "^BenchmarkRunnerOverhead$", "-benchtime", cfg.benchtime, "-count", "1", "./runner/"},
		{"test", "-run", "^$", "-bench", "^BenchmarkFanOut200$", "-benchtime", "1x", "-count", "1", "./runner/"},
	}
	for _, args := range runs {
		say("overhead: go %s", strings.Join(args, " "))
		r.cmd = append(r.cmd, "go "+strings.Join(args, " "))
		o, err := execTimed(ctx, 10*time.Minute, cfg.repo, nil, "go", args...)
		if err == nil && o.code != 0 {
			err = fmt.Errorf("exit %d: %s", o.code, tailOf(append(o.stdout, o.stderr...), 15))
		}
		if err != nil {
			r.err = fmt.Sprintf("go %s: %v", strings.Join(args, " "), err)
			say("overhead: FAILED: %s", r.err)
			return r
		}
		bs := parseGoBench(string(o.stdout))
		if len(bs) == 0 {
			r.err = fmt.Sprintf("go %s printed no benchmark line: %s", strings.Join(args, " "), tailOf(o.stdout, 10))
			return r
		}
		r.benches = append(r.benches, bs...)
	}
	if b := r.find("BenchmarkRunnerOverhead"); b != nil {
		say("overhead: raw %.3f ms, caretaker %.3f ms, overhead %.3f ms per step per node (%d steps)",
			b.metrics["raw-ms/step"], b.metrics["caretaker-ms/step"], b.metrics["overhead-ms/step"], b.iters)
	}
	if b := r.find("BenchmarkFanOut200"); b != nil {
		say("fan-out 200: %.2f s wall, %.0f MB peak heap", b.metrics["wall-s"], b.metrics["peak-heap-MB"])
	}
	return r
}

// checkResult is the `caretaker check` at scale section.
type checkResult struct {
	missing string // a piece that is not there yet
	series  []*checkSeries
}

// checkSeries is `caretaker check` timed on one inventory.
type checkSeries struct {
	label   string
	nodes   int
	merged  int // labs merged into the inventory (0: one lab)
	labUp   time.Duration
	walls   []time.Duration
	rss     []int64
	cpu     []time.Duration
	labCPU  []time.Duration
	status  string
	summary string
	err     string
	short   string // the failure in a few words, for the targets table
}

// full returns the series that covers n nodes or more, preferring one lab.
func (r *checkResult) full(n int) *checkSeries {
	var best *checkSeries
	for _, s := range r.series {
		if s.nodes >= n && s.err == "" && len(s.walls) > 0 && (best == nil || s.merged < best.merged) {
			best = s
		}
	}
	return best
}

// failedAt returns a failed series of n nodes or more.
func (r *checkResult) failedAt(n int) *checkSeries {
	for _, s := range r.series {
		if s.nodes >= n && s.err != "" {
			return s
		}
	}
	return nil
}

func (r *checkResult) failed() bool {
	for _, s := range r.series {
		if s.err != "" {
			return true
		}
	}
	return false
}

// labMax is the most nodes one lab starts today (one /24 of loopback
// addresses).
const labMax = 250

// runCheck times `caretaker check` (fresh process, three runs) on an
// in-process lab of cfg.checkN nodes, recording wall time and peak RSS.
// While the lab cannot start that many nodes, it says so and measures a
// 250-node lab and, for the full count, several 250-node labs merged into
// one inventory.
func runCheck(ctx context.Context, cfg *config) *checkResult {
	r := &checkResult{}
	servers := min(3, cfg.checkN)
	start := time.Now()
	l, err := startLab(ctx, cfg, "check-"+strconv.Itoa(cfg.checkN), "--ssh", "inprocess",
		"--servers", strconv.Itoa(servers), "--agents", strconv.Itoa(cfg.checkN-servers))
	if err == nil {
		s := &checkSeries{label: fmt.Sprintf("%d servers + %d agents, one lab", servers, cfg.checkN-servers), nodes: len(l.nodes), labUp: time.Since(start)}
		r.series = append(r.series, s)
		timeCheck(ctx, cfg, s, l.inventory, len(l.nodes), []*runningLab{l})
		l.stop(ctx)
		return r
	}
	if cfg.checkN <= labMax || !strings.Contains(err.Error(), "at most 250 nodes") {
		r.series = append(r.series, &checkSeries{label: fmt.Sprintf("%d nodes", cfg.checkN), nodes: cfg.checkN, err: err.Error()})
		say("check: FAILED: %v", err)
		return r
	}
	r.missing = fmt.Sprintf("the lab cannot start %d nodes yet (%s)", cfg.checkN, lastLine(err.Error()))
	say("check: %s; measuring one lab of %d nodes and %d labs of %d merged into one inventory", r.missing, labMax, (cfg.checkN+labMax-1)/labMax, labMax)

	// One lab of 250 nodes.
	start = time.Now()
	one := &checkSeries{label: fmt.Sprintf("3 servers + %d agents, one lab", labMax-3), nodes: labMax}
	r.series = append(r.series, one)
	l, err = startLab(ctx, cfg, "check-"+strconv.Itoa(labMax), "--ssh", "inprocess", "--servers", "3", "--agents", strconv.Itoa(labMax-3))
	if err != nil {
		one.err = err.Error()
		return r
	}
	one.labUp = time.Since(start)
	timeCheck(ctx, cfg, one, l.inventory, len(l.nodes), []*runningLab{l})
	l.stop(ctx)

	// Several labs merged: the full node count, four datastores.
	k := (cfg.checkN + labMax - 1) / labMax
	merged := &checkSeries{label: fmt.Sprintf("%d labs of 3 servers + %d agents merged into one inventory", k, labMax-3), nodes: k * labMax, merged: k}
	r.series = append(r.series, merged)
	start = time.Now()
	var labs []*runningLab
	defer func() {
		for _, l := range labs {
			l.stop(ctx)
		}
	}()
	for i := 0; i < k; i++ {
		l, err := startLab(ctx, cfg, fmt.Sprintf("check-merged-%d", i+1), "--ssh", "inprocess", "--servers", "3", "--agents", strconv.Itoa(labMax-3))
		if err != nil {
			merged.err = err.Error()
			return r
		}
		labs = append(labs, l)
	}
	inv, err := mergeLabs(cfg, labs)
	if err != nil {
		merged.err = err.Error()
		return r
	}
	merged.labUp = time.Since(start)
	timeCheck(ctx, cfg, merged, inv, k*labMax, labs)
	return r
}

// timeCheck runs `caretaker check` three times on inv, recording wall
// time, peak RSS and CPU (caretaker's and the lab daemons'). With several
// labs the inventory spans that many clusters' worth of nodes with
// different datastores and CAs: the other labs' servers read another
// datastore (broken, exit 1) and their agents hold another CA (stale).
func timeCheck(ctx context.Context, cfg *config, s *checkSeries, inv string, nodes int, labs []*runningLab) {
	for i := 1; i <= 3 && ctx.Err() == nil; i++ {
		before := labCPU(labs)
		o, err := execTimed(ctx, 5*time.Minute, cfg.work, nil, cfg.caretaker, "check", "-i", inv, "-o", "json")
		lcpu := labCPU(labs) - before
		if err != nil {
			s.err = err.Error()
			return
		}
		var doc struct {
			Status      string `json:"status"`
			Summary     string `json:"summary"`
			Unreachable []struct {
				Node  string `json:"node"`
				Error string `json:"error"`
			} `json:"unreachable"`
			CA struct {
				Nodes []json.RawMessage `json:"nodes"`
				Stale []string          `json:"stale"`
			} `json:"ca"`
		}
		if err := json.Unmarshal(o.stdout, &doc); err != nil {
			s.err = fmt.Sprintf("caretaker check exit %d, output not JSON: %v: %s", o.code, err, firstN(tailOf(append(o.stdout, o.stderr...), 8), 400))
			return
		}
		s.status, s.summary = doc.Status, doc.Summary
		wantCode, wantStatus, wantStale := 0, "healthy", 0
		if len(labs) > 1 {
			// The servers of the other labs read their own datastores:
			// not servers of one cluster (exit 1), their agents stale.
			wantCode, wantStatus, wantStale = 1, "broken", nodes-nodes/len(labs)
		}
		s.walls = append(s.walls, o.wall)
		s.rss = append(s.rss, o.maxRSS)
		s.cpu = append(s.cpu, o.cpu)
		s.labCPU = append(s.labCPU, lcpu)
		if o.code != wantCode || doc.Status != wantStatus || len(doc.CA.Nodes) != nodes || len(doc.Unreachable) > 0 || len(doc.CA.Stale) != wantStale {
			why := ""
			if len(doc.Unreachable) > 0 {
				why = fmt.Sprintf("; first unreachable: %s", firstN(doc.Unreachable[0].Error, 200))
			}
			s.short = fmt.Sprintf("exit %d, status %s", o.code, doc.Status)
			if len(doc.Unreachable) > 0 {
				s.short = fmt.Sprintf("%d of %d nodes unreachable", len(doc.Unreachable), nodes)
			}
			s.err = fmt.Sprintf("run %d: caretaker check exit %d (want %d), status %q (want %q), %d unreachable, %d stale (want %d) of %d nodes after %.1f s, peak RSS %.0f MB%s",
				i, o.code, wantCode, doc.Status, wantStatus, len(doc.Unreachable), len(doc.CA.Stale), wantStale, nodes, o.wall.Seconds(), mb(o.maxRSS), why)
			say("check: FAILED: %s", s.err)
			return
		}
		say("check %d nodes (%s) run %d/3: %.2f s, CPU caretaker %.2f s + lab %.2f s, peak RSS %.0f MB: %s", nodes, s.label, i, o.wall.Seconds(), o.cpu.Seconds(), lcpu.Seconds(), mb(o.maxRSS), firstN(doc.Summary, 100))
	}
}

func firstN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// mergeLabs writes one inventory with every node of labs (names of later
// labs prefixed l2-, l3-, ...; each node keeps its lab's key) and one
// known_hosts with all their host keys.
func mergeLabs(cfg *config, labs []*runningLab) (string, error) {
	dir := filepath.Join(cfg.work, "check-merged")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	kh := filepath.Join(dir, "known_hosts")
	var khData []byte
	var cluster map[string]any
	var nodes []any
	for i, l := range labs {
		b, err := os.ReadFile(l.inventory)
		if err != nil {
			return "", err
		}
		var doc struct {
			Clusters []map[string]any `yaml:"clusters"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Clusters) != 1 {
			return "", fmt.Errorf("merge %s: want one cluster (%v)", l.inventory, err)
		}
		c := doc.Clusters[0]
		k, err := os.ReadFile(l.knownHost)
		if err != nil {
			return "", err
		}
		khData = append(khData, k...)
		for _, x := range c["nodes"].([]any) {
			n := x.(map[string]any)
			absPaths(l.dir, n)
			if i > 0 {
				n["name"] = fmt.Sprintf("l%d-%v", i+1, n["name"])
			}
			n["ssh"] = map[string]any{"identity_files": []any{l.key}}
			nodes = append(nodes, n)
		}
		if i == 0 {
			cluster = c
			ssh, _ := c["ssh"].(map[string]any)
			if ssh == nil {
				ssh = map[string]any{}
			}
			delete(ssh, "identity_files")
			ssh["known_hosts"] = kh
			if cf, ok := ssh["config_file"].(string); ok && !filepath.IsAbs(cf) {
				ssh["config_file"] = filepath.Join(l.dir, cf)
			}
			c["ssh"] = ssh
			c["name"] = "merged"
		}
	}
	cluster["nodes"] = nodes
	if err := os.WriteFile(kh, khData, 0o600); err != nil {
		return "", err
	}
	out, err := yaml.Marshal(map[string]any{"clusters": []any{cluster}})
	if err != nil {
		return "", err
	}
	inv := filepath.Join(dir, "inventory.yaml")
	return inv, os.WriteFile(inv, out, 0o644)
}

// absPaths makes a node's relative k3s paths absolute (relative to dir).
func absPaths(dir string, n map[string]any) {
	k, ok := n["k3s"].(map[string]any)
	if !ok {
		return
	}
	for _, key := range []string{"data_dir", "config_file", "unit_file", "kubeconfig"} {
		if p, ok := k[key].(string); ok && p != "" && !filepath.IsAbs(p) {
			k[key] = filepath.Join(dir, p)
		}
	}
	if list, ok := k["env_files"].([]any); ok {
		for i, e := range list {
			if p, ok := e.(string); ok && !filepath.IsAbs(p) {
				list[i] = filepath.Join(dir, p)
			}
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
