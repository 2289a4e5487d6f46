package main

// The kill scenarios of the acceptance suite (issue 12): rotate-ca killed
// with SIGKILL at five points, on both engines, then repaired by resume or
// by undo and checked as the crash-consistency suite checks every journal
// boundary on the simulator (crash_test.go: crashResume, crashUndo):
//
//	after strip             server-1 rotated; server-2's `server` just removed, its restart not begun
//	mid-restart             server-2's restart issued (real K3s takes 10-15 s to come back)
//	after restore-server    `server` back on every server, right before the tokens step
//	in tokens               right after the second node's token edit was recorded (secure tokens)
//	in agents               right after the first agent's restart began; the real engine has no
//	                        agents, so there the nearest point: right before the final verify
//
// The first three run on the "bug" cluster (`server` stripped), the last
// two on the "fixed" one (secure K10 tokens, which the tokens step edits).

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/runner/journal"
)

// accKillPoint is a moment of rotate-ca at which caretaker is killed.
type accKillPoint struct {
	name string
	// kill runs rotate-ca and kills it there.
	kill func(t *testing.T, l *e2eLab) crashReport
	// atDeath, optional, checks the cluster and the journal right then.
	atDeath func(t *testing.T, l *e2eLab, kr crashReport, before map[string][]byte)
}

// accKill is the scenario "kill -9 <point> then <mode>" (resume or undo).
func accKill(p accKillPoint, mode string) accScenario {
	return accScenario{name: "kill -9 " + p.name + " then " + mode, run: func(t *testing.T, l *e2eLab) {
		before := l.allConfigSources()
		oldCA := l.newCA()
		kr := p.kill(t, l)
		if !kr.Killed {
			t.Fatalf("rotate-ca ended (exit %d) before the kill point %s:\n%s", kr.Exit, p.name, kr.Output.Describe())
		}
		t.Logf("killed %s: the journal has %d entries, the last: %s", p.name, kr.Lines, kr.Last)
		if p.atDeath != nil {
			p.atDeath(t, l, kr, before)
		}
		var outcome string
		if mode == "resume" {
			var res cliResult
			outcome, res = crashResume(t, l, kr, before, oldCA)
			if m := containsAll(res.Stderr, "resuming run "+kr.RunID+" (attempt 2)"); len(m) > 0 {
				t.Errorf("resume's stderr lacks %q:\n%s", m, res.Stderr)
			}
			again := runCaretakerBinary(t, "resume", kr.RunID, "--state-dir", l.StateDir, "--yes", "-o", "json")
			if again.Code != exitBadInput || !strings.Contains(again.Stderr, "nothing to resume") {
				t.Errorf("resume of a finished run: exit %d: %s", again.Code, again.Stderr)
			}
		} else {
			ask := runCaretakerBinary(t, "undo", kr.RunID, "--state-dir", l.StateDir, "-o", "plain")
			if hasEntry(kr.Journal, "undo", "") && (ask.Code != exitFailed || !strings.Contains(ask.Stderr, "run it again with --yes")) {
				t.Errorf("undo without --yes and without a terminal: exit %d: %s", ask.Code, ask.Stderr)
			}
			outcome, _ = crashUndo(t, l, kr, before, oldCA)
		}
		t.Logf("%s then %s: %s", p.name, mode, outcome)
	}}
}

// liveKill runs rotate-ca with JSON events and kills it with SIGKILL as
// soon as an event matches, then reads what the journal holds.
func liveKill(t *testing.T, l *e2eLab, what string, match func(e2eEvent) bool) crashReport {
	t.Helper()
	lc := startLive(t, nil, append(l.rotateArgs(), "--state-dir", l.StateDir)...)
	started := lc.waitFor(2*time.Minute, "run_started", func(e e2eEvent) bool { return e.Type == "run_started" })
	lc.waitFor(8*time.Minute, what, match)
	lc.kill9()
	kr := crashReport{RunID: started.str("run_id"), Killed: true, Exit: -9, Output: lc.result()}
	kr.RunDir = journal.RunDir(l.StateDir, kr.RunID)
	kr.Journal = readJournalLines(t, filepath.Join(kr.RunDir, "journal.jsonl"))
	kr.Lines = len(kr.Journal)
	if kr.Lines > 0 {
		kr.Last = kr.Journal[kr.Lines-1]
	}
	return kr
}

// interruptedIn checks that the killed run reads back as interrupted in
// step on node.
func interruptedIn(t *testing.T, l *e2eLab, kr crashReport, step, node string) {
	t.Helper()
	rec := readRunJSON(t, l.StateDir, kr.RunID)
	if rec.State != journal.RunStateInterrupted || len(rec.Started) != 1 || rec.Started[0].StepName != step || rec.Started[0].Node != node {
		t.Errorf("the killed run reads back as %q, in progress %+v; want interrupted in %s@%s", rec.State, rec.Started, step, node)
	}
}

var killAfterStrip = accKillPoint{
	name: "after the strip of server-2",
	kill: func(t *testing.T, l *e2eLab) crashReport {
		return liveKill(t, l, "the strip of server-2", isOutput("server-2", "removed"))
	},
	atDeath: func(t *testing.T, l *e2eLab, kr crashReport, before map[string][]byte) {
		for _, n := range []string{"server-1", "server-2"} {
			if d := sameSources(prefixed(n, pick(before, n)), prefixed(n, l.configSources(n))); len(d) == 0 {
				t.Errorf("after the kill, %s still has `server` in its sources", n)
			}
		}
		interruptedIn(t, l, kr, "servers", "server-2")
	},
}

var killMidRestart = accKillPoint{
	name: "in the middle of server-2's restart",
	kill: func(t *testing.T, l *e2eLab) crashReport {
		return liveKill(t, l, "the restart of server-2", isOutput("server-2", "systemctl restart"))
	},
	atDeath: func(t *testing.T, l *e2eLab, kr crashReport, _ map[string][]byte) {
		interruptedIn(t, l, kr, "servers", "server-2")
	},
}

var killAfterRestoreServer = accKillPoint{
	name: "after restore-server",
	kill: func(t *testing.T, l *e2eLab) crashReport {
		return killAtMatch(t, l.StateDir, 1, []string{`"type":"step_started"`, `"step_name":"tokens"`}, l.rotateArgs()...)
	},
	atDeath: func(t *testing.T, l *e2eLab, _ crashReport, before map[string][]byte) {
		if d := sameSources(before, l.allConfigSources()); len(d) > 0 {
			t.Errorf("after restore-server, the sources differ from before the run: %v", d)
		}
	},
}

var killInTokens = accKillPoint{
	name: "in the tokens step",
	kill: func(t *testing.T, l *e2eLab) crashReport {
		return killAtMatch(t, l.StateDir, 2, []string{`"type":"undo"`, `"kind":"k3s.restore_token"`}, l.rotateArgs()...)
	},
}

var killInAgents = accKillPoint{
	name: "in the agents step (real engine: before the final verify)",
	kill: func(t *testing.T, l *e2eLab) crashReport {
		step := "agents"
		if len(l.Nodes("agent")) == 0 {
			step = "verify"
			t.Logf("no agents in this lab (the real engine has none): killing at the nearest point, right before the final verify")
		}
		return killAtMatch(t, l.StateDir, 1, []string{`"type":"step_started"`, `"step_name":"` + step + `"`}, l.rotateArgs()...)
	},
}

// pick is the sources of one node from allConfigSources, keyed by path.
func pick(all map[string][]byte, node string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range all {
		if p, ok := strings.CutPrefix(k, node+" "); ok {
			out[p] = v
		}
	}
	return out
}
