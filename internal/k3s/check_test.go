package k3s

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

// goldenCheck loads golden certificate-check.json.
func goldenCheck(t *testing.T) (verbatim string, certs []CertStatus) {
	t.Helper()
	b, err := os.ReadFile("testdata/k3s-golden/certificate-check.json")
	if err != nil {
		t.Fatalf("golden data testdata/k3s-golden (a copy of shared/k3s-golden) is required for this test: %v", err)
	}
	var g struct {
		Verbatim string `json:"stdout_verbatim"`
		Parsed   struct{ Certificates []CertStatus }
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g.Verbatim, g.Parsed.Certificates
}

func TestFormatCheckJSONMatchesGolden(t *testing.T) {
	verbatim, certs := goldenCheck(t)
	if len(certs) != 85 {
		t.Fatalf("golden has %d entries", len(certs))
	}
	got, err := FormatCheckJSON(certs)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(string(got), "\n") != verbatim || !strings.HasSuffix(string(got), "\n") {
		t.Errorf("json output differs from golden:\n%s", got[:200])
	}
}

func TestFormatCheckTableMatchesGolden(t *testing.T) {
	_, certs := goldenCheck(t)
	b, err := os.ReadFile("testdata/k3s-golden/certificate-check-table.txt")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	begin := strings.Index(s, "# ---- begin stdout ----\n") + len("# ---- begin stdout ----\n")
	end := strings.Index(s, "# ---- end stdout ----")
	want := s[begin:end]
	got := FormatCheckTable(certs, time.Now())
	// Row order is map order in K3s (golden note); compare the header
	// exactly and the rows as sorted sets, trailing spaces ignored.
	norm := func(x string) []string {
		lines := strings.Split(x, "\n")
		for i := range lines {
			lines[i] = strings.TrimRight(lines[i], " ")
		}
		return lines
	}
	g, w := norm(got), norm(want)
	if len(g) != len(w) {
		t.Fatalf("table has %d lines, golden %d:\n%s", len(g), len(w), got)
	}
	for i := 0; i < 3; i++ {
		if g[i] != w[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i, g[i], w[i])
		}
	}
	gs, ws := append([]string{}, g[3:]...), append([]string{}, w[3:]...)
	sort.Strings(gs)
	sort.Strings(ws)
	for i := range gs {
		if gs[i] != ws[i] {
			t.Errorf("row:\n got %q\nwant %q", gs[i], ws[i])
		}
	}
}

func TestCheckCertificatesBoundaries(t *testing.T) {
	cas := clusterCAs(t)
	leafs, err := IssueLeafCerts(cas, LeafOptions{NodeName: "n1", Now: fixtureNow})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"/x/server/tls/client-admin.crt": leafs["server/tls/client-admin.crt"], "/x/server/tls/client-admin.key": leafs["server/tls/client-admin.key"]}
	leaf := mustCerts(t, files["/x/server/tls/client-admin.crt"])[0]
	warn := 120 * 24 * time.Hour
	cases := []struct {
		now  time.Time
		want string
	}{
		{leaf.NotBefore.Add(-time.Nanosecond), StatusNotYetValid},
		{leaf.NotBefore, StatusOK},
		{leaf.NotAfter.Add(-warn), StatusOK},
		{leaf.NotAfter.Add(-warn).Add(time.Nanosecond), StatusWarning},
		{leaf.NotAfter, StatusWarning},
		{leaf.NotAfter.Add(time.Nanosecond), StatusExpired},
	}
	for _, c := range cases {
		st := CheckCertificates(files, c.now, warn)
		if len(st) != 2 {
			t.Fatalf("want leaf + CA entries (key file skipped), got %d", len(st))
		}
		if st[0].Status != c.want || st[0].Filename != "client-admin.crt" || st[0].Subject != "system:admin" {
			t.Errorf("at %v: %+v, want %s", c.now, st[0], c.want)
		}
		wantExp := leaf.NotAfter
		if c.want == StatusNotYetValid {
			wantExp = leaf.NotBefore
		}
		if !st[0].ExpiryTime.Equal(wantExp) || st[0].ResidualTime != leaf.NotAfter.Sub(c.now) {
			t.Errorf("at %v: expiry %v residual %v", c.now, st[0].ExpiryTime, st[0].ResidualTime)
		}
		if st[1].Subject != cnOf(cas[PathClientCA]) || strings.Join(st[1].Usages, ",") != "CertSign" {
			t.Errorf("CA entry %+v", st[1])
		}
	}
	text := FormatCheckText(CheckCertificates(files, leaf.NotAfter, warn))
	if !strings.Contains(text, "client-admin.crt: certificate system:admin (ClientAuth) will expire within 120 days at ") {
		t.Errorf("text output: %s", text)
	}
}

