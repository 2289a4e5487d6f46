package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// schedule print writes a service + timer pair, the notify unit and its
// env file, and the crontab lines with their logrotate snippet.
func TestSchedulePrint(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	url := "https://hooks.example/T0/B0/secret?a=1%25"
	code, out, errOut := runCLI(t, "schedule", "print", "--playbook", "check-certs", "--on", "daily", "-i", inv, "--binary", "/usr/local/bin/caretaker", "--state-dir", "/var/lib/caretaker",
		"--window", "Sat 02:00-05:00 Europe/Berlin", "--notify-url", url, "--user", "ops")
	if code != 0 {
		t.Fatalf("schedule print: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"# /etc/systemd/system/caretaker-check-certs.service\n",
		"OnFailure=caretaker-check-certs-notify.service\n",
		"[Service]\nType=oneshot\nUser=ops\n",
		"EnvironmentFile=/etc/caretaker/caretaker-check-certs.env\n",
		"SyslogIdentifier=caretaker-check-certs\n",
		`ExecStart=/usr/local/bin/caretaker run check-certs -i ` + inv + ` --yes --output json --state-dir /var/lib/caretaker --window "Sat 02:00-05:00 Europe/Berlin" --notify-url ${CARETAKER_NOTIFY_URL}` + "\n",
		"# journals and backups older than 30d are pruned by caretaker-check-certs-prune.timer\n",
		"# timers and cron have no SSH agent (no SSH_AUTH_SOCK)",
		"# /etc/systemd/system/caretaker-check-certs-notify.service\n",
		"SyslogIdentifier=caretaker-check-certs-notify\nExecStart=/usr/local/bin/caretaker schedule notify --unit caretaker-check-certs.service\n",
		"# /etc/systemd/system/caretaker-check-certs.timer\n",
		"OnCalendar=daily\nPersistent=true",
		"WantedBy=timers.target",
		"systemctl enable --now caretaker-check-certs.timer caretaker-check-certs-prune.timer\n",
		// The prune pair: its own service and a daily timer, as the crontab line.
		"# /etc/systemd/system/caretaker-check-certs-prune.service\n",
		"[Service]\nType=oneshot\nUser=ops\nSyslogIdentifier=caretaker-check-certs-prune\nExecStart=/usr/local/bin/caretaker prune --keep 30d --state-dir /var/lib/caretaker\n",
		"# /etc/systemd/system/caretaker-check-certs-prune.timer\n",
		"[Timer]\nOnCalendar=*-*-* 04:30:00\nPersistent=true\n",
		"install -D -m 0600 -o ops -g ",
		"\nCARETAKER_NOTIFY_URL='" + url + "'\n",
		"install -d -m 0750 -o ops -g ",
		"\n0 0 * * * . /etc/caretaker/caretaker-check-certs.env && /usr/local/bin/caretaker run check-certs -i " + inv + ` --yes --output json --state-dir /var/lib/caretaker --window 'Sat 02:00-05:00 Europe/Berlin' --notify-url "$CARETAKER_NOTIFY_URL" >>/var/log/caretaker/caretaker-check-certs.log 2>&1 || /usr/local/bin/caretaker schedule notify --unit caretaker-check-certs --log /var/log/caretaker/caretaker-check-certs.log --exit-status $? >>/var/log/caretaker/caretaker-check-certs.log 2>&1` + "\n",
		"\n30 4 * * * /usr/local/bin/caretaker prune --keep 30d --state-dir /var/lib/caretaker >>/var/log/caretaker/caretaker-check-certs.log 2>&1\n",
		"# /etc/logrotate.d/caretaker-check-certs",
		"/var/log/caretaker/caretaker-check-certs.log {\n\tsu ops ",
		"\tcreate 0640 ops ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("schedule print lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ExecStartPost") {
		t.Errorf("the run's service prunes too (ExecStartPost=); the prune timer does:\n%s", out)
	}
	// The webhook URL (it may carry a token) is only in the env file.
	if n := strings.Count(out, "secret"); n != 1 {
		t.Errorf("the webhook URL shows %d times, want once (the env file):\n%s", n, out)
	}
	if strings.Contains(out, ">>/tmp") {
		t.Errorf("schedule print logs to /tmp:\n%s", out)
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
		if strings.Contains(out, "prune") || strings.Contains(out, "OnFailure") {
			t.Errorf("--check without --notify-url: no prune (check writes no journal), no OnFailure:\n%s", out)
		}
	}
	for _, bad := range [][]string{
		{"--on", "daily"}, // neither --playbook nor --check
		{"--check", "--playbook", "x", "--on", "daily"}, // both
		{"--check", "--on", "Caturday 02:00"},
		{"--check", "--on", "25:00"},
		{"--check", "--window", "whenever"},
		{"--playbook", "ping", "--prune", "forever"},
		{"--playbook", "ping", "--notify-url", "https://h.example/it's"},
		{"--playbook", "ping", "--notify-url", "https://h.example/x", "--env-file", "relative.env"},
	} {
		if code, _, _ := runCLI(t, append([]string{"schedule", "print", "--binary", "/usr/local/bin/caretaker", "-i", inv}, bad...)...); code != exitBadInput {
			t.Errorf("schedule print %v: exit %d, want 2", bad, code)
		}
	}
	code, out, _ = runCLI(t, "schedule", "print", "--playbook", "ping", "--prune", "off", "-i", inv, "--binary", "/usr/local/bin/caretaker")
	if code != 0 || strings.Contains(out, "prune") {
		t.Errorf("--prune off: exit %d\n%s", code, out)
	}
}

// The units run an installed binary: a temporary or build output is never
// scheduled.
func TestScheduleBinary(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	// The test binary is a go test build output: the units get the
	// installed path, and a note says so.
	code, out, errOut := runCLI(t, "schedule", "print", "--playbook", "ping", "-i", inv)
	if code != 0 || !strings.Contains(out, "ExecStart=/usr/local/bin/caretaker run ping ") || !strings.Contains(errOut, "install -m 0755 caretaker /usr/local/bin/") {
		t.Errorf("default --binary from a build output: exit %d\n%s\n%s", code, errOut, out)
	}
	wd, _ := os.Getwd() // the package directory, in the source tree
	for _, bin := range []string{
		filepath.Join(t.TempDir(), "caretaker"),
		filepath.Join(wd, "caretaker"),
		"caretaker", // relative: made absolute from the working directory
		"/root/.cache/go-build/00/abc-d/caretaker",
	} {
		code, _, errOut := runCLI(t, "schedule", "print", "--playbook", "ping", "-i", inv, "--binary", bin)
		if code != exitBadInput || !strings.Contains(errOut, "install it: install -m 0755 caretaker /usr/local/bin/ and pass --binary /usr/local/bin/caretaker") {
			t.Errorf("--binary %s: exit %d, want 2 with the install hint: %s", bin, code, errOut)
		}
	}
	for path, want := range map[string]string{
		"/usr/local/bin/caretaker":                    "",
		"/opt/caretaker/bin/caretaker":                "",
		filepath.Join(os.TempDir(), "x", "caretaker"): "under the temporary directory",
		"/var/tmp/caretaker":                          "under the temporary directory",
		"/tmp/go-build123/b001/exe/caretaker":         "go run/go test build output",
		filepath.Join(wd, "caretaker"):                "(it has a go.mod)",
	} {
		got := buildPathReason(path)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("buildPathReason(%s) = %q, want %q", path, got, want)
		}
	}
}

