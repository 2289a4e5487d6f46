// Command demo runs the TUI against a fake run, to try it in a real
// terminal: go run ./tui/internal/demo -nodes 40 -fail srv-2.
// Nothing is executed; events are generated with random timings.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/tui"
)

func main() {
	nodes := flag.Int("nodes", 5, "number of nodes (a third of them servers, at most 3)")
	fail := flag.String("fail", "srv-2", "node whose strip_server step fails")
	speed := flag.Float64("speed", 1, "time factor (2 = twice as fast)")
	yes := flag.Bool("yes", false, "skip the plan screen")
	flag.Parse()

	plan := demoPlan(*nodes)
	ctl := newControl()
	ctx := context.Background()
	p, err := tui.Start(ctx, tui.Options{Plan: plan, Confirm: !*yes, Controller: ctl, LogPath: "demo.log"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if start, err := p.WaitStart(ctx); err != nil || !start {
		fmt.Println("not started")
		return
	}
	go run(ctx, plan, p.Sink(), p.Prompter(), ctl, *fail, *speed)
	summary, err := p.Wait()
	fmt.Print(summary)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func demoPlan(n int) runner.RunStarted {
	var all, servers []string
	var infos []runner.NodeInfo
	for i := range n {
		name, role := fmt.Sprintf("agent-%d", i-2), "agent"
		if i < 3 {
			name, role = fmt.Sprintf("srv-%d", i+1), "server"
			servers = append(servers, name)
		}
		all = append(all, name)
		infos = append(infos, runner.NodeInfo{Name: name, Role: role, Address: fmt.Sprintf("10.0.0.%d", 10+i)})
	}
	steps := []runner.StepInfo{
		{Name: "facts", Nodes: all, Doc: "versions and config sources"},
		{Name: "backup_certs", Nodes: servers, Mutates: true, Doc: "archive server/tls and tokens"},
		{Name: "generate_ca", Nodes: servers, Once: true, Mutates: true},
		{Name: "strip_server", Nodes: servers, Serial: 1, Mutates: true},
		{Name: "rotate_ca", Nodes: servers, Serial: 1, Mutates: true},
		{Name: "restart", Nodes: all, Serial: 2, Mutates: true},
		{Name: "verify", Nodes: all},
	}
	for i := range steps {
		steps[i].Index = i
	}
	return runner.RunStarted{RunID: time.Now().Format("20060102-150405"), Playbook: "rotate-ca", Cluster: "demo", Steps: steps, Nodes: infos}
}

// control implements runner.Controller for the fake run.
type control struct {
	mu      sync.Mutex
	paused  bool
	stopped int
	cond    *sync.Cond
}

func newControl() *control {
	c := &control{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *control) Pause()  { c.mu.Lock(); c.paused = true; c.mu.Unlock() }
func (c *control) Resume() { c.mu.Lock(); c.paused = false; c.cond.Broadcast(); c.mu.Unlock() }
func (c *control) Stop(hard bool) {
	c.mu.Lock()
	c.stopped++
	if hard {
		c.stopped = 2
	}
	c.paused = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// gate blocks while paused and reports whether to go on.
func (c *control) gate(s runner.Sink) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		s.Emit(runner.RunPaused{At: time.Now()})
		for c.paused && c.stopped == 0 {
			c.cond.Wait()
		}
		s.Emit(runner.RunResumed{At: time.Now()})
	}
	return c.stopped == 0
}

func (c *control) hard() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.stopped >= 2 }

func run(ctx context.Context, plan runner.RunStarted, s runner.Sink, pr runner.Prompter, c *control, fail string, speed float64) {
	start := time.Now()
	plan.At = start
	s.Emit(plan)
	counts := map[runner.Status]int{}
	var failed []runner.StepDone
	var mu sync.Mutex
	sleep := func(d time.Duration) { time.Sleep(time.Duration(float64(d) / speed)) }
	status := "ok"
	for _, st := range plan.Steps {
		if !c.gate(s) {
			status = "aborted"
			break
		}
		if st.Name == "rotate_ca" {
			ok, err := pr.Confirm(ctx, runner.Prompt{ID: 1, Step: st.Index, Node: st.Nodes[0], Destructive: true,
				Question: "Rotate the cluster CA now? Agents reconnect with the new CA."})
			if err != nil || !ok {
				status = "aborted"
				break
			}
		}
		nodes := st.Nodes
		if st.Once {
			nodes = nodes[:1]
		}
		limit := st.Serial
		if limit == 0 {
			limit = len(nodes)
		}
		sem := make(chan struct{}, limit)
		var wg sync.WaitGroup
		for _, n := range nodes {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				at := time.Now()
				s.Emit(runner.StepStarted{Step: st.Index, StepName: st.Name, Node: n, At: at})
				for i := range 3 + rand.IntN(6) {
					if c.hard() {
						break
					}
					sleep(time.Duration(150+rand.IntN(400)) * time.Millisecond)
					s.Emit(runner.OutputLine{Step: st.Index, Node: n, Stream: runner.StreamStdout, Text: fmt.Sprintf("%s: %s line %d", n, st.Name, i+1), At: time.Now()})
				}
				d := runner.StepDone{Step: st.Index, StepName: st.Name, Node: n, Status: runner.StatusOK, At: time.Now(), Duration: time.Since(at)}
				switch {
				case st.Name == "strip_server" && n == fail:
					s.Emit(runner.OutputLine{Step: st.Index, Node: n, Stream: runner.StreamStderr, Text: "sed: /etc/rancher/k3s/config.yaml: Permission denied", At: time.Now()})
					d.Status, d.Error = runner.StatusFailed, "k3s.strip_server: "+n+": permission denied (check sudo for the ssh user)"
				case st.Mutates:
					d.Status = runner.StatusChanged
				}
				s.Emit(d)
				mu.Lock()
				counts[d.Status]++
				if d.Status == runner.StatusFailed {
					failed = append(failed, d)
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if len(failed) > 0 {
			status = "failed"
			break
		}
	}
	s.Emit(runner.Note{Text: "backups in ./demo-state/backups"})
	s.Emit(runner.RunDone{RunID: plan.RunID, Status: status, Counts: counts, Failed: failed, Journal: "./demo-state/journal.jsonl",
		StateDir: "./demo-state", Duration: time.Since(start), At: time.Now()})
}
