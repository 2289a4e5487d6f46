package main

// One Ctrl-C in the middle of rotate-ca (issue 12): the summary says where
// the run left each node and what resume does there, and both are true.

import (
	"bytes"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// waitForText waits until the process's stdout holds text.
func (lc *liveCaretaker) waitForText(timeout time.Duration, text string) {
	lc.t.Helper()
	deadline := time.After(timeout)
	for {
		lc.mu.Lock()
		found := strings.Contains(lc.out.String(), text)
		lc.mu.Unlock()
		if found {
			return
		}
		select {
		case <-lc.change:
		case <-lc.done:
			lc.t.Fatalf("caretaker ended before printing %q:\n%s", text, lc.result().Stdout)
		case <-deadline:
			lc.t.Fatalf("caretaker did not print %q within %s:\n%s", text, timeout, lc.result().Stdout)
		}
	}
}

// summaryLeft parses the "where this attempt left each node" section of a
// plain summary: node → its state line, and node → the steps resume runs.
func summaryLeft(t *testing.T, out string) (state, resume map[string]string) {
	t.Helper()
	_, sec, ok := strings.Cut(out, "where this attempt left each node")
	if !ok {
		t.Fatalf("the summary has no per-node section:\n%s", out)
	}
	state, resume = map[string]string{}, map[string]string{}
	node := ""
	for _, line := range strings.Split(sec, "\n")[1:] {
		switch {
		case strings.HasPrefix(line, "      resume runs there: "):
			resume[node] = strings.TrimPrefix(line, "      resume runs there: ")
		case strings.HasPrefix(line, "      resume has nothing"):
			resume[node] = ""
		case strings.HasPrefix(line, "      "):
			state[node] += "\n" + strings.TrimSpace(line)
		case strings.HasPrefix(line, "    "):
			n, rest, _ := strings.Cut(strings.TrimSpace(line), ": ")
			node, state[n] = n, rest
		default:
			return state, resume
		}
	}
	return state, resume
}

func TestE2ECtrlCSummary(t *testing.T) {
	l := startE2ELab(t, crashLabOptions())
	before := l.allConfigSources()
	oldCA := l.newCA()
	lc := startLive(t, nil, "run", "rotate-ca", "-i", l.InventoryPath(), "--yes", "-o", "plain", "--state-dir", l.StateDir)
	// The restart of server-1 is under way (its strip is done): one Ctrl-C
	// lets it finish and starts nothing after it.
	lc.waitForText(3*time.Minute, "server-1 | touch /var/lib/rancher/k3s/server/tls/dynamic-cert-regenerate && systemctl restart")
	if err := lc.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	res := lc.wait(2 * time.Minute)
	if res.Code != exitFailed || !strings.Contains(res.Stdout, " ABORTED in ") {
		t.Fatalf("after one Ctrl-C: exit %d, want 1 and an aborted run:\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	state, resume := summaryLeft(t, res.Stdout)
	t.Logf("the summary:\n%s", res.Stdout[strings.Index(res.Stdout, "run 2"):])

	// What the summary says of each node ...
	for node, want := range map[string][]string{
		"server-1": {"step servers stopped by the operator after: strip server on server-1: /etc/rancher/k3s/config.yaml.d/50-server.yaml",
			"restart k3s on server-1 and wait until it is up", "the rest of that step did not run",
			"\nfinished before: facts, preflight, backup, snapshot, generate, rotate-ca\n",
			"\nnot put back yet: the datastore's CA set rotated here with k3s certificate rotate-ca", "`server` removed from /etc/rancher/k3s/config.yaml.d/50-server.yaml"},
		"server-2": {"finished facts, backup"},
		"server-3": {"finished facts, backup"},
		"agent-1":  {"finished facts, backup"},
	} {
		if m := containsAll(state[node], want...); len(m) > 0 {
			t.Errorf("summary line of %s lacks %q:\n%s", node, m, state[node])
		}
	}
	for _, node := range []string{"server-2", "server-3", "agent-1"} {
		if strings.Contains(state[node], "not put back") || strings.Contains(state[node], "stopped") {
			t.Errorf("%s was not changed by the stopped step, the summary says: %s", node, state[node])
		}
	}
	// ... is what the nodes hold: server-1 restarted onto the new CA with
	// `server` removed, the other servers untouched.
	newCA := l.newCA()
	if bytes.Equal(newCA, oldCA) || !bytes.Equal(l.serverCA("server-1"), newCA) || l.serviceState("server-1") != "active" {
		t.Errorf("server-1 is not restarted onto the datastore's new CA (active: %s)", l.serviceState("server-1"))
	}
	if bytes.Contains(l.ReadNodeFile("server-1", "/etc/rancher/k3s/config.yaml.d/50-server.yaml"), []byte("server:")) {
		t.Error("server-1 still has `server` in its drop-in")
	}
	for _, n := range []string{"server-2", "server-3"} {
		if d := sameSources(prefixed(n, pick(before, n)), prefixed(n, l.configSources(n))); len(d) > 0 || !bytes.Equal(l.serverCA(n), oldCA) {
			t.Errorf("%s was changed before the stop: %v", n, d)
		}
	}

	// Resume does there what the summary said: every step it lists, and
	// no other, runs on the node.
	id := regexp.MustCompile(`run (\S+) ABORTED`).FindStringSubmatch(res.Stdout)[1]
	rr := runCaretakerBinary(t, "resume", id, "--state-dir", l.StateDir, "--yes", "-o", "json")
	if rr.Code != 0 {
		t.Fatalf("resume: %s", rr.Describe())
	}
	ran := map[string][]string{}
	for _, e := range rr.Events {
		if e.Type == "step_done" && e.str("reason") != "done in an earlier run" {
			ran[e.str("node")] = append(ran[e.str("node")], e.str("step_name"))
		}
	}
	for node, said := range resume {
		var want []string
		said = regexp.MustCompile(` \([^)]*\)`).ReplaceAllString(said, "")
		for _, s := range strings.Split(said, ", ") {
			if s != "" {
				want = append(want, strings.Fields(s)[0])
			}
		}
		got := append([]string(nil), ran[node]...)
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: the summary said resume runs %v there, it ran %v", node, want, got)
		}
	}
	l.assertClusterHoldsCA(l.newCA())
	if d := sameSources(sourcesWithHash(t, before, oldCA, l.newCA()), l.allConfigSources()); len(d) > 0 {
		t.Errorf("config sources after Ctrl-C + resume: %s", strings.Join(d, "; "))
	}
	l.mustCheck(t)
}
