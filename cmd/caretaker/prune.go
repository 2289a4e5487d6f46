package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/runner/journal"
)

func init() {
	extraCommands = append(extraCommands, newPruneCommand)
}

// pruneFlags are the flags of `caretaker prune`.
type pruneFlags struct {
	keep     string
	stateDir string
	dryRun   bool
}

func newPruneCommand() *cobra.Command {
	var f pruneFlags
	c := &cobra.Command{
		Use:   "prune --keep 30d [--state-dir DIR] [--dry-run]",
		Short: "Remove run journals and controller-side backups older than --keep from the state directory",
		Long: `prune removes, from the state directory, the journals of runs (STATE/runs/RUN/,
with the token files saved there) and the controller-side backups
(STATE/backups/NAME/) whose last activity is older than --keep, and prints
what it removed and how large it was. --dry-run only lists it.

It never removes: a run that is running or whose journal another process
holds (resume, undo); the newest run of each playbook on each cluster (so
also the newest run of each cluster); a journal it cannot read; a backup
made by, or named in the journal of, a run that stays. The local locks
(STATE/locks/) and the copies of backups on the nodes are never touched.

--keep takes days (30d), weeks (2w) or Go durations (36h, 90m), also
combined (1w3d).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.keep == "" {
				return usageError{fmt.Errorf("prune: give --keep, e.g. --keep 30d (runs and backups older than that are removed)")}
			}
			keep, err := parseKeep(f.keep)
			if err != nil {
				return usageError{err}
			}
			stateDir := (&runFlags{stateDir: f.stateDir}).resolvedStateDir()
			return prune(cmd.OutOrStdout(), stateDir, keep, f.dryRun, time.Now())
		},
	}
	c.Flags().StringVar(&f.keep, "keep", "", "remove what is older than this: 30d, 2w, 36h (required)")
	c.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory (default $XDG_STATE_HOME/caretaker or ~/.local/state/caretaker)")
	c.Flags().BoolVar(&f.dryRun, "dry-run", false, "list what would be removed, remove nothing")
	return c
}

var keepRe = regexp.MustCompile(`^(?:(\d+)w)?(?:(\d+)d)?(.*)$`)

// parseKeep parses --keep: weeks and days (2w, 30d, 1w3d), optionally
// followed by a Go duration (1d12h), or a Go duration alone (36h). It must
// be positive.
func parseKeep(s string) (time.Duration, error) {
	bad := fmt.Errorf("--keep %q: give a positive age such as 30d, 2w or 36h", s)
	m := keepRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil || (m[1] == "" && m[2] == "" && m[3] == "") {
		return 0, bad
	}
	var d time.Duration
	for i, unit := range []time.Duration{7 * 24 * time.Hour, 24 * time.Hour} {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.Atoi(m[i+1])
		if err != nil || n > 100*365 {
			return 0, bad
		}
		d += time.Duration(n) * unit
	}
	if m[3] != "" {
		rest, err := time.ParseDuration(m[3])
		if err != nil {
			return 0, bad
		}
		d += rest
	}
	if d <= 0 {
		return 0, bad
	}
	return d, nil
}

// pruneRun is one run directory as prune sees it.
type pruneRun struct {
	id   string
	rec  *journal.RunRecord // nil when the journal cannot be read
	err  error
	last time.Time // last activity: the newest journal entry
}

// pruner removes what is older than cutoff from stateDir.
type pruner struct {
	w        io.Writer
	stateDir string
	cutoff   time.Time
	now      time.Time
	dryRun   bool

	removed, kept map[string]int // by kind ("run", "backup")
	bytes         int64
	keptJournals  [][]byte // journals of the runs that stay
	keptRunIDs    map[string]bool
	errs          []error
}

// prune removes runs and backups older than keep (see newPruneCommand).
func prune(w io.Writer, stateDir string, keep time.Duration, dryRun bool, now time.Time) error {
	p := &pruner{w: w, stateDir: stateDir, cutoff: now.Add(-keep), now: now, dryRun: dryRun,
		removed: map[string]int{}, kept: map[string]int{}, keptRunIDs: map[string]bool{}}
	if _, err := os.Stat(stateDir); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(w, "nothing to prune: %s does not exist\n", stateDir)
		return nil
	}
	runs, err := p.readRuns()
	if err != nil {
		return err
	}
	p.pruneRuns(runs)
	if err := p.pruneBackups(); err != nil {
		p.errs = append(p.errs, err)
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s %d run(s) and %d backup(s) last active before %s, %s, from %s; kept %d run(s) and %d backup(s)\n",
		verb, p.removed["run"], p.removed["backup"], p.cutoff.Local().Format("2006-01-02 15:04"), humanSize(p.bytes), stateDir,
		p.kept["run"], p.kept["backup"])
	if len(p.errs) > 0 {
		return fmt.Errorf("prune: %w", errors.Join(p.errs...))
	}
	return nil
}

// readRuns reads every run directory that has a journal.
func (p *pruner) readRuns() ([]pruneRun, error) {
	dir := filepath.Join(p.stateDir, "runs")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune: list runs: %w", err)
	}
	var runs []pruneRun
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "journal.jsonl")); err != nil {
			continue // created but never started, or being created now
		}
		r := pruneRun{id: e.Name()}
		r.rec, r.err = journal.ReadRun(p.stateDir, e.Name())
		if r.rec != nil {
			r.last = r.rec.Updated
			if r.rec.Meta.Started.After(r.last) {
				r.last = r.rec.Meta.Started
			}
		}
		runs = append(runs, r)
	}
	sort.Slice(runs, func(a, b int) bool { return runs[a].id < runs[b].id })
	return runs, nil
}

// newestRuns are the runs that are the newest of their playbook on their
// cluster (by start time).
func newestRuns(runs []pruneRun) map[string]bool {
	newest := map[string]*journal.RunRecord{}
	for _, r := range runs {
		if r.rec == nil {
			continue
		}
		k := r.rec.Meta.Cluster + "\x00" + r.rec.Meta.Playbook
		if n, ok := newest[k]; !ok || r.rec.Meta.Started.After(n.Meta.Started) {
			newest[k] = r.rec
		}
	}
	out := map[string]bool{}
	for _, rec := range newest {
		out[rec.Meta.RunID] = true
	}
	return out
}

// pruneRuns removes the runs older than the cutoff that may go.
func (p *pruner) pruneRuns(runs []pruneRun) {
	newest := newestRuns(runs)
	for _, r := range runs {
		dir := journal.RunDir(p.stateDir, r.id)
		reason := ""
		switch {
		case r.rec == nil:
			reason = fmt.Sprintf("its journal cannot be read (%v)", r.err)
		case !r.last.Before(p.cutoff):
			// young enough: kept without a word
		case r.rec.State == journal.RunStateRunning:
			reason = "it is running"
		case newest[r.id]:
			reason = fmt.Sprintf("the newest run of %s on cluster %s", r.rec.Meta.Playbook, r.rec.Meta.Cluster)
		default:
			if p.removeRun(r, dir) {
				continue
			} // else removeRun said why it stays
		}
		if reason != "" {
			fmt.Fprintf(p.w, "kept run %s: %s\n", r.id, reason)
		}
		p.keepRun(r.id, dir)
	}
}

// removeRun removes one run's directory while holding its journal's lock,
// so that no resume or undo starts meanwhile. It reports whether the run
// is gone (or, with --dry-run, would be).
func (p *pruner) removeRun(r pruneRun, dir string) bool {
	unlock, err := journal.LockRun(p.stateDir, r.id)
	if err != nil {
		fmt.Fprintf(p.w, "kept run %s: %v\n", r.id, err)
		return false
	}
	defer unlock()
	size := dirSize(dir)
	m := r.rec.Meta
	what := fmt.Sprintf("run %s (%s on %s, %s, last active %s, %s ago): %s", r.id, m.Playbook, m.Cluster, stateLabel(r.rec),
		r.last.Local().Format("2006-01-02 15:04"), ageString(p.now.Sub(r.last)), humanSize(size))
	if p.dryRun {
		fmt.Fprintln(p.w, "would remove", what)
	} else {
		if err := os.RemoveAll(dir); err != nil {
			p.errs = append(p.errs, fmt.Errorf("remove run %s: %w", r.id, err))
			fmt.Fprintf(p.w, "kept run %s: %v\n", r.id, err)
			return false
		}
		fmt.Fprintln(p.w, "removed", what)
	}
	p.removed["run"]++
	p.bytes += size
	return true
}

// keepRun notes a run that stays: its backups stay with it.
func (p *pruner) keepRun(id, dir string) {
	p.kept["run"]++
	p.keptRunIDs[id] = true
	if data, err := os.ReadFile(filepath.Join(dir, "journal.jsonl")); err == nil {
		p.keptJournals = append(p.keptJournals, data)
	}
}

// backupInfo is what prune reads of one controller-side backup
// (STATE/backups/NAME/NODE/manifest.json, one per node).
type backupInfo struct {
	name    string
	created time.Time
	runIDs  []string
}

// readBackup reads a backup directory (node backups with their manifests,
// datastore snapshots): created is the newest of the manifests' creation
// times and the files' modification times.
func readBackup(dir, name string) backupInfo {
	b := backupInfo{name: name}
	var mtime, made time.Time
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().After(mtime) {
			mtime = fi.ModTime()
		}
		if d.Name() != "manifest.json" {
			return nil
		}
		var m struct {
			RunID   string    `json:"run_id"`
			Created time.Time `json:"created"`
		}
		if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &m) == nil {
			if m.RunID != "" {
				b.runIDs = append(b.runIDs, m.RunID)
			}
			if m.Created.After(made) {
				made = m.Created
			}
		}
		return nil
	})
	b.created = mtime
	if made.After(mtime) {
		b.created = made
	}
	return b
}

// backupNeeded says why a backup must stay: a run that stays made it, is
// named after it, or mentions it in its journal.
func (p *pruner) backupNeeded(b backupInfo) string {
	if p.keptRunIDs[b.name] {
		return "run " + b.name + " stays"
	}
	for _, id := range b.runIDs {
		if p.keptRunIDs[id] {
			return "made by run " + id + ", which stays"
		}
	}
	quoted := []byte(`"` + b.name + `"`)
	path := []byte("/backups/" + b.name + "/")
	for _, j := range p.keptJournals {
		if bytes.Contains(j, quoted) || bytes.Contains(j, path) {
			return "a run that stays names it in its journal"
		}
	}
	return ""
}

// pruneBackups removes the controller-side backups older than the cutoff
// that no remaining run needs.
func (p *pruner) pruneBackups() error {
	dir := filepath.Join(p.stateDir, "backups")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list backups: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		bdir := filepath.Join(dir, e.Name())
		b := readBackup(bdir, e.Name())
		if !b.created.Before(p.cutoff) {
			p.kept["backup"]++
			continue
		}
		if why := p.backupNeeded(b); why != "" {
			fmt.Fprintf(p.w, "kept backup %s: %s\n", b.name, why)
			p.kept["backup"]++
			continue
		}
		size := dirSize(bdir)
		what := fmt.Sprintf("backup %s (%s, %s ago): %s", b.name, bdir, ageString(p.now.Sub(b.created)), humanSize(size))
		if p.dryRun {
			fmt.Fprintln(p.w, "would remove", what)
		} else if err := os.RemoveAll(bdir); err != nil {
			p.errs = append(p.errs, fmt.Errorf("remove backup %s: %w", b.name, err))
			p.kept["backup"]++
			continue
		} else {
			fmt.Fprintln(p.w, "removed", what)
		}
		p.removed["backup"]++
		p.bytes += size
	}
	return nil
}

// dirSize is the size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// humanSize formats a byte count: 512 B, 12.3 KiB, 4.0 MiB.
func humanSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, units := float64(n)/1024, []string{"KiB", "MiB", "GiB", "TiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// ageString formats an age in days, or hours below two days.
func ageString(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