// Timers have no SSH agent: the units always say so, and warn about
// clusters whose nodes rely on one or name no key.
func TestScheduleSSHWarnings(t *testing.T) {
	key := writeTemp(t, "id_ed25519", "key")
	inv := writeTemp(t, "inv.yaml", `clusters:
  - name: keyed
    ssh: {identity_files: [`+key+`]}
    nodes:
      - {name: s1, address: 10.0.0.1, role: server}
  - name: agented
    ssh: {agent: true}
    nodes:
      - {name: s2, address: 10.0.0.2, role: server}
      - {name: s3, address: 10.0.0.3, role: server, ssh: {identity_files: [`+key+`]}}
`)
	code, out, errOut := runCLI(t, "schedule", "print", "--playbook", "ping", "-i", inv, "--binary", "/usr/local/bin/caretaker", "--cluster", "keyed", "--user", "ops")
	if code != 0 || !strings.Contains(out, "# timers and cron have no SSH agent (no SSH_AUTH_SOCK): the nodes are reached with the inventory's ssh.identity_files, which ops must be able to read") || strings.Contains(out, "WARNING") {
		t.Errorf("cluster with identity_files: exit %d %s\n%s", code, errOut, out)
	}
	code, out, errOut = runCLI(t, "schedule", "print", "--playbook", "ping", "-i", inv, "--binary", "/usr/local/bin/caretaker", "--cluster", "agented")
	for _, want := range []string{
		"# WARNING: cluster agented: ssh.agent is true and no ssh.identity_files are set (s2), but timers have no SSH_AUTH_SOCK: set ssh.identity_files",
		"# WARNING: cluster agented: ssh.agent is true (s3), but timers have no SSH_AUTH_SOCK: only the ssh.identity_files are offered",
	} {
		if code != 0 || strings.Count(out, want) != 2 || !strings.Contains(errOut, strings.TrimPrefix(want, "# WARNING: ")) {
			t.Errorf("agent cluster: want %q in the service, the crontab section and on stderr: exit %d %s\n%s", want, code, errOut, out)
		}
	}
	_, out, _ = runCLI(t, "schedule", "print", "--check", "-i", writeTemp(t, "inv.yaml", cliInventory), "--binary", "/usr/local/bin/caretaker")
	if !strings.Contains(out, "# WARNING: cluster t: no ssh.identity_files (s1, a1): timers have no SSH_AUTH_SOCK") {
		t.Errorf("inventory without keys: no warning:\n%s", out)
	}
}

