package main

// Helpers of the rotate-ca scenarios of the acceptance suite
// (acceptance_test.go).

import (
	"strings"

	"github.com/caretaker/caretaker/internal/k3s"
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
