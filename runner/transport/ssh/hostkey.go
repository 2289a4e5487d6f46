package ssh

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport"
)

// hostKeyChecker verifies the host key of one SSH endpoint against one
// known_hosts file. Its callback records the error it returned, so that the
// dialer can report it as it is instead of behind x/crypto's "handshake
// failed" prefix.
type hostKeyChecker struct {
	label  string // "node server-1" or "jump host bastion for node server-1"
	file   string
	policy HostKeyPolicy
	err    error
}

// knownHostsLocks serialises accept-new appends within this process, per
// file; flock serialises them between processes.
var knownHostsLocks sync.Map // path -> *sync.Mutex

// knownHostsCache keeps the parsed known_hosts of each file, keyed by path
// and valid while the file's size, mtime and inode stay the same: a run
// connecting to many nodes parses the file once, not twice per node (the
// parse ran inside every handshake and, at 1,000 nodes, against
// connect_timeout).
var knownHostsCache sync.Map // path -> knownHostsEntry

type knownHostsEntry struct {
	size  int64
	mtime int64
	ino   uint64
	cb    ssh.HostKeyCallback
}

// loadKnownHosts returns a callback over file, parsed once per version of
// the file; a missing file is an empty database.
func loadKnownHosts(file string) (ssh.HostKeyCallback, error) {
	st, err := os.Stat(file)
	if err != nil {
		return parseKnownHosts(file)
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	if v, ok := knownHostsCache.Load(file); ok {
		e := v.(knownHostsEntry)
		if e.size == st.Size() && e.mtime == st.ModTime().UnixNano() && e.ino == ino {
			return e.cb, nil
		}
	}
	cb, err := parseKnownHosts(file)
	if err != nil {
		return nil, err
	}
	knownHostsCache.Store(file, knownHostsEntry{size: st.Size(), mtime: st.ModTime().UnixNano(), ino: ino, cb: cb})
	return cb, nil
}

// parseKnownHosts reads file afresh.
func parseKnownHosts(file string) (ssh.HostKeyCallback, error) {
	cb, err := knownhosts.New(file)
	if errors.Is(err, fs.ErrNotExist) {
		return func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read known_hosts %s: %w", file, err)
	}
	warnUnreadableKnownHosts(file)
	return cb, nil
}

// warnedKnownHosts are the known_hosts files already warned about.
var warnedKnownHosts sync.Map // path -> bool

// warnings is where warnings about the SSH setup go (SetWarnings).
var warnings = struct {
	sync.Mutex
	w io.Writer
}{w: os.Stderr}

// SetWarnings sends warnings about the SSH setup that do not stop a
// connection (known_hosts lines that do not parse, which x/crypto skips
// silently) to w, os.Stderr by default; nil discards them. A terminal view
// collects them while it owns the screen.
func SetWarnings(w io.Writer) {
	warnings.Lock()
	defer warnings.Unlock()
	warnings.w = w
}

// warnUnreadableKnownHosts warns, once per file and process, about the
// lines of a known_hosts file that do not parse: they are skipped even
// when another line matches, and the skipped one is often the entry meant
// for a node.
func warnUnreadableKnownHosts(file string) {
	bad := unreadableKnownHosts(file)
	if len(bad) == 0 {
		return
	}
	if _, done := warnedKnownHosts.LoadOrStore(file, true); done {
		return
	}
	where := make([]string, 0, len(bad))
	for _, b := range bad {
		where = append(where, fmt.Sprintf("%s:%d: %s", file, b.line, b.why))
	}
	warnings.Lock()
	defer warnings.Unlock()
	if warnings.w != nil {
		more := ""
		if len(bad) == maxBadLines {
			more = " (the first five)"
		}
		fmt.Fprintf(warnings.w, "caretaker: warning: %s: these known_hosts line(s)%s do not parse and are ignored; fix or remove them\n", strings.Join(where, "; "), more)
	}
}

func (h *hostKeyChecker) callback(hostport string, remote net.Addr, key ssh.PublicKey) error {
	h.err = h.check(hostport, remote, key)
	return h.err
}

func (h *hostKeyChecker) check(hostport string, remote net.Addr, key ssh.PublicKey) error {
	db, err := loadKnownHosts(h.file)
	if err != nil {
		return fmt.Errorf("%s (%s): %w: %w; fix or remove the broken lines", h.label, hostport, errs.ErrHostKey, err)
	}
	err = db(hostport, remote, key)
	if err == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		return fmt.Errorf("%s (%s): %w: host key %s %s is marked @revoked in %s line %d; the node must get a new host key",
			h.label, hostport, errs.ErrHostKey, key.Type(), ssh.FingerprintSHA256(key), re.Revoked.Filename, re.Revoked.Line)
	case errors.As(err, &ke) && len(ke.Want) > 0:
		return h.changed(hostport, key, ke.Want)
	case errors.As(err, &ke):
		if h.policy == HostKeyAcceptNew {
			return h.acceptNew(hostport, remote, key)
		}
		return h.unknown(hostport, key)
	default:
		return fmt.Errorf("%s (%s): %w: %w", h.label, hostport, errs.ErrHostKey, err)
	}
}

