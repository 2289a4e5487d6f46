package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

// caFindings sorts the rows of the CA check by what is wrong with them.
// A stale row is one whose disk or live CA differs (drift, exit 4); the
// other findings mean health cannot be judged or a server is not well
// (exit 1):
//
//   - down: K3s is not running on a server; its CA once it runs cannot be
//     told.
//   - broken: a server's own token does not open the datastore (it would
//     not come back from a restart), or it reads another datastore.
//   - unreadable: the datastore could not be read through a server with its
//     own etcd endpoint (or its files not read): what it sees cannot be told.
//   - other: a row that is not ok for another reason.
type caFindings struct {
	down, broken, unreadable, stale, other []string
}

func classifyCA(rep *checkReport) caFindings {
	var f caFindings
	for _, r := range rep.CA.Nodes {
		switch rowVerdict(r) {
		case "ok":
		case "DOWN":
			f.down = append(f.down, fmt.Sprintf("%s (%s)", r.Node, r.Service))
		case "BROKEN":
			why := "would not come back from a restart: its token does not open the datastore"
			if r.Datastore == "other" {
				why = "reads another datastore with its own token and etcd endpoint"
			}
			f.broken = append(f.broken, r.Node+" "+why)
		case "UNKNOWN":
			f.unreadable = append(f.unreadable, r.Node)
		case "DRIFT":
			f.stale = append(f.stale, r.Node)
		default:
			f.other = append(f.other, r.Node)
		}
	}
	return f
}

// finishReport sorts the rows, lists the findings and sets the status and
// exit code. Exit 1 when health cannot be told or a server is not well
// (status unreachable: a node, the datastore, or the datastore through a
// server could not be read; down: K3s is not running on a server; broken:
// a server would not come back from a restart), which wins over 4 for
// drift (nodes without the datastore's CA, certificates expired or
// expiring within the window).
func finishReport(rep *checkReport, nodeCount int) {
	sortReport(rep)
	classifyCertificates(rep)
	f := classifyCA(rep)
	listProblems(rep)
	var parts []string
	if len(f.unreadable) > 0 {
		parts = append(parts, fmt.Sprintf("the datastore could not be read through %s, so what %s would see cannot be told", strings.Join(f.unreadable, ", "), map[bool]string{true: "it", false: "they"}[len(f.unreadable) == 1]))
	}
	if len(f.down) > 0 {
		parts = append(parts, fmt.Sprintf("K3s is not running on %s", strings.Join(f.down, ", ")))
	}
	if len(f.broken) > 0 {
		parts = append(parts, strings.Join(f.broken, "; "))
	}
	if len(f.other) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) hold the datastore's CA but have problems (below): %s", len(f.other), strings.Join(f.other, ", ")))
	}
	if len(f.stale) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) without the datastore's CA: %s", len(f.stale), strings.Join(f.stale, ", ")))
	}
	if len(rep.Expiring) > 0 {
		parts = append(parts, fmt.Sprintf("%d certificate(s) expired or expiring within %d days", len(rep.Expiring), rep.WarnDays))
	}
	switch {
	case len(rep.Unreachable) > 0 || rep.CA.Error != "" || len(f.unreadable) > 0:
		rep.Status, rep.ExitCode = "unreachable", exitFailed
		var who []string
		for _, u := range rep.Unreachable {
			who = append(who, u.Node)
		}
		var unknown []string
		if len(who) > 0 {
			unknown = append(unknown, fmt.Sprintf("%d of %d node(s) could not be checked (%s)", len(who), nodeCount, strings.Join(who, ", ")))
		}
		if rep.CA.Error != "" {
			unknown = append(unknown, "CA consistency not checked")
		}
		parts = append(unknown, parts...)
		parts[0] = "health unknown: " + parts[0]
	case len(f.down) > 0:
		rep.Status, rep.ExitCode = "down", exitFailed
	case len(f.broken)+len(f.other) > 0:
		rep.Status, rep.ExitCode = "broken", exitFailed
	case len(f.stale) > 0 || len(rep.Expiring) > 0 || (rep.CA.Checked && !rep.CA.Consistent):
		rep.Status, rep.ExitCode = "drift", exitDrift
		if len(parts) == 0 {
			parts = append(parts, "the CA is not consistent")
		}
	default:
		rep.Status, rep.ExitCode = "healthy", exitOK
		parts = append(parts, fmt.Sprintf("%d node(s) hold the datastore's CA, %d certificate(s) valid for more than %d days", nodeCount, len(rep.Certificates), rep.WarnDays))
	}
	if len(rep.RenewAtRestart) > 0 {
		parts = append(parts, fmt.Sprintf("%d leaf certificate(s) renew at the next restart of K3s on %s", len(rep.RenewAtRestart), strings.Join(rep.RenewNodes, ", ")))
	}
	rep.Summary = fmt.Sprintf("cluster %s: %s: %s", rep.Cluster, strings.ToUpper(rep.Status), strings.Join(parts, "; "))
}

// sortReport orders certificates and unreachable nodes as the inventory
// lists the nodes.
func sortReport(rep *checkReport) {
	order := map[string]int{}
	for i, n := range rep.Nodes {
		order[n] = i
	}
	sort.SliceStable(rep.Certificates, func(a, b int) bool {
		ca, cb := rep.Certificates[a], rep.Certificates[b]
		if ca.Node != cb.Node {
			return order[ca.Node] < order[cb.Node]
		}
		return ca.File < cb.File
	})
	sort.Slice(rep.Unreachable, func(a, b int) bool { return order[rep.Unreachable[a].Node] < order[rep.Unreachable[b].Node] })
}

// listProblems fills rep.Problems: one line per unreachable node, CA row
// problem and certificate needing attention.
func listProblems(rep *checkReport) {
	for _, u := range rep.Unreachable {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s: not checked: %s", u.Node, u.Error))
	}
	if rep.CA.Error != "" {
		rep.Problems = append(rep.Problems, "CA consistency not checked: "+rep.CA.Error)
	}
	for _, r := range rep.CA.Nodes {
		if r.OK {
			continue
		}
		for _, p := range r.Problems {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s", r.Node, p))
		}
		if len(r.Problems) == 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: does not hold the datastore's CA", r.Node))
		}
	}
	for _, c := range rep.Expiring {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s (%s) %s, expires %s (%d days)", c.Node, c.File, c.Subject, c.Status, c.Expires.UTC().Format("2006-01-02"), c.ResidualDays))
	}
}

// columnOK says whether a CA column of a verify row agrees with the
// datastore ("-" is a column that does not apply to the node).
func columnOK(v string) bool { return v == "ok" || v == "-" || v == "" }

// rowVerdict is the CA column of the text report: ok, DRIFT (the node's
// CA differs), DOWN (K3s not running), BROKEN (would not come back from a
// restart, or reads another datastore), UNKNOWN (the datastore could not
// be read through it) or
// PROBLEM.
func rowVerdict(r k3sops.Row) string {
	switch {
	case r.OK:
		return "ok"
	case r.Service != "":
		return "DOWN"
	case r.Datastore == "token" || r.Datastore == "other":
		return "BROKEN"
	case r.Datastore == "unreadable" || r.Disk == "error" || r.Disk == "unreachable":
		return "UNKNOWN"
	case !(columnOK(r.Disk) && columnOK(r.Live) && columnOK(r.Cacerts) && columnOK(r.Agent)):
		return "DRIFT"
	}
	return "PROBLEM"
}
