package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/runner/journal"
)

// pruneJournal writes the journal of a run that was active at; status ""
// leaves it interrupted. undo, when set, is the data of an undo action it
// recorded (which may name a backup).
func pruneJournal(t *testing.T, state, id, playbook, cluster string, at time.Time, status, undo string) {
	t.Helper()
	dir := journal.RunDir(state, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	meta := journal.RunMeta{RunID: id, Playbook: playbook, Cluster: cluster, Started: at}
	entries := []journal.Entry{{Type: "run", At: at, Attempt: 1, Meta: &meta}, {Type: "attempt", At: at, Attempt: 1}}
	if undo != "" {
		entries = append(entries, journal.Entry{Type: "undo", At: at, Attempt: 1, Seq: 1, Node: "s1", Kind: "k3s.restore", Data: json.RawMessage(undo)})
	}
	if status != "" {
		entries = append(entries, journal.Entry{Type: "run_done", At: at, Attempt: 1, Status: status})
	}
	var b strings.Builder
	for _, e := range entries {
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, "journal.jsonl"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pruneBackup writes a controller-side backup of two nodes, made by run.
func pruneBackup(t *testing.T, state, name, run string, created time.Time) {
	t.Helper()
	for _, node := range []string{"s1", "s2"} {
		dir := filepath.Join(state, "backups", name, node)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m, _ := json.Marshal(map[string]any{"node": node, "name": name, "run_id": run, "created": created})
		for file, data := range map[string][]byte{"manifest.json": m, "backup.tar.gz": make([]byte, 2048)} {
			p := filepath.Join(dir, file)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, created, created); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// prune removes old runs and backups, and keeps what must stay: the
// newest run of each playbook on each cluster, runs in use, journals it
// cannot read, backups a remaining run made or names, and the locks.
func TestPrune(t *testing.T) {
	state := t.TempDir()
	now := time.Now()
	days := func(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }
	pruneJournal(t, state, "20260101-000000-rotate-ca-old1", "rotate-ca", "prod", days(40), "ok", "")
	pruneJournal(t, state, "20260102-000000-rotate-ca-old2", "rotate-ca", "prod", days(35), "", "")
	pruneJournal(t, state, "20260103-000000-rotate-ca-new", "rotate-ca", "prod", days(1), "ok", `{"node":"s1","backup":"golden","files":["/var/lib/rancher/k3s/server/tls/server-ca.crt"]}`)
	pruneJournal(t, state, "20260104-000000-check-certs-last", "check-certs", "prod", days(50), "failed", "")
	pruneJournal(t, state, "20260105-000000-rotate-ca-stage", "rotate-ca", "stage", days(60), "ok", "")
	pruneJournal(t, state, "20260106-000000-rotate-ca-busy", "rotate-ca", "prod", days(45), "failed", "")
	pruneJournal(t, state, "20260107-000000-rotate-ca-mid", "rotate-ca", "prod", days(20), "ok", "")
	if err := os.WriteFile(filepath.Join(journal.RunDir(state, "20260106-000000-rotate-ca-busy"), "token"), []byte("K10secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := journal.RunDir(state, "20260108-000000-damaged")
	if err := os.MkdirAll(damaged, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(damaged, "journal.jsonl"), []byte("not json\n{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(damaged, "journal.jsonl"), days(90), days(90)); err != nil {
		t.Fatal(err)
	}
	pruneBackup(t, state, "20260101-000000-rotate-ca-old1", "20260101-000000-rotate-ca-old1", days(40))
	pruneBackup(t, state, "golden", "20260101-000000-rotate-ca-old1", days(100))
	pruneBackup(t, state, "orphan", "20250101-000000-gone", days(31))
	pruneBackup(t, state, "stage-pre", "20260105-000000-rotate-ca-stage", days(60))
	pruneBackup(t, state, "recent", "20250101-000000-gone", days(3))
	lockFile := filepath.Join(state, "locks", "prod.lock")
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lockFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(lockFile, days(400), days(400)); err != nil {
		t.Fatal(err)
	}
	unlock, err := journal.LockRun(state, "20260106-000000-rotate-ca-busy") // a resume or undo holds it
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	gone := []string{
		journal.RunDir(state, "20260101-000000-rotate-ca-old1"),
		journal.RunDir(state, "20260102-000000-rotate-ca-old2"),
		filepath.Join(state, "backups", "20260101-000000-rotate-ca-old1"),
		filepath.Join(state, "backups", "orphan"),
	}
	stay := []string{
		journal.RunDir(state, "20260103-000000-rotate-ca-new"),
		journal.RunDir(state, "20260104-000000-check-certs-last"),
		journal.RunDir(state, "20260105-000000-rotate-ca-stage"),
		journal.RunDir(state, "20260106-000000-rotate-ca-busy"),
		journal.RunDir(state, "20260107-000000-rotate-ca-mid"),
		damaged,
		filepath.Join(state, "backups", "golden"),
		filepath.Join(state, "backups", "stage-pre"),
		filepath.Join(state, "backups", "recent"),
		lockFile,
	}

	code, out, errOut := runCLI(t, "prune", "--keep", "30d", "--state-dir", state, "--dry-run")
	if code != 0 {
		t.Fatalf("prune --dry-run: exit %d: %s\n%s", code, errOut, out)
	}
	for _, want := range []string{
		"would remove run 20260101-000000-rotate-ca-old1 (rotate-ca on prod, ok, last active ",
		"would remove run 20260102-000000-rotate-ca-old2 (rotate-ca on prod, interrupted,",
		"would remove backup 20260101-000000-rotate-ca-old1 (",
		"would remove backup orphan (",
		"kept run 20260104-000000-check-certs-last: the newest run of check-certs on cluster prod",
		"kept run 20260105-000000-rotate-ca-stage: the newest run of rotate-ca on cluster stage",
		"kept run 20260106-000000-rotate-ca-busy: run 20260106-000000-rotate-ca-busy is in progress in another caretaker process",
		"kept run 20260108-000000-damaged: its journal cannot be read",
		"kept backup golden: a run that stays names it in its journal",
		"kept backup stage-pre: made by run 20260105-000000-rotate-ca-stage, which stays",
		"would remove 2 run(s) and 2 backup(s) last active before ",
		"kept 6 run(s) and 3 backup(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("prune --dry-run lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`would remove backup orphan \(` + regexp.QuoteMeta(filepath.Join(state, "backups", "orphan")) + `, 31d ago\): 4\.\d KiB`).MatchString(out) {
		t.Errorf("prune --dry-run does not give the orphan backup's path, age and size:\n%s", out)
	}
	for _, p := range append(append([]string{}, gone...), stay...) {
		if !exists(p) {
			t.Errorf("--dry-run removed %s", p)
		}
	}

	code, out, errOut = runCLI(t, "prune", "--keep", "30d", "--state-dir", state)
	if code != 0 {
		t.Fatalf("prune: exit %d: %s\n%s", code, errOut, out)
	}
	if !strings.Contains(out, "removed run 20260101-000000-rotate-ca-old1 ") || !strings.Contains(out, "removed 2 run(s) and 2 backup(s)") {
		t.Errorf("prune output:\n%s", out)
	}
	for _, p := range gone {
		if exists(p) {
			t.Errorf("prune left %s", p)
		}
	}
	for _, p := range stay {
		if !exists(p) {
			t.Errorf("prune removed %s", p)
		}
	}
	// Once the run in use is free, it goes too; `caretaker runs` still
	// reads what is left.
	unlock()
	if code, out, _ := runCLI(t, "prune", "--keep", "30d", "--state-dir", state); code != 0 || !strings.Contains(out, "removed run 20260106-000000-rotate-ca-busy") || exists(journal.RunDir(state, "20260106-000000-rotate-ca-busy")) {
		t.Errorf("prune of the freed run: exit %d\n%s", code, out)
	}
	if code, out, errOut := runCLI(t, "runs", "--state-dir", state); code != 0 || !strings.Contains(out, "20260103-000000-rotate-ca-new") || strings.Contains(out, "old1") {
		t.Errorf("runs after prune: exit %d %s\n%s", code, errOut, out)
	}
}

func TestPruneKeepAndErrors(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1w3d": 10 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute,
	} {
		if got, err := parseKeep(in); err != nil || got != want {
			t.Errorf("parseKeep(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	state := t.TempDir()
	for _, bad := range [][]string{{"--keep", "30x"}, {"--keep", "0d"}, {"--keep", "-1d"}, {"--keep", "d"}, {"--keep", ""}, {}} {
		code, _, errOut := runCLI(t, append([]string{"prune", "--state-dir", state}, bad...)...)
		if code != exitBadInput || !strings.Contains(errOut, "30d") {
			t.Errorf("prune %v: exit %d, want 2 with an example: %s", bad, code, errOut)
		}
	}
	code, out, _ := runCLI(t, "prune", "--keep", "30d", "--state-dir", filepath.Join(state, "none"))
	if code != 0 || !strings.Contains(out, "nothing to prune") {
		t.Errorf("prune of a missing state dir: exit %d %q", code, out)
	}
}