func (h *hostKeyChecker) unknown(hostport string, key ssh.PublicKey) error {
	host, port := splitHostPortDefault(hostport)
	where := "is not in " + h.file
	if _, err := os.Stat(h.file); errors.Is(err, fs.ErrNotExist) {
		where = "cannot be checked: the known_hosts file " + h.file + " does not exist"
	} else if bad := unreadableKnownHosts(h.file); len(bad) > 0 {
		lines := make([]string, 0, len(bad))
		for _, b := range bad {
			lines = append(lines, fmt.Sprintf("line %d: %s", b.line, b.why))
		}
		where += fmt.Sprintf(" (which has %d line(s) that do not parse and were ignored: %s)", len(bad), strings.Join(lines, "; "))
	}
	return fmt.Errorf("%s (%s): %w: host key %s %s %s; verify the fingerprint out of band, then add the key "+
		"(for example: ssh-keyscan -p %s %s >> %s) or set host_key_policy: accept-new to record it on first connect",
		h.label, hostport, errs.ErrHostKey, key.Type(), ssh.FingerprintSHA256(key), where, port, host, h.file)
}

// maxBadLines is how many unparsable known_hosts lines messages name.
const maxBadLines = 5

// badLine is a known_hosts line that does not parse, and why.
type badLine struct {
	line int
	why  string
}

// unreadableKnownHosts lists the lines of a known_hosts file that do not
// parse, at most five: x/crypto's reader skips them silently, and a broken
// line is often the one that should match.
func unreadableKnownHosts(file string) []badLine {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var bad []badLine
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		marker, _, _, _, _, err := ssh.ParseKnownHosts([]byte(t))
		if err == nil && marker != "" && marker != "cert-authority" && marker != "revoked" {
			err = fmt.Errorf("unknown marker @%s", marker)
		}
		if err != nil {
			bad = append(bad, badLine{line: i + 1, why: err.Error()})
			if len(bad) == maxBadLines {
				break
			}
		}
	}
	return bad
}

func (h *hostKeyChecker) changed(hostport string, key ssh.PublicKey, want []knownhosts.KnownKey) error {
	old := want[0]
	for _, w := range want {
		if w.Key.Type() == key.Type() {
			old = w
			break
		}
	}
	return fmt.Errorf("%s (%s): %w: the host key has CHANGED, possible man-in-the-middle attack: %s line %d has %s %s "+
		"but the node presented %s %s; if the key was changed on purpose, verify the new fingerprint out of band "+
		"and remove the old entry (ssh-keygen -R %s -f %s)",
		h.label, hostport, errs.ErrHostKey, old.Filename, old.Line, old.Key.Type(), ssh.FingerprintSHA256(old.Key),
		key.Type(), ssh.FingerprintSHA256(key), transport.ShellQuote(knownhosts.Normalize(hostport)), old.Filename)
}

