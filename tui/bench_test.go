package tui

import (
	"fmt"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/caretaker/caretaker/runner"
)

// benchEvents returns the events of a run of p: for every cell a start,
// eight output lines and a done, cells finishing in step order.
func benchEvents(p runner.RunStarted, limit int) []tea.Msg {
	var out []tea.Msg
	at := p.At
	for _, st := range p.Steps {
		for _, n := range st.Nodes {
			at = at.Add(time.Millisecond)
			out = append(out, runner.StepStarted{Step: st.Index, StepName: st.Name, Node: n, At: at})
			for i := range 8 {
				out = append(out, runner.OutputLine{Step: st.Index, Node: n, Stream: runner.StreamStdout,
					Text: fmt.Sprintf("%s: line %d of some command output with a path /var/lib/rancher/k3s/server/tls", n, i), At: at})
			}
			status := runner.StatusOK
			if len(out)%97 == 0 {
				status = runner.StatusFailed
			}
			out = append(out, runner.StepDone{Step: st.Index, StepName: st.Name, Node: n, Status: status, Error: "boom", At: at})
			if len(out) >= limit {
				return out[:limit]
			}
		}
	}
	return out
}

// BenchmarkFrame measures one View of a 1,000 node × 10 step run about
// half done, at three terminal sizes. Target: under 16 ms per frame.
func BenchmarkFrame(b *testing.B) {
	for _, sz := range [][2]int{{80, 24}, {160, 48}, {250, 100}} {
		b.Run(fmt.Sprintf("1000x10/%dx%d", sz[0], sz[1]), func(b *testing.B) {
			p := bigPlan(1000, 10)
			m := newTest(b, Options{Plan: p}, sz[0], sz[1])
			evs := benchEvents(p, 50_000)
			m.Update(batchMsg(evs))
			press(m, "j", "j", "j")
			for range 100 { // a few running cells
				m.Update(runner.StepStarted{Step: 9, Node: fmt.Sprintf("node-%04d", 500+len(evs)%400), At: t0})
			}
			b.ReportAllocs()
			for b.Loop() {
				m.frame++
				_ = m.View()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
		})
	}
}

// BenchmarkEvents feeds 100,000 events through Update in batches, as the
// pump delivers them (one batch per frame), rendering a frame after each
// batch, and reports the events absorbed per second.
func BenchmarkEvents(b *testing.B) {
	p := bigPlan(1000, 10)
	evs := benchEvents(p, 100_000)
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("100k/batch=%d", batch), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m := newTest(b, Options{Plan: p}, 160, 48)
				for i := 0; i < len(evs); i += batch {
					m.Update(batchMsg(evs[i:min(i+batch, len(evs))]))
					_ = m.View()
				}
			}
			b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
