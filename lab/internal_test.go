package lab

import (
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

func mustVersion(s string) k3s.Version { return k3s.MustParseVersion(s) }

func TestLogrusLine(t *testing.T) {
	at := time.Date(2026, 11, 27, 14, 34, 28, 0, time.UTC)
	got := logrusLine(at, "fatal", `/var/lib/rancher/k3s/server/tls/client-ca.crt newer than datastore`)
	want := `time="2026-11-27T14:34:28Z" level=fatal msg="/var/lib/rancher/k3s/server/tls/client-ca.crt newer than datastore"`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := logrusLine(at, "warning", `Get "https://x": refused`); got != `time="2026-11-27T14:34:28Z" level=warning msg="Get \"https://x\": refused"` {
		t.Errorf("quotes: %s", got)
	}
	if got := logfmtQuote("plain"); got != "plain" {
		t.Errorf("bare value quoted: %s", got)
	}
}

func TestParseJournalTime(t *testing.T) {
	now := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	cases := map[string]time.Time{
		"2026-11-27 13:59:30": time.Date(2026, 11, 27, 13, 59, 30, 0, time.UTC),
		"2026-11-27":          time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
		"13:00:00":            time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC),
		"@1795788000":         time.Unix(1795788000, 0),
		"-30s":                now.Add(-30 * time.Second),
		"5 min ago":           now.Add(-5 * time.Minute),
		"today":               time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
		"now":                 now,
	}
	for in, want := range cases {
		got, err := parseJournalTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %s %v, want %s", in, got, err, want)
		}
	}
	if _, err := parseJournalTime("soon", now); err == nil {
		t.Error("nonsense accepted")
	}
}

func TestOptionsValidation(t *testing.T) {
	base := Options{Dir: t.TempDir(), Servers: 3, Agents: 1, ShimBinary: "/bin/true"}
	bad := []func(*Options){
		func(o *Options) { o.Servers = 0 },
		func(o *Options) { o.Version = "1.x" },
		func(o *Options) { o.NodeVersions = map[string]string{"server-9": "v1.32.3+k3s1"} },
		func(o *Options) { o.ServerSource = map[string]string{"agent-1": SourceEnv} },
		func(o *Options) { o.ServerSource = map[string]string{"server-2": "yaml"} },
		func(o *Options) { o.Scenario = "ha" },
		func(o *Options) { o.SSH = "dropbear" },
		func(o *Options) { o.Subnet = "10.0.0" },
		func(o *Options) { o.Token = "a,b" },
	}
	for i, f := range bad {
		o := base
		f(&o)
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("case %d: invalid options accepted: %+v", i, o)
		}
	}
	o, err := base.withDefaults()
	if err != nil || o.Version != DefaultVersion || o.Scenario != ScenarioInitReplaced || o.SSH != SSHInProcess || o.Subnet != DefaultSubnet || o.Name != "lab" {
		t.Errorf("defaults: %+v %v", o, err)
	}
}

func TestHasDynamicCertRegenerate(t *testing.T) {
	for v, want := range map[string]bool{"v1.32.9+k3s1": false, "v1.32.10+k3s1": true, "v1.30.10+k3s1": false, "v1.35.0+k3s1": true, "v1.33.6+k3s1": true} {
		if got := hasDynamicCertRegenerate(mustVersion(v)); got != want {
			t.Errorf("%s: %v", v, got)
		}
	}
}
