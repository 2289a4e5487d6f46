package main

// The machinery of the bad-input suite (badinput_test.go): one simulator
// lab shared by every case, inventory and playbook variants written to a
// directory of the suite, a fresh state directory per case, and the checks
// every case makes: the exit code, a message fragment, no file under any
// node's tree changed, the datastore's bootstrap key not rewritten, and no
// secret in stdout, stderr, JSON events or the run's journal.

import (
	"bufio"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// biCase is one bad (or odd) input and what must come of it.
type biCase struct {
	group, name string
	// args is the command line; it may write the files it names (into
	// s.dir) and use s.state, the case's own state directory.
	args func(s *biSuite) []string
	// fault changes the lab before the command; what it returns puts it
	// back after the command (the trees are compared in between).
	fault func(s *biSuite) func()
	// signal, when set, is sent once every node has printed output (its
	// command runs: runtime signals).
	signal syscall.Signal
	// code is the exit code the case must end with; want are fragments of
	// stdout+stderr (what, where, what to do).
	code int
	want []string
	// check, when set, looks at the result beyond code and fragments.
	check func(t *testing.T, s *biSuite, r cliResult)
}

// biSuite is the shared lab and what the cases need of it.
type biSuite struct {
	t       *testing.T
	lab     *e2eLab
	dir     string // the suite's files: inventory variants, playbooks
	inv     string // the lab's inventory with absolute paths, in dir
	base    string // its text
	state   string // the current case's state directory
	secrets []string
	tokenKV string           // the etcd key of the bootstrap data
	etcd    *clientv3.Client // straight to the lab's etcd members
}

// newBISuite starts the lab (3 servers, 1 agent) and collects the secrets
// no output may show.
func newBISuite(t *testing.T) *biSuite {
	l := startE2ELab(t, lab.Options{Servers: 3, Agents: 1})
	s := &biSuite{t: t, lab: l, dir: t.TempDir()}
	data, err := os.ReadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	ld := l.Dir()
	s.base = strings.NewReplacer(
		"- id_ed25519", "- "+filepath.Join(ld, "id_ed25519"),
		"known_hosts: known_hosts", "known_hosts: "+filepath.Join(ld, "known_hosts"),
		"config_file: ssh_config", "config_file: "+filepath.Join(ld, "ssh_config"),
	).Replace(string(data))
	s.inv = s.write("inventory.yaml", s.base)
	tok := l.Token()
	pass, err := k3s.NormalizeToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	s.tokenKV = k3s.StorageKey(pass)
	s.etcd = l.etcdClient()
	s.secrets = []string{tok, pass}
	s.secrets = append(s.secrets, privateKeyLines(t, append([]string{filepath.Join(ld, "id_ed25519")}, l.NodeRoot("server-1"))...)...)
	return s
}

// privateKeyLines collects, from the files under the paths, a line of
// the body of every PEM private key (the text that must never be shown).
func privateKeyLines(t *testing.T, paths ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, root := range paths {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.Contains(p, "/server/db/") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil || !strings.Contains(string(b), "PRIVATE KEY-----") {
				return nil
			}
			lines := strings.Split(string(b), "\n")
			for i, line := range lines {
				if strings.HasPrefix(line, "-----BEGIN") && i+1 < len(lines) && len(lines[i+1]) >= 40 && !seen[lines[i+1]] {
					seen[lines[i+1]] = true
					out = append(out, lines[i+1])
				}
			}
			return nil
		})
	}
	if len(out) < 3 {
		t.Fatalf("bad-input suite: found only %d private keys to look for", len(out))
	}
	return out
}