// acceptNew appends an unknown key to the known_hosts file. The file is
// read again under the locks, so two runs meeting the same new node record
// it once, and a key recorded meanwhile with a different value is refused.
func (h *hostKeyChecker) acceptNew(hostport string, remote net.Addr, key ssh.PublicKey) error {
	muAny, _ := knownHostsLocks.LoadOrStore(h.file, new(sync.Mutex))
	mu := muAny.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()

	fail := func(what string, err error) error {
		return fmt.Errorf("%s (%s): %w: record new host key in %s: %s: %w", h.label, hostport, errs.ErrHostKey, h.file, what, err)
	}
	if err := os.MkdirAll(filepath.Dir(h.file), 0o700); err != nil {
		return fail("create directory", err)
	}
	f, err := os.OpenFile(h.file, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail("open", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fail("lock", err)
	}
	defer func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }()

	db, err := parseKnownHosts(h.file)
	if err != nil {
		return fmt.Errorf("%s (%s): %w: %w", h.label, hostport, errs.ErrHostKey, err)
	}
	var ke *knownhosts.KeyError
	switch err := db(hostport, remote, key); {
	case err == nil:
		return nil // recorded meanwhile by someone else
	case errors.As(err, &ke) && len(ke.Want) > 0:
		return h.changed(hostport, key, ke.Want)
	case !errors.As(err, &ke):
		return fmt.Errorf("%s (%s): %w: %w", h.label, hostport, errs.ErrHostKey, err)
	}

	name := knownhosts.Normalize(hostport)
	if why := knownHostsNameProblem(name); why != "" {
		return fmt.Errorf("%s (%s): %w: not recording its host key in %s: the host name %q %s, so the line would not match it or would match other hosts; give the node its plain address or host name",
			h.label, hostport, errs.ErrHostKey, h.file, name, why)
	}
	line := knownhosts.Line([]string{name}, key) + "\n"
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := f.WriteString(line); err != nil {
		return fail("write", err)
	}
	if err := f.Sync(); err != nil {
		return fail("sync", err)
	}
	return nil
}

// knownHostsNameProblem says why name cannot be written as the host
// pattern of a known_hosts line: whitespace or control characters would
// break the line (or start a new one; found by FuzzKnownHosts), and ',',
// '*', '?', '!', a leading '@', '|' or '#' are pattern syntax that would
// make it match other hosts or nothing. "" when it can.
func knownHostsNameProblem(name string) string {
	switch {
	case name == "":
		return "is empty"
	case strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "holds whitespace or control characters"
	case strings.ContainsAny(name, ",*?!#|") || strings.HasPrefix(name, "@"):
		return "holds known_hosts pattern syntax (, * ? ! # | or a leading @)"
	}
	return ""
}

// probeKey is a key no server has, used to ask known_hosts which keys it
// holds for an address.
var probeKey = sync.OnceValues(func() (ssh.PublicKey, error) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(pub)
})

// hostKeyAlgorithms orders the client's host key algorithms so that the
// types already recorded for hostport come first: a server with several
// host keys then presents the one known_hosts can check, and a server that
// lacks that type presents another one, which is refused as changed.
func hostKeyAlgorithms(file, hostport string) []string {
	all := ssh.SupportedAlgorithms().HostKeys
	db, err := loadKnownHosts(file)
	if err != nil {
		return nil
	}
	probe, err := probeKey()
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if err := db(hostport, &net.TCPAddr{IP: net.IPv4zero}, probe); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil // unknown host: x/crypto's default order
	}
	var first []string
	seen := map[string]bool{}
	for _, w := range ke.Want {
		for _, a := range algorithmsForKeyType(w.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				first = append(first, a)
			}
		}
	}
	out := first
	for _, a := range all {
		if !seen[a] {
			out = append(out, a)
		}
	}
	return out
}

func algorithmsForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{t}
}

// splitHostPortDefault splits "host:port", defaulting the port to 22.
func splitHostPortDefault(hostport string) (host, port string) {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport, "22"
	}
	if _, err := strconv.Atoi(p); err != nil {
		return h, "22"
	}
	return h, p
}