// Flag help shows value types, not words of the usage text: a backquoted
// word in a usage string would become the flag's value name.
func TestScheduleHelp(t *testing.T) {
	for _, args := range [][]string{{"schedule", "print", "--help"}, {"schedule", "notify", "--help"}, {"prune", "--help"}} {
		code, out, _ := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "Flags:") {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
		flags := out[strings.Index(out, "Flags:"):]
		if m := regexp.MustCompile(`--[a-z-]+ (caretaker|[A-Z]+\b)`).FindString(flags); m != "" || strings.Contains(flags, "`") {
			t.Errorf("%v: a flag takes a word of its usage as value name (%q):\n%s", args, m, flags)
		}
	}
	_, out, _ := runCLI(t, "schedule", "print", "--help")
	if !regexp.MustCompile(`\n\s+--check\s+schedule caretaker check`).MatchString(out) || !strings.Contains(out, "--state-dir string") {
		t.Errorf("schedule print --help:\n%s", out)
	}
}

// schedule notify posts unit_failed from what systemd tells an OnFailure=
// unit, reads the URL from the environment, and keeps it out of errors.
func TestScheduleNotify(t *testing.T) {
	var bodies []map[string]any
	fail := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("notify posted %s %q (%s): %v", r.Method, b, r.Header.Get("Content-Type"), err)
		}
		bodies = append(bodies, m)
		if fail {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	t.Setenv("CARETAKER_NOTIFY_URL", srv.URL+"/hook/T0KEN")
	t.Setenv("MONITOR_EXIT_STATUS", "4")
	t.Setenv("MONITOR_SERVICE_RESULT", "exit-code")
	t.Setenv("MONITOR_INVOCATION_ID", "0123abcd")
	code, _, errOut := runCLI(t, "schedule", "notify", "--unit", "caretaker-check.service")
	if code != 0 || len(bodies) != 1 {
		t.Fatalf("schedule notify: exit %d, %d posts: %s", code, len(bodies), errOut)
	}
	b := bodies[0]
	if b["event"] != "unit_failed" || b["status"] != "failed" || b["unit"] != "caretaker-check.service" || b["exit_status"] != "4" || b["service_result"] != "exit-code" ||
		!strings.Contains(b["text"].(string), "caretaker-check.service on ") || !strings.Contains(b["text"].(string), "exit status 4 (CA drift or expired/expiring certificates)") ||
		!strings.Contains(b["text"].(string), "journalctl _SYSTEMD_INVOCATION_ID=0123abcd") {
		t.Errorf("unit_failed body: %v", b)
	}
	// A crontab line passes --exit-status and --log.
	code, _, _ = runCLI(t, "schedule", "notify", "--unit", "caretaker-ping", "--exit-status", "3", "--log", "/var/log/caretaker/caretaker-ping.log")
	if code != 0 || len(bodies) != 2 || !strings.Contains(bodies[1]["text"].(string), "exit status 3 (locked by another run); see /var/log/caretaker/caretaker-ping.log") {
		t.Errorf("notify from cron: exit %d %v", code, bodies)
	}
	fail = true
	code, _, errOut = runCLI(t, "schedule", "notify", "--unit", "x.service")
	if code != exitFailed || len(bodies) != 4 || !strings.Contains(errOut, "502") || strings.Contains(errOut, "T0KEN") {
		t.Errorf("notify to a failing hook: exit %d after %d posts, want 1 after a retry, without the URL's path: %s", code, len(bodies), errOut)
	}
	t.Setenv("CARETAKER_NOTIFY_URL", "")
	if code, _, errOut := runCLI(t, "schedule", "notify", "--unit", "x.service"); code != exitBadInput || !strings.Contains(errOut, "CARETAKER_NOTIFY_URL") {
		t.Errorf("notify without a URL: exit %d %s", code, errOut)
	}
}

// printedFiles splits schedule print's output into the files it shows,
// by their "# /path" header lines.
func printedFiles(out string) map[string]string {
	files := map[string]string{}
	cur := ""
	for _, line := range strings.SplitAfter(out, "\n") {
		if strings.HasPrefix(line, "# /") {
			cur = strings.Fields(line)[1]
			cur = strings.TrimSuffix(cur, ":")
		} else if strings.HasPrefix(line, "# crontab") {
			cur = "crontab"
		}
		files[cur] += line
	}
	return files
}

