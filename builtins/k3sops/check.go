package k3sops

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	errspkg "github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
)

// CertRow is one certificate of one node, as `k3s certificate check`
// lists it.
type CertRow struct {
	Node    string `json:"node"`
	File    string `json:"file"`
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// Expires is the certificate's NotAfter, in UTC.
	Expires      time.Time `json:"expires"`
	ResidualDays int       `json:"residual_days"`
	// Status is caretaker's verdict (k3s.CaretakerStatus): OK, WARNING
	// (expires within the warning window), RENEWS-AT-RESTART (a leaf K3s
	// reissues at its next start, expiring later than the warning
	// window), EXPIRED or NOT YET VALID.
	Status string   `json:"status"`
	Usages []string `json:"-" star:"usages"`
	Serial string   `json:"-" star:"serial"`
	CA     bool     `json:"-" star:"ca"`
	// K3sStatus is what `k3s certificate check` on the node says (OK,
	// WARNING within the release's renewal window, EXPIRED, NOT YET VALID).
	K3sStatus string `json:"k3s_status"`
	// RenewsAtRestart: K3s reissues this leaf at the node's next start
	// (expired, or within RenewDays).
	RenewsAtRestart bool `json:"renews_at_restart"`
	// RenewDays is the renewal window of the node's K3s release
	// (k3s.RenewDays: 120 days since the May 2025 patch releases, 90 before).
	RenewDays int `json:"renew_days"`
}

// CheckOptions say what Check lists.
type CheckOptions struct {
	Nodes []*inventory.Node
	// WarnDays: a certificate expiring within that many days is WARNING,
	// a finding (leaves K3s renews at the next start but expiring later
	// are RENEWS-AT-RESTART, not a finding).
	WarnDays int
	// Fail makes a result that is not OK an error; Quiet prints nothing.
	Fail, Quiet bool
}

// CheckResult is the certificate check of the nodes. OK is false when a
// certificate is expired, not yet valid or within the warning window;
// certificates that only renew at the next restart leave it true.
type CheckResult struct {
	OK     bool           `json:"ok"`
	Rows   []CertRow      `json:"rows"`
	Counts map[string]int `json:"counts"`
	Table  string         `json:"table"`
	// RenewNodes are the nodes with a leaf K3s reissues at their next
	// start (renews_at_restart): what renew-leaf-certs restarts.
	RenewNodes []string `json:"renew_nodes"`
}

// Statuses of CertRow.Status that are not findings.
const (
	StatusOK              = k3s.StatusOK
	StatusRenewsAtRestart = k3s.StatusRenewsAtRestart
)

// nodeCerts is one node's certificates with its release's window.
type nodeCerts struct {
	certs     []k3s.CertStatus
	renewDays int
}

// finding says whether a caretaker status needs attention.
func finding(status string) bool {
	return status != StatusOK && status != StatusRenewsAtRestart
}

// Check lists the expiry of every certificate on every node, as `k3s
// certificate check` does (CA chains included), reading all nodes at once,
// and says which leaves K3s renews at the node's next start (the window of
// the node's release, k3s.RenewDays).
func Check(ctx context.Context, run Run, op string, o CheckOptions) (*CheckResult, error) {
	now := time.Now()
	results, errs := forEachNode(ctx, run, o.Nodes, op, func(c *Target) (nodeCerts, error) {
		return c.certificates(ctx, now)
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	res := &CheckResult{OK: true, Rows: []CertRow{}, Counts: map[string]int{}, RenewNodes: []string{}}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tFILENAME\tSUBJECT\tEXPIRES\tRESIDUAL\tSTATUS")
	for i, nc := range results {
		renew := false
		for _, cs := range nc.certs {
			r := CertRow{Node: o.Nodes[i].Name, File: cs.Filename, Subject: cs.Subject, Issuer: cs.Issuer, Expires: cs.ExpiryTime.UTC(),
				ResidualDays: int(cs.ResidualTime.Hours() / 24), Usages: append([]string{}, cs.Usages...), Serial: cs.Serial, CA: cs.IsCA,
				K3sStatus: cs.Status, RenewsAtRestart: k3s.RenewsAtStart(cs, nc.renewDays), RenewDays: nc.renewDays,
				Status: k3s.CaretakerStatus(cs, nc.renewDays, o.WarnDays)}
			res.Counts[r.Status]++
			res.OK = res.OK && !finding(r.Status)
			renew = renew || r.RenewsAtRestart
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%dd\t%s\n", r.Node, r.File, r.Subject, r.Expires.Format("2006-01-02 15:04 MST"), r.ResidualDays, r.Status)
			res.Rows = append(res.Rows, r)
		}
		if renew {
			res.RenewNodes = append(res.RenewNodes, o.Nodes[i].Name)
		}
	}
	_ = tw.Flush()
	res.Table = b.String()
	if !o.Quiet {
		for _, line := range strings.Split(strings.TrimRight(res.Table, "\n"), "\n") {
			run.Output(runner.StreamLog, line)
		}
		if n := res.Counts[k3s.StatusRenewsAtRestart]; n > 0 {
			run.Output(runner.StreamLog, fmt.Sprintf("%d leaf certificate(s) renew at the next restart of K3s on %s (within the release's renewal window; renew-leaf-certs restarts those nodes)", n, strings.Join(res.RenewNodes, ", ")))
		}
	}
	if res.OK || !o.Fail {
		return res, nil
	}
	var bad []string
	for _, r := range res.Rows {
		if finding(r.Status) {
			bad = append(bad, fmt.Sprintf("%s %s (%s): %s %s", r.Node, r.File, r.Subject, r.Status, r.Expires.Format(time.RFC3339)))
		}
	}
	sort.Strings(bad)
	return nil, errspkg.Drift(fmt.Errorf("%s: %d certificate(s) need attention (expired, not yet valid or expiring within %d days): %s\n%s", op, len(bad), o.WarnDays, strings.Join(bad, "; "), res.Table))
}

// certificates reads and checks the node's certificates with its
// release's renewal window (K3s's own WARNING; 120 days when the version
// cannot be read).
func (c *Target) certificates(ctx context.Context, now time.Time) (nodeCerts, error) {
	nc := nodeCerts{renewDays: k3s.CertificateRenewDays}
	if v, _, err := c.version(ctx); err == nil {
		nc.renewDays = k3s.RenewDays(v)
	}
	rel, err := k3s.FilesForServices(k3s.CheckServices(c.Node.Role == inventory.RoleServer))
	if err != nil {
		return nc, c.errorf("%w", err)
	}
	var pats []string
	for _, p := range rel {
		pats = append(pats, c.dd()+"/"+p)
	}
	files, err := c.fetch(ctx, pats...)
	if err != nil {
		return nc, err
	}
	m := map[string][]byte{}
	for _, f := range files {
		m[f.Path] = f.Data
	}
	nc.certs = k3s.CheckCertificates(m, now, time.Duration(nc.renewDays)*24*time.Hour)
	return nc, nil
}
