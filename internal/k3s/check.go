package k3s

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// CheckCertificates lists every certificate of every file (bundles
// expanded) like `k3s certificate check` (k3s-ca-rotation.md §6;
// pkg/cli/cert/cert.go collectCertInfo): files maps a path to PEM bytes and
// is walked in sorted path order (K3s's order is map order); Filename is the
// base name. A cert is NOT YET VALID before notBefore (ExpiryTime is then
// notBefore), EXPIRED after notAfter, WARNING when notAfter is before
// now+warnWithin, else OK; ResidualTime is notAfter - now. Files without
// certificates (keys) are skipped, as K3s does.
func CheckCertificates(files map[string][]byte, now time.Time, warnWithin time.Duration) []CertStatus {
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	warn := now.Add(warnWithin)
	var out []CertStatus
	for _, p := range names {
		certs, err := ParseCertsPEM(files[p])
		if err != nil {
			continue
		}
		for _, c := range certs {
			st := certStatus(c, now, warn)
			exp := c.NotAfter
			if st == StatusNotYetValid {
				exp = c.NotBefore
			}
			out = append(out, CertStatus{
				Filename:     path.Base(p),
				Subject:      c.Subject.CommonName,
				Issuer:       c.Issuer.CommonName,
				Usages:       certUsages(c),
				ExpiryTime:   exp,
				ResidualTime: c.NotAfter.Sub(now),
				Status:       st,
				Serial:       strings.ToUpper(c.SerialNumber.Text(16)),
				IsCA:         c.IsCA,
			})
		}
	}
	return out
}

// certStatus is K3s's GetCertStatus.
func certStatus(c *x509.Certificate, now, warn time.Time) string {
	switch {
	case now.Before(c.NotBefore):
		return StatusNotYetValid
	case now.After(c.NotAfter):
		return StatusExpired
	case warn.After(c.NotAfter):
		return StatusWarning
	}
	return StatusOK
}

// certUsages is K3s's GetCertUsages: CertSign, then ServerAuth/ClientAuth
// in EKU order, or Unknown.
func certUsages(c *x509.Certificate) []string {
	var u []string
	if c.KeyUsage&x509.KeyUsageCertSign != 0 {
		u = append(u, "CertSign")
	}
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			u = append(u, "ServerAuth")
		case x509.ExtKeyUsageClientAuth:
			u = append(u, "ClientAuth")
		}
	}
	if len(u) == 0 {
		u = []string{"Unknown"}
	}
	return u
}

// FormatCheckTable renders statuses as `k3s certificate check --output
// table` does (golden certificate-check-table.txt): a leading empty line,
// columns FILENAME SUBJECT USAGES EXPIRES RESIDUAL TIME STATUS padded by 3
// spaces, expiry as "Jan 02, 2006 15:04 MST" and the residual time in
// go-humanize's relative wording ("1 year", "20 years") measured from now.
func FormatCheckTable(certs []CertStatus, now time.Time) string {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 3, ' ', 0)
	fmt.Fprint(w, "\nFILENAME\tSUBJECT\tUSAGES\tEXPIRES\tRESIDUAL TIME\tSTATUS\n")
	fmt.Fprint(w, "--------\t-------\t------\t-------\t-------------\t------\n")
	for _, c := range certs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Filename, c.Subject, strings.Join(c.Usages, ","),
			c.ExpiryTime.Format("Jan 02, 2006 15:04 MST"), relTime(now, now.Add(c.ResidualTime)), c.Status)
	}
	_ = w.Flush() // a bytes.Buffer does not fail
	return buf.String()
}

// FormatCheckText renders statuses as the default text output's messages,
// one per line, without logrus's prefix (k3s-ca-rotation.md §6 "text").
func FormatCheckText(certs []CertStatus) string {
	var b strings.Builder
	for _, c := range certs {
		u := strings.Join(c.Usages, ",")
		at := c.ExpiryTime.Format(time.RFC3339)
		switch c.Status {
		case StatusNotYetValid:
			fmt.Fprintf(&b, "%s: certificate %s (%s) is not valid before %s\n", c.Filename, c.Subject, u, at)
		case StatusExpired:
			fmt.Fprintf(&b, "%s: certificate %s (%s) expired at %s\n", c.Filename, c.Subject, u, at)
		case StatusWarning:
			fmt.Fprintf(&b, "%s: certificate %s (%s) will expire within %d days at %s\n", c.Filename, c.Subject, u, CertificateRenewDays, at)
		default:
			fmt.Fprintf(&b, "%s: certificate %s (%s) is ok, expires at %s\n", c.Filename, c.Subject, u, at)
		}
	}
	return b.String()
}

