package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// entry is one journal line of a node.
type entry struct {
	At   time.Time
	Unit string // "k3s.service"
	// Ident and PID are the syslog identifier and process id journalctl
	// prints: "k3s[4242]" for K3s's own lines, "systemd[1]" for the unit's.
	Ident string
	PID   int
	Msg   string
}

// journal is a node's systemd journal: K3s's logrus lines and systemd's
// unit lines, in memory (journalctl reads it) and appended to
// DIR/run/<node>/journal.log for humans.
type journal struct {
	mu      sync.Mutex
	host    string
	entries []entry
	file    *os.File
}

func newJournal(host, path string) *journal {
	j := &journal{host: host}
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		j.file = f
	}
	return j
}

func (j *journal) add(e entry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, e)
	if j.file != nil {
		fmt.Fprintln(j.file, j.formatShort(e))
	}
}

func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.file != nil {
		_ = j.file.Close()
		j.file = nil
	}
}

// snapshot returns the entries of unit (all units when unit is "").
func (j *journal) snapshot(unit string) []entry {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []entry
	for _, e := range j.entries {
		if unit == "" || e.Unit == unit {
			out = append(out, e)
		}
	}
	return out
}

// formatShort renders e as journalctl's default "short" output.
func (j *journal) formatShort(e entry) string {
	return fmt.Sprintf("%s %s %s[%d]: %s", e.At.Format(time.Stamp), j.host, e.Ident, e.PID, e.Msg)
}

// logrusLine renders a K3s log line as logrus's text formatter does when
// not on a terminal: time="RFC3339" level=LEVEL msg="..." (golden logs-*.txt
// show the lines with the time= prefix removed).
func logrusLine(at time.Time, level, msg string) string {
	return "time=" + strconv.Quote(at.Format(time.RFC3339)) + " level=" + level + " msg=" + logfmtQuote(msg)
}

// logfmtQuote quotes a value as logrus does: bare when it only holds
// characters that need no quoting, else Go-quoted.
func logfmtQuote(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("-._/@^+", r)) {
			return strconv.Quote(s)
		}
	}
	return s
}