func TestRelTime(t *testing.T) {
	now := time.Unix(0, 0)
	const day = 24 * time.Hour
	cases := map[time.Duration]string{
		0:                       "now",
		1500 * time.Millisecond: "1 second ",
		45 * time.Second:        "45 seconds ",
		90 * time.Second:        "1 minute ",
		3 * time.Hour:           "3 hours ",
		36 * time.Hour:          "1 day ",
		10 * day:                "1 week ",
		40 * day:                "1 month ",
		100 * day:               "3 months ",
		365 * day:               "1 year ",
		600 * day:               "2 years ",
		7300 * day:              "20 years ",
		-5 * day:                "5 days ",
		40 * 360 * day:          "a long while ",
	}
	for d, want := range cases {
		if got := relTime(now, now.Add(d)); got != want {
			t.Errorf("relTime(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestServiceFiles(t *testing.T) {
	if got := CheckServices(false); strings.Join(got, ",") != "kube-proxy,kubelet,k3s-controller" {
		t.Errorf("agent services %v", got)
	}
	all := CheckServices(true)
	if len(all) != 12 {
		t.Errorf("server services %v", all)
	}
	files, err := FilesForServices(all)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(files, " ")
	for _, f := range []string{"server/tls/serving-kube-apiserver.crt", "agent/serving-kubelet.crt", "server/tls/etcd/peer-server-client.crt"} {
		if !strings.Contains(joined, f) {
			t.Errorf("missing %s", f)
		}
	}
	if strings.Contains(joined, "server-ca.crt") {
		t.Error("CA files must not be part of the default services")
	}
	if _, err := ServiceFiles("nope"); err == nil || err.Error() != "nope is not a recognized service" {
		t.Errorf("unknown service: %v", err)
	}
	// Every cert file of the check set is one IssueLeafCerts writes.
	leafs := LeafFiles(LeafOptions{NodeName: "n"})
	for _, f := range files {
		if strings.HasSuffix(f, ".crt") && !containsStr(leafs, f) && f != "server/tls/client-kube-proxy.crt" && f != "server/tls/client-k3s-controller.crt" {
			t.Errorf("check covers %s which the leaf set lacks", f)
		}
	}
}

// caretaker's statuses against K3s's and the release's window: a leaf K3s
// renews at start beyond --warn-days is RENEWS-AT-RESTART; within it,
// WARNING; a CA is never renewed at start.
func TestCaretakerStatus(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		residual  time.Duration
		ca        bool
		k3s       string
		renewDays int
		want      string
		renews    bool
	}{
		{400 * day, false, StatusOK, 120, StatusOK, false},
		{100 * day, false, StatusWarning, 120, StatusRenewsAtRestart, true},
		{100 * day, false, StatusOK, 90, StatusOK, false},
		{80 * day, false, StatusWarning, 90, StatusRenewsAtRestart, true},
		{20 * day, false, StatusWarning, 120, StatusWarning, true},
		{-day, false, StatusExpired, 120, StatusExpired, true},
		{100 * day, true, StatusWarning, 120, StatusOK, false},
		{20 * day, true, StatusWarning, 120, StatusWarning, false},
		{400 * day, false, StatusNotYetValid, 120, StatusNotYetValid, false},
	}
	for i, c := range cases {
		cs := CertStatus{ResidualTime: c.residual, IsCA: c.ca, Status: c.k3s}
		if got := CaretakerStatus(cs, c.renewDays, 30); got != c.want {
			t.Errorf("case %d: CaretakerStatus = %s, want %s", i, got, c.want)
		}
		if got := RenewsAtStart(cs, c.renewDays); got != c.renews {
			t.Errorf("case %d: RenewsAtStart = %t, want %t", i, got, c.renews)
		}
	}
}