// The printed units pass systemd-analyze verify (unknown keys, bad
// quoting, a missing ExecStart binary and bad calendar expressions fail it).
func TestScheduleUnitsVerify(t *testing.T) {
	inv := writeTemp(t, "inv.yaml", cliInventory)
	for _, args := range [][]string{
		{"--playbook", "rotate-leaf-certs", "--on", "Mon..Fri 22:30", "--window", "Sat 02:00-05:00 Europe/Berlin", "--notify-url", "https://hooks.example/T/B/X?a=1%25&b=$x", "-p", "warn_days=30"},
		{"--check", "--on", "Sat 02:00", "--metrics-file", "/var/lib/node_exporter/caretaker.prom", "--notify-url", "https://hooks.example/x"},
		{"--playbook", "ping", "--on", "*-*-1 04:00:00", "--name", "ping monthly", "--prune", "off"},
	} {
		code, out, errOut := runCLI(t, append([]string{"schedule", "print", "-i", inv, "--binary", "/bin/true", "--user", "root"}, args...)...)
		if code != 0 {
			t.Fatalf("schedule print %v: exit %d: %s", args, code, errOut)
		}
		want := 2 // service, timer
		if strings.Contains(strings.Join(args, " "), "--notify-url") {
			want++ // the OnFailure= unit
		}
		if args[0] == "--playbook" && !strings.Contains(strings.Join(args, " "), "--prune off") {
			want += 2 // the prune service and timer
		}
		if units := verifyScheduleUnits(t, out, nil); len(units) != want {
			t.Errorf("schedule print %v: units %v, want %d:\n%s", args, units, want, out)
		}
		if env := printedFiles(out)["/etc/caretaker/caretaker-rotate-leaf-certs.env"]; env != "" {
			// The env file is sourced by sh in the crontab line: the URL
			// comes back byte for byte.
			p := filepath.Join(t.TempDir(), "env")
			if err := os.WriteFile(p, []byte(env), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := exec.Command("sh", "-c", `. "$1" && printf %s "$CARETAKER_NOTIFY_URL"`, "sh", p).Output()
			if err != nil || string(got) != "https://hooks.example/T/B/X?a=1%25&b=$x" {
				t.Errorf("env file sourced by sh: %q %v", got, err)
			}
		}
	}
}

// verifyScheduleUnits runs systemd-analyze verify on the systemd units in
// schedule print's output and returns their paths as printed; any
// complaint fails the test. With installed (path on this host → path the
// units name, e.g. the caretaker binary → /usr/local/bin/caretaker), the
// units are verified in a root of their own (--root) holding a copy of
// this host's systemd units, the units under /etc/systemd/system and each
// installed file: a check of the units as they would be on a server
// where caretaker is installed, without installing anything on this host.
func verifyScheduleUnits(t *testing.T, out string, installed map[string]string) []string {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("this test needs systemd-analyze (apt-get install systemd; CI's Debian 12 has it): %v", err)
	}
	dir := t.TempDir()
	unitDir, args := dir, []string{"verify"}
	if installed != nil {
		unitDir = filepath.Join(dir, "etc/systemd/system")
		args = append(args, "--root="+dir)
		copySystemUnits(t, dir)
		for from, to := range installed {
			installFile(t, from, filepath.Join(dir, to))
		}
	}
	var printed []string
	for path, text := range printedFiles(out) {
		if !strings.HasPrefix(path, "/etc/systemd/system/") {
			continue
		}
		printed = append(printed, path)
		p := filepath.Join(unitDir, filepath.Base(path))
		if err := os.MkdirAll(unitDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if installed != nil {
			p = path // as seen in the root
		}
		args = append(args, p)
	}
	sort.Strings(printed)
	cmd := exec.Command(analyze, args...)
	cmd.Dir = dir
	res, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(res))) > 0 {
		t.Errorf("systemd-analyze %s: %v\n%s\nunits:\n%s", strings.Join(args, " "), err, res, out)
	}
	return printed
}

// copySystemUnits copies this host's systemd unit directory into root, for
// the targets the printed units depend on (timers.target, sysinit.target, …).
func copySystemUnits(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "timers.target")); err != nil {
			continue
		}
		dst := filepath.Join(root, "usr/lib/systemd")
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("cp", "-a", d, dst).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", d, err, b)
		}
		return
	}
	t.Fatal("this test needs systemd's units (/usr/lib/systemd/system/timers.target; apt-get install systemd)")
}

// installFile copies the file from to to, executable.
func installFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("install", "-m", "0755", from, to).CombinedOutput(); err != nil {
		t.Fatalf("install %s %s: %v\n%s", from, to, err, b)
	}
}
