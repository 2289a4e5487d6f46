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
	// Status is OK, WARNING (expires within the warning window), EXPIRED
	// or NOT YET VALID.
	Status string   `json:"status"`
	Usages []string `json:"-" star:"usages"`
	Serial string   `json:"-" star:"serial"`
	CA     bool     `json:"-" star:"ca"`
}

// CheckOptions say what Check lists.
type CheckOptions struct {
	Nodes []*inventory.Node
	// WarnDays: a certificate expiring within that many days is not OK
	// (k3s.CertificateRenewDays, 120, is K3s's own window).
	WarnDays int
	// Fail makes a result that is not OK an error; Quiet prints nothing.
	Fail, Quiet bool
}

// CheckResult is the certificate check of the nodes. OK is false when a
// certificate is expired, not yet valid or within the warning window.
type CheckResult struct {
	OK     bool           `json:"ok"`
	Rows   []CertRow      `json:"rows"`
	Counts map[string]int `json:"counts"`
	Table  string         `json:"table"`
}

// Check lists the expiry of every certificate on every node, as `k3s
// certificate check` does (CA chains included), reading all nodes at once.
func Check(ctx context.Context, run Run, op string, o CheckOptions) (*CheckResult, error) {
	now := time.Now()
	warn := time.Duration(o.WarnDays) * 24 * time.Hour
	results, errs := forEachNode(ctx, run, o.Nodes, op, func(c *Target) ([]k3s.CertStatus, error) {
		return c.certificates(ctx, now, warn)
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	res := &CheckResult{OK: true, Rows: []CertRow{}, Counts: map[string]int{}}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tFILENAME\tSUBJECT\tEXPIRES\tRESIDUAL\tSTATUS")
	for i, certs := range results {
		for _, cs := range certs {
			r := CertRow{Node: o.Nodes[i].Name, File: cs.Filename, Subject: cs.Subject, Issuer: cs.Issuer, Expires: cs.ExpiryTime.UTC(),
				ResidualDays: int(cs.ResidualTime.Hours() / 24), Status: cs.Status, Usages: append([]string{}, cs.Usages...), Serial: cs.Serial, CA: cs.IsCA}
			res.Counts[r.Status]++
			if r.Status != k3s.StatusOK {
				res.OK = false
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%dd\t%s\n", r.Node, r.File, r.Subject, r.Expires.Format("2006-01-02 15:04 MST"), r.ResidualDays, r.Status)
			res.Rows = append(res.Rows, r)
		}
	}
	_ = tw.Flush()
	res.Table = b.String()
	if !o.Quiet {
		for _, line := range strings.Split(strings.TrimRight(res.Table, "\n"), "\n") {
			run.Output(runner.StreamLog, line)
		}
	}
	if res.OK || !o.Fail {
		return res, nil
	}
	var bad []string
	for _, r := range res.Rows {
		if r.Status != k3s.StatusOK {
			bad = append(bad, fmt.Sprintf("%s %s (%s): %s %s", r.Node, r.File, r.Subject, r.Status, r.Expires.Format(time.RFC3339)))
		}
	}
	sort.Strings(bad)
	return nil, errspkg.Drift(fmt.Errorf("%s: %d certificate(s) need attention (expired, not yet valid or expiring within %d days): %s\n%s", op, len(bad), o.WarnDays, strings.Join(bad, "; "), res.Table))
}

// certificates reads and checks the node's certificates.
func (c *Target) certificates(ctx context.Context, now time.Time, warn time.Duration) ([]k3s.CertStatus, error) {
	rel, err := k3s.FilesForServices(k3s.CheckServices(c.Node.Role == inventory.RoleServer))
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	var pats []string
	for _, p := range rel {
		pats = append(pats, c.dd()+"/"+p)
	}
	files, err := c.fetch(ctx, pats...)
	if err != nil {
		return nil, err
	}
	m := map[string][]byte{}
	for _, f := range files {
		m[f.Path] = f.Data
	}
	return k3s.CheckCertificates(m, now, warn), nil
}