// write writes a file of the suite and returns its path.
func (s *biSuite) write(name, data string) string {
	p := filepath.Join(s.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// variant writes the base inventory changed by edit (which must change
// it) and returns its path.
func (s *biSuite) variant(name string, edit func(string) string) string {
	out := edit(s.base)
	if out == s.base {
		s.t.Fatalf("bad-input suite: variant %s does not change the inventory", name)
	}
	return s.write("inv/"+name+".yaml", out)
}

// lineOf is the 1-based line of the first line of text containing sub.
func lineOf(text, sub string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	return 0
}

// replaceFirst replaces the first occurrence of old in s (old must occur).
func replaceFirst(s, old, new string) string { return strings.Replace(s, old, new, 1) }

// firstMatch is the first match of re in the base inventory.
func (s *biSuite) firstMatch(re string) string {
	m := regexp.MustCompile(re).FindString(s.base)
	if m == "" {
		s.t.Fatalf("bad-input suite: %s not in the inventory", re)
	}
	return m
}

// runCase runs one case: fault, snapshot, command, snapshot, restore, then
// the checks.
func (s *biSuite) runCase(t *testing.T, c biCase) {
	s.state = t.TempDir()
	args := c.args(s)
	restore := func() {}
	if c.fault != nil {
		restore = c.fault(s)
	}
	before := s.snapshot()
	rev := s.bootstrapRevision()
	var res cliResult
	if c.signal != 0 {
		res = s.runSignalled(t, c.signal, args...)
	} else {
		res = runCaretakerBinary(t, args...)
	}
	after := s.snapshot()
	revAfter := s.bootstrapRevision()
	restore()

	out := res.Stdout + res.Stderr
	if res.Code != c.code {
		t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", res.Code, c.code, clip(res.Stdout), clip(res.Stderr))
	}
	if m := containsAll(out, c.want...); len(m) > 0 {
		t.Errorf("the output lacks %q\nstdout: %s\nstderr: %s", m, clip(res.Stdout), clip(res.Stderr))
	}
	for node, snap := range before {
		if d := diffTrees(snap, after[node]); len(d) > 0 {
			t.Errorf("files changed under %s: %v", node, d)
		}
	}
	if rev != revAfter {
		t.Errorf("the datastore's bootstrap key was rewritten (revision %d → %d)", rev, revAfter)
	}
	s.noSecrets(t, res)
	if c.check != nil {
		c.check(t, s, res)
	}
}

// clip shortens output for failure messages.
func clip(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "…"
	}
	return s
}

// snapshot hashes every file of every node's tree, at once. The etcd
// member's files (server/db) are left out: etcd writes them itself, and a
// run's cluster lock lives there; the bootstrap key's revision stands for
// the datastore instead.
func (s *biSuite) snapshot() map[string]treeSnapshot {
	out := map[string]treeSnapshot{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.lab.Nodes("") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snap := snapshotTree(s.t, s.lab.NodeRoot(n), "var/lib/rancher/k3s/server/db/")
			mu.Lock()
			out[n] = snap
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// bootstrapRevision is the etcd revision of the datastore's bootstrap key.
func (s *biSuite) bootstrapRevision() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := s.etcd.Get(ctx, s.tokenKV)
	if err != nil || len(resp.Kvs) != 1 {
		s.t.Fatalf("bad-input suite: read the bootstrap key: %v", err)
	}
	return resp.Kvs[0].ModRevision
}

// noSecrets fails when a secret shows in the output, the JSON events or a
// file of the case's state directory other than backups (which hold keys
// on purpose, 0600).
func (s *biSuite) noSecrets(t *testing.T, res cliResult) {
	t.Helper()
	texts := map[string]string{"stdout": res.Stdout, "stderr": res.Stderr}
	_ = filepath.WalkDir(s.state, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && d.Name() == "backups" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil {
				texts[p] = string(b)
			}
		}
		return nil
	})
	for where, text := range texts {
		if strings.Contains(text, "PRIVATE KEY-----") {
			t.Errorf("%s shows a private key", where)
		}
		for i, sec := range s.secrets {
			if strings.Contains(text, sec) {
				t.Errorf("%s shows secret #%d (token, its password or a private key)", where, i)
			}
		}
	}
}

// runSignalled runs the binary with -o json output, sends sig once every
// node of the lab has printed output (its command is running), and
// returns the result.
func (s *biSuite) runSignalled(t *testing.T, sig syscall.Signal, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, caretakerBinary(t), args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sent := false
	printed := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		var ev struct{ Type, Node string }
		if sent || json.Unmarshal([]byte(line), &ev) != nil || ev.Type != "output" {
			continue
		}
		if printed[ev.Node] = true; len(printed) == len(s.lab.Nodes("")) {
			sent = true
			_ = cmd.Process.Signal(sig)
		}
	}
	err = cmd.Wait()
	res := cliResult{Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	if xe, ok := err.(*exec.ExitError); ok {
		res.Code = xe.ExitCode()
	} else if err != nil {
		t.Fatalf("run caretaker: %v", err)
	}
	if !sent {
		t.Errorf("the run showed no output to signal it at")
	}
	for _, line := range strings.Split(res.Stdout, "\n") {
		var raw map[string]any
		if json.Unmarshal([]byte(line), &raw) == nil {
			ty, _ := raw["type"].(string)
			res.Events = append(res.Events, e2eEvent{Type: ty, Raw: raw})
		}
	}
	return res
}

// knownHostsWithout is the lab's known_hosts without the lines of node's
// address, plus extra lines.
func (s *biSuite) knownHostsWithout(node string, extra ...string) string {
	data, err := os.ReadFile(filepath.Join(s.lab.Dir(), "known_hosts"))
	if err != nil {
		s.t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.Contains(l, "["+s.lab.NodeAddress(node)+"]") && !strings.HasPrefix(l, s.lab.NodeAddress(node)+" ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(append(keep, extra...), "\n") + "\n"
}

// withFile is a fault that replaces a node file and puts it back.
func withFile(node, path string, data []byte) func(s *biSuite) func() {
	return func(s *biSuite) func() {
		host := s.lab.HostPath(node, path)
		orig, err := os.ReadFile(host)
		if err != nil {
			s.t.Fatal(err)
		}
		fi, _ := os.Stat(host)
		if err := os.WriteFile(host, data, fi.Mode().Perm()); err != nil {
			s.t.Fatal(err)
		}
		return func() {
			if err := os.WriteFile(host, orig, fi.Mode().Perm()); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

// stoppedK3s stops K3s on node and starts it again afterwards, waiting
// until the cluster is healthy.
func stoppedK3s(node string) func(s *biSuite) func() {
	return func(s *biSuite) func() {
		svc := s.lab.Node(node).K3s.Service
		s.exec(node, "systemctl stop "+svc)
		return func() {
			s.exec(node, "systemctl start "+svc)
			for i := 0; i < 60; i++ {
				if r := runCaretakerBinary(s.t, "check", "-i", s.inv); r.Code == exitOK {
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
			s.t.Fatalf("bad-input suite: the lab is not healthy after starting K3s on %s again", node)
		}
	}
}

// exec runs a command on a node directly.
func (s *biSuite) exec(node, cmd string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, errOut, code, err := s.lab.Exec(ctx, node, cmd); err != nil || code != 0 {
		s.t.Fatalf("%s: %s: exit %d %v %s%s", node, cmd, code, err, out, errOut)
	}
}
