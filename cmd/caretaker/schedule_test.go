package main

import (
	"strings"
	"testing"
)

// schedule print writes a service + timer pair and a crontab line.
func TestSchedulePrint(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	code, out, errOut := runCLI(t, "schedule", "print", "--playbook", "check-certs", "--on", "daily", "-i", inv, "--binary", "/usr/local/bin/caretaker", "--state-dir", "/var/lib/caretaker",
		"--window", "Sat 02:00-05:00 Europe/Berlin", "--notify-url", "https://hooks.example/x?a=1%25", "--user", "ops")
	if code != 0 {
		t.Fatalf("schedule print: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"# /etc/systemd/system/caretaker-check-certs.service",
		"Type=oneshot",
		"User=ops",
		`ExecStart=/usr/local/bin/caretaker run check-certs -i ` + inv + ` --yes --output json --state-dir /var/lib/caretaker --window "Sat 02:00-05:00 Europe/Berlin" --notify-url https://hooks.example/x?a=1%%25`,
		"# /etc/systemd/system/caretaker-check-certs.timer",
		"OnCalendar=daily\nPersistent=true",
		"WantedBy=timers.target",
		"systemctl enable --now caretaker-check-certs.timer",
		`0 0 * * * /usr/local/bin/caretaker run check-certs -i ` + inv + ` --yes --output json --state-dir /var/lib/caretaker --window 'Sat 02:00-05:00 Europe/Berlin' --notify-url 'https://hooks.example/x?a=1\%25' >>/tmp/caretaker-check-certs.log 2>&1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("schedule print lacks %q:\n%s", want, out)
		}
	}
	for on, want := range map[string][2]string{
		"hourly":         {"OnCalendar=hourly", "0 * * * * "},
		"Sat 02:00":      {"OnCalendar=Sat *-*-* 02:00:00", "0 2 * * 6 "},
		"Mon..Fri 22:30": {"OnCalendar=Mon..Fri *-*-* 22:30:00", "30 22 * * 1-5 "},
		"Fri-Mon 01:15":  {"OnCalendar=Fri..Mon *-*-* 01:15:00", "15 1 * * 5-6,0-1 "},
		"*-*-1 04:00:00": {"OnCalendar=*-*-1 04:00:00", "has no crontab equivalent"},
	} {
		code, out, errOut := runCLI(t, "schedule", "print", "--check", "--on", on, "-i", inv, "--binary", "/bin/caretaker", "--metrics-file", "/var/lib/node_exporter/caretaker.prom")
		if code != 0 || !strings.Contains(out, want[0]+"\n") || !strings.Contains(out, want[1]) || !strings.Contains(out, "/bin/caretaker check -i "+inv+" --output json --warn-days 30 --metrics-file /var/lib/node_exporter/caretaker.prom") {
			t.Errorf("--on %q: exit %d %s\n%s", on, code, errOut, out)
		}
	}
	for _, bad := range [][]string{
		{"--on", "daily"}, // neither --playbook nor --check
		{"--check", "--playbook", "x", "--on", "daily"}, // both
		{"--check", "--on", "Caturday 02:00"},
		{"--check", "--on", "25:00"},
		{"--check", "--window", "whenever"},
	} {
		if code, _, _ := runCLI(t, append([]string{"schedule", "print", "-i", inv}, bad...)...); code != exitBadInput {
			t.Errorf("schedule print %v: exit %d, want 2", bad, code)
		}
	}
}
