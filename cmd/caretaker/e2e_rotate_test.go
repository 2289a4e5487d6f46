package main

// Helpers of the rotate-ca scenarios of the acceptance suite
// (acceptance_test.go).

import (
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// rotateArgs are the arguments of an unattended rotate-ca run.
func (l *e2eLab) rotateArgs(extra ...string) []string {
	return append([]string{"run", "rotate-ca", "-i", l.InventoryPath(), "--yes", "--output", "json"}, extra...)
}

// assertNoSecret fails when the cluster token's password shows anywhere in
// a run's output.
func (l *e2eLab) assertNoSecret(res cliResult) {
	l.t.Helper()
	pass, err := k3s.NormalizeToken(l.Token())
	if err != nil {
		l.t.Fatal(err)
	}
	if strings.Contains(res.Stdout, pass) || strings.Contains(res.Stderr, pass) {
		l.t.Errorf("the cluster token's password appears in caretaker's output")
	}
}

func prefixed(node string, m map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range m {
		out[node+" "+k] = v
	}
	return out
}

// TestE2EServingRaceRepaired: a server's sync with kube-system/k3s-serving
// after its rotation restart brings the certificate of the previous CA
// back on every server (the race measured on real K3s, made certain on the
// simulator); rotate-ca sees it only after the sync, repairs it with one
// more restart with dynamic-cert-regenerate, and ends with every server
// serving the new CA.
func TestE2EServingRaceRepaired(t *testing.T) {
	t.Parallel()
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 1, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioInitReplaced})
	sim, ok := l.Handle.(*lab.Lab)
	if !ok {
		t.Fatalf("want the simulator, got %T", l.Handle)
	}
	// Every server's sync after its rotation restart keeps the certificate
	// in the secret: the one of the previous CA stays everywhere (the
	// first syncs after the lab's start happened: labtest waits for them).
	for _, n := range []string{"server-1", "server-2", "server-3"} {
		if err := sim.LoseServingRace(n, 1); err != nil {
			t.Fatal(err)
		}
	}
	res := l.runCaretaker(l.rotateArgs()...)
	if res.Code != 0 {
		t.Fatalf("rotate-ca: %s", res.Describe())
	}
	if !strings.Contains(strings.Join(res.Notes(), "\n"), "came back through kube-system/k3s-serving") ||
		res.StepStatus("serving-certs", "server-1") != "changed" {
		t.Errorf("the repair is not reported (serving-certs: %s):\n%s", res.StepStatus("serving-certs", "server-1"), strings.Join(res.Notes(), "\n"))
	}
	l.assertClusterHoldsCA(l.newCA())
}