// relTime words the time from a to b as go-humanize's RelTime(a, b, "", "")
// does, trailing space included (the label is empty).
func relTime(a, b time.Time) string {
	const (
		day   = 24 * time.Hour
		week  = 7 * day
		month = 30 * day
		year  = 12 * month
	)
	d := b.Sub(a)
	if d < 0 {
		d = -d
	}
	n := func(unit time.Duration) int64 { return int64(d / unit) }
	switch {
	case d < time.Second:
		return "now"
	case d < 2*time.Second:
		return "1 second "
	case d < time.Minute:
		return fmt.Sprintf("%d seconds ", n(time.Second))
	case d < 2*time.Minute:
		return "1 minute "
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ", n(time.Minute))
	case d < 2*time.Hour:
		return "1 hour "
	case d < day:
		return fmt.Sprintf("%d hours ", n(time.Hour))
	case d < 2*day:
		return "1 day "
	case d < week:
		return fmt.Sprintf("%d days ", n(day))
	case d < 2*week:
		return "1 week "
	case d < month:
		return fmt.Sprintf("%d weeks ", n(week))
	case d < 2*month:
		return "1 month "
	case d < year:
		return fmt.Sprintf("%d months ", n(month))
	case d < 18*month:
		return "1 year "
	case d < 2*year:
		return "2 years "
	case d < 37*year:
		return fmt.Sprintf("%d years ", n(year))
	}
	return "a long while "
}

// FormatCheckJSON renders statuses as `--output json`: one line
// {"Certificates":[...]} and a newline (golden certificate-check.json).
func FormatCheckJSON(certs []CertStatus) ([]byte, error) {
	if certs == nil {
		certs = []CertStatus{}
	}
	b, err := json.Marshal(struct{ Certificates []CertStatus }{certs})
	if err != nil {
		return nil, fmt.Errorf("encode certificate check: %w", err)
	}
	return append(b, '\n'), nil
}

// Services of `k3s certificate check|rotate` (k3s-ca-rotation.md §6;
// pkg/util/services). The CA set is deliberately not part of AllServices.
var (
	ServerServices = []string{"api-server", "admin", "auth-proxy", "cloud-controller", "controller-manager", "etcd", "scheduler", "supervisor", "k3s-server"}
	AgentServices  = []string{"kube-proxy", "kubelet", "k3s-controller"}
	AllServices    = append(append([]string{}, ServerServices...), AgentServices...)
)

// ServiceCertificateAuthority is the service name of the CA files.
const ServiceCertificateAuthority = "certificate-authority"

// serviceFiles are the DD-relative files of each service
// (services.FilesForServices).
var serviceFiles = map[string][]string{
	"admin":              {"server/tls/client-admin.crt", "server/tls/client-admin.key"},
	"api-server":         {"server/tls/client-kube-apiserver.crt", "server/tls/client-kube-apiserver.key", "server/tls/serving-kube-apiserver.crt", "server/tls/serving-kube-apiserver.key"},
	"controller-manager": {"server/tls/client-controller.crt", "server/tls/client-controller.key", "server/tls/kube-controller-manager/kube-controller-manager.crt", "server/tls/kube-controller-manager/kube-controller-manager.key"},
	"scheduler":          {"server/tls/client-scheduler.crt", "server/tls/client-scheduler.key", "server/tls/kube-scheduler/kube-scheduler.crt", "server/tls/kube-scheduler/kube-scheduler.key"},
	"etcd":               {"server/tls/etcd/client.crt", "server/tls/etcd/client.key", "server/tls/etcd/server-client.crt", "server/tls/etcd/server-client.key", "server/tls/etcd/peer-server-client.crt", "server/tls/etcd/peer-server-client.key"},
	"cloud-controller":   {"server/tls/client-k3s-cloud-controller.crt", "server/tls/client-k3s-cloud-controller.key"},
	"k3s-controller":     {"server/tls/client-k3s-controller.crt", "server/tls/client-k3s-controller.key", "agent/client-k3s-controller.crt", "agent/client-k3s-controller.key"},
	"supervisor":         {"server/tls/client-supervisor.crt", "server/tls/client-supervisor.key"},
	"auth-proxy":         {"server/tls/client-auth-proxy.crt", "server/tls/client-auth-proxy.key"},
	"kubelet":            {"server/tls/client-kubelet.key", "server/tls/serving-kubelet.key", "agent/client-kubelet.crt", "agent/client-kubelet.key", "agent/serving-kubelet.crt", "agent/serving-kubelet.key"},
	"kube-proxy":         {"server/tls/client-kube-proxy.crt", "server/tls/client-kube-proxy.key", "agent/client-kube-proxy.crt", "agent/client-kube-proxy.key"},
	"k3s-server":         {}, // the dynamiclistener cache is not a plain cert file
	ServiceCertificateAuthority: {
		"server/" + PathServerCA, "server/" + PathServerCAKey, "server/" + PathClientCA, "server/" + PathClientCAKey,
		"server/" + PathRequestHeaderCA, "server/" + PathRequestHeaderCAKey, "server/" + PathETCDPeerCA, "server/" + PathETCDPeerCAKey,
		"server/" + PathETCDServerCA, "server/" + PathETCDServerCAKey,
	},
}

