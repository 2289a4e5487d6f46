// Command harness is the benchmark driver behind `make bench`
// (bench/run.sh): the same job (archive server/tls, sha256 server-ca.crt)
// run by caretaker, Ansible (defaults and tuned) and parallel-ssh against
// real OpenSSH lab nodes, interleaved and verified; the runner's overhead
// per step (Go benchmark); `caretaker check` on a 1,000-node in-process
// lab; and a full rotate-ca on the 3-server + 2-agent lab. It prints the
// figures and writes bench/results.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config holds the command line.
type config struct {
	repo      string // repository root (where go.mod is)
	caretaker string // caretaker binary
	out       string // results file
	work      string // scratch directory (labs, inventories, outputs)
	sizes     []int
	runs      int
	only      map[string]bool // sections to run; empty: all
	runners   map[string]bool // runners of the comparison; empty: all
	checkN    int
	benchtime string
	keep      bool
	// startDelay is the lab's --start-delay for rotate-ca: how long each
	// simulated K3s start takes (real servers: 10-15 s).
	startDelay time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "raw-ssh" {
		os.Exit(rawMain(os.Args[2:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, cfg))
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	cfg := &config{}
	var sizes, only, runners string
	fs.StringVar(&cfg.repo, "repo", ".", "repository root")
	fs.StringVar(&cfg.caretaker, "caretaker", "bin/caretaker", "caretaker binary (relative to -repo)")
	fs.StringVar(&cfg.out, "out", "bench/results.md", "results file (relative to -repo)")
	fs.StringVar(&cfg.work, "work", "", "scratch directory (default: a new one under $TMPDIR, removed at the end)")
	fs.StringVar(&sizes, "sizes", "3,20,50", "node counts of the comparison")
	fs.IntVar(&cfg.runs, "runs", 5, "runs per runner and node count (median reported)")
	fs.StringVar(&only, "only", "", "comma-separated sections to run: compare,overhead,check,rotate,rotate-real (default all)")
	fs.StringVar(&runners, "runners", "", "comma-separated runners of the comparison: caretaker,ansible-default,ansible-tuned,pssh (default all)")
	fs.IntVar(&cfg.checkN, "check-nodes", 1000, "nodes of the in-process lab `caretaker check` runs against")
	fs.StringVar(&cfg.benchtime, "benchtime", "300x", "-benchtime of the runner overhead benchmark")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the scratch directory")
	fs.DurationVar(&cfg.startDelay, "start-delay", 10*time.Second, "rotate-ca lab: how long each K3s service start takes (the lab's --start-delay; real K3s servers take 10-15 s)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 250 {
			return nil, fmt.Errorf("-sizes: %q is not a node count between 1 and 250", s)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	if cfg.runs < 1 {
		return nil, fmt.Errorf("-runs must be at least 1, got %d", cfg.runs)
	}
	set := func(list string, allowed []string) (map[string]bool, error) {
		m := map[string]bool{}
		for _, s := range strings.Split(list, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			ok := false
			for _, a := range allowed {
				ok = ok || a == s
			}
			if !ok {
				return nil, fmt.Errorf("%q: want one of %s", s, strings.Join(allowed, ", "))
			}
			m[s] = true
		}
		return m, nil
	}
	var err error
	if cfg.only, err = set(only, []string{"compare", "overhead", "check", "rotate", "rotate-real"}); err != nil {
		return nil, fmt.Errorf("-only: %w", err)
	}
	if cfg.runners, err = set(runners, runnerNames); err != nil {
		return nil, fmt.Errorf("-runners: %w", err)
	}
	if cfg.repo, err = filepath.Abs(cfg.repo); err != nil {
		return nil, err
	}
	for _, p := range []*string{&cfg.caretaker, &cfg.out} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(cfg.repo, *p)
		}
	}
	return cfg, nil
}

func (c *config) want(section string) bool { return len(c.only) == 0 || c.only[section] }

// run executes the selected sections and writes the results file. Its
// result is the process exit code: 1 when a run failed its own
// verification or a section could not run for a reason other than a
// missing piece, else 0.
func run(ctx context.Context, cfg *config) int {
	began := time.Now()
	if _, err := os.Stat(cfg.caretaker); err != nil {
		fmt.Fprintf(os.Stderr, "bench: no caretaker binary at %s: run `make build` first\n", cfg.caretaker)
		return 2
	}
	if cfg.work == "" {
		w, err := os.MkdirTemp("", "caretaker-bench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		cfg.work = w
		if !cfg.keep {
			defer os.RemoveAll(w)
		}
	} else if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	rep := &report{cfg: cfg, started: began, env: describeEnv(ctx, cfg)}
	rep.loadBefore = loadAvg()
	say("bench: %s; load %s; scratch %s", rep.env.cpu, rep.loadBefore, cfg.work)

	if cfg.want("compare") {
		rep.compare = runCompare(ctx, cfg)
	}
	if cfg.want("overhead") && ctx.Err() == nil {
		rep.overhead = runOverhead(ctx, cfg)
	}
	if cfg.want("check") && ctx.Err() == nil {
		rep.check = runCheck(ctx, cfg)
	}
	if cfg.want("rotate") && ctx.Err() == nil {
		rep.rotate = runRotate(ctx, cfg)
	}
	if cfg.want("rotate-real") && ctx.Err() == nil {
		rep.rotateReal = runRotateReal(ctx, cfg)
	}
	rep.loadAfter = loadAvg()
	rep.took = time.Since(began)

	text := rep.markdown()
	fmt.Println()
	fmt.Print(rep.summary())
	if err := os.WriteFile(cfg.out, []byte(text), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench: write results:", err)
		return 1
	}
	say("bench: wrote %s (%s)", cfg.out, rep.took.Round(time.Second))
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 1
	}
	if rep.failed() {
		fmt.Fprintln(os.Stderr, "bench: FAILED: a run did not produce the right result (see above and the results file)")
		return 1
	}
	return 0
}

// say prints a progress line with the time of day.
func say(format string, a ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}