// CheckServices returns the services `k3s certificate check` covers
// without -s: all of them when DD/server exists ("Server detected"), else
// the agent set ("Agent detected").
func CheckServices(serverDirExists bool) []string {
	if serverDirExists {
		return append([]string{}, AllServices...)
	}
	return append([]string{}, AgentServices...)
}

// ServiceFiles returns the files (relative to the data dir DD) a service
// covers in `k3s certificate check|rotate`, or K3s's error for an unknown
// service.
func ServiceFiles(service string) ([]string, error) {
	f, ok := serviceFiles[service]
	if !ok {
		return nil, fmt.Errorf("%s is not a recognized service", service)
	}
	return append([]string{}, f...), nil
}

// FilesForServices returns the DD-relative files of several services, each
// once, in service order.
func FilesForServices(services []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, s := range services {
		fs, err := ServiceFiles(s)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// CAFingerprints fingerprints a CA bundle (used by facts and verify): the
// sha256 of the file bytes, the subject CN of the first cert and the number
// of certs.
func CAFingerprints(bundle []byte) (CAFingerprint, error) {
	certs, err := ParseCertsPEM(bundle)
	if err != nil {
		return CAFingerprint{}, fmt.Errorf("fingerprint CA bundle: %w", err)
	}
	sum := sha256.Sum256(bundle)
	fp := CAFingerprint{SHA256: hex.EncodeToString(sum[:]), Subject: certs[0].Subject.CommonName, Certs: len(certs)}
	if r, err := RootsOf(bundle); err == nil {
		if r.Current != "" {
			fp.Roots = append(fp.Roots, r.Current)
		}
		fp.Roots = append(fp.Roots, r.Others...)
	}
	return fp, nil
}

// RenewsAtStart says whether K3s reissues the certificate c at the next
// start of its node: a leaf (not a CA) that is expired or expires within
// renewDays (RenewDays of the node's release; K3s's expired() in
// pkg/daemons/control/deps). Agents re-request theirs at every start
// anyway; the window is what makes the renewal a need.
func RenewsAtStart(c CertStatus, renewDays int) bool {
	return !c.IsCA && c.Status != StatusNotYetValid && c.ResidualTime <= time.Duration(renewDays)*24*time.Hour
}

// CaretakerStatus is caretaker's verdict on a certificate that `k3s
// certificate check` calls k3sStatus: NOT YET VALID and EXPIRED stay; a
// certificate expiring within warnDays is WARNING (a restart renews a leaf,
// but one must happen before it expires); a leaf K3s renews at its next
// start (RenewsAtStart) and expiring later than that is RENEWS-AT-RESTART;
// anything else is OK (a CA within K3s's window but beyond warnDays too:
// CAs are rotated, not renewed).
func CaretakerStatus(c CertStatus, renewDays, warnDays int) string {
	switch {
	case c.Status == StatusNotYetValid || c.Status == StatusExpired:
		return c.Status
	case c.ResidualTime <= time.Duration(warnDays)*24*time.Hour:
		return StatusWarning
	case RenewsAtStart(c, renewDays):
		return StatusRenewsAtRestart
	}
	return StatusOK
}
