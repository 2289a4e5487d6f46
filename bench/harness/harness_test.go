package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/runner"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// TestPlaybookRunsTheJobCommand loads bench/tls-backup.star with the real
// loader and builtins, runs it against fake nodes and checks that every
// server (and no agent) gets exactly jobCommand, and that each node's
// checksum comes back as the note the harness parses.
func TestPlaybookRunsTheJobCommand(t *testing.T) {
	cl := &inventorypkg.Cluster{Name: "t"}
	for _, n := range []struct{ name, role string }{{"server-1", inventorypkg.RoleServer}, {"server-2", inventorypkg.RoleServer}, {"agent-1", inventorypkg.RoleAgent}} {
		cl.Nodes = append(cl.Nodes, &inventorypkg.Node{Name: n.name, Cluster: "t", Address: "192.0.2.1", Role: n.role, User: "root",
			K3s: inventorypkg.K3sPaths{DataDir: inventorypkg.DefaultDataDir, Service: "k3s"}})
	}
	pre, err := builtins.Predeclared()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := runner.Load(runner.LoadOptions{Path: filepath.Join("..", "tls-backup.star"), Predeclared: pre, Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fakes := map[string]*fake.Executor{}
	connect := func(ctx context.Context, n *inventorypkg.Node) (transport.Executor, error) {
		f := fake.New(n.Name)
		sum := sha256.Sum256([]byte(n.Name))
		f.OnFunc(".*", func(line string, _ []byte, stdout, _ io.Writer) int {
			io.WriteString(stdout, hex.EncodeToString(sum[:])+"  "+serverDir+"/tls/server-ca.crt\n")
			return 0
		})
		mu.Lock()
		fakes[n.Name] = f
		mu.Unlock()
		return f, nil
	}
	var lines []string
	sink := runner.SinkFunc(func(ev runner.Event) {
		if n, ok := ev.(runner.Note); ok {
			mu.Lock()
			lines = append(lines, `{"type":"note","node":"`+n.Node+`","text":"`+n.Text+`"}`)
			mu.Unlock()
		}
	})
	done, err := runner.NewRun(plan, runner.RunOptions{Connect: connect, NodeValue: builtins.NodeValue, Sink: sink}).Execute(context.Background())
	if err != nil {
		t.Fatalf("run: %v (%+v)", err, done)
	}
	lines = append(lines, `{"type":"run_done","status":"ok"}`)
	sums, status, err := parseCaretakerJSON([]byte(strings.Join(lines, "\n")))
	if err != nil || status != "ok" {
		t.Fatalf("parse: %v, status %q", err, status)
	}
	for _, name := range []string{"server-1", "server-2"} {
		f := fakes[name]
		if f == nil {
			t.Fatalf("%s was not contacted", name)
		}
		calls := f.Calls()
		if len(calls) != 1 || calls[0] != "run "+jobCommand {
			t.Errorf("%s: calls %q, want exactly [run %s]", name, calls, jobCommand)
		}
		want := sha256.Sum256([]byte(name))
		if sums[name] != hex.EncodeToString(want[:]) {
			t.Errorf("%s: parsed checksum %q", name, sums[name])
		}
	}
	if f := fakes["agent-1"]; f != nil && len(f.Calls()) > 0 {
		t.Errorf("the agent was given commands: %q", f.Calls())
	}
	if len(sums) != 2 {
		t.Errorf("got %d checksums, want 2: %v", len(sums), sums)
	}
}

// TestAnsiblePlaybookRunsTheJobCommand: the Ansible playbook's shell task
// is jobCommand, byte for byte, and the two configs differ only where the
// benchmark says (forks, pipelining).
func TestAnsiblePlaybookRunsTheJobCommand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "ansible", "tls-backup.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var plays []struct {
		GatherFacts bool             `yaml:"gather_facts"`
		Tasks       []map[string]any `yaml:"tasks"`
	}
	if err := yaml.Unmarshal(b, &plays); err != nil {
		t.Fatal(err)
	}
	if len(plays) != 1 || len(plays[0].Tasks) != 1 {
		t.Fatalf("want one play with one task, got %+v", plays)
	}
	if got := plays[0].Tasks[0]["ansible.builtin.shell"]; got != jobCommand {
		t.Errorf("ansible shell task:\n got %q\nwant %q", got, jobCommand)
	}
	setting := regexp.MustCompile(`(?m)^(forks|pipelining)\s*=\s*(\S+)`)
	for file, want := range map[string]string{"default.cfg": "forks=5 pipelining=False", "tuned.cfg": "forks=50 pipelining=True"} {
		c, err := os.ReadFile(filepath.Join("..", "ansible", file))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range setting.FindAllStringSubmatch(string(c), -1) {
			got = append(got, m[1]+"="+m[2])
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: %q, want %q", file, got, want)
		}
	}
}

func TestParseAnsibleJSON(t *testing.T) {
	doc := `{"plays":[{"tasks":[{"hosts":{
		"server-1":{"stdout":"aaaa  /x/server-ca.crt","rc":0},
		"server-2":{"stdout":"bbbb  /x/server-ca.crt","rc":0}}}]}]}`
	sums, err := parseAnsibleJSON([]byte(doc))
	if err != nil || sums["server-1"] != "aaaa" || sums["server-2"] != "bbbb" || len(sums) != 2 {
		t.Fatalf("got %v, %v", sums, err)
	}
	bad := `{"plays":[{"tasks":[{"hosts":{"server-1":{"stdout":"","rc":1,"failed":true}}}]}]}`
	if _, err := parseAnsibleJSON([]byte(bad)); err == nil {
		t.Error("a failed host was not reported")
	}
	if _, err := parseAnsibleJSON([]byte("PLAY [all] ***")); err == nil {
		t.Error("non-JSON output was accepted")
	}
}

func TestParseCaretakerJSONRejectsForeignNotes(t *testing.T) {
	out := `{"type":"note","node":"server-1","text":"sha256 server-2 abcd"}`
	if _, _, err := parseCaretakerJSON([]byte(out)); err == nil {
		t.Error("a note naming another node was accepted")
	}
	dup := `{"type":"note","node":"server-1","text":"sha256 server-1 abcd"}` + "\n" + `{"type":"note","node":"server-1","text":"sha256 server-1 abcd"}`
	if _, _, err := parseCaretakerJSON([]byte(dup)); err == nil {
		t.Error("two checksums from one node were accepted")
	}
}

func TestVerifySums(t *testing.T) {
	want := map[string]string{"a": "1", "b": "2"}
	if err := verifySums(map[string]string{"a": "1", "b": "2"}, want); err != nil {
		t.Errorf("right sums refused: %v", err)
	}
	for _, got := range []map[string]string{
		{"a": "1"},                    // missing node
		{"a": "1", "b": "3"},          // wrong sum
		{"a": "1", "b": "2", "c": ""}, // extra node
	} {
		if err := verifySums(got, want); err == nil {
			t.Errorf("%v accepted", got)
		}
	}
}

func TestParseGoBench(t *testing.T) {
	out := "goos: linux\nBenchmarkRunnerOverhead-2   \t     300\t   1234567 ns/op\t         0.5100 caretaker-ms/step\t         0.2400 overhead-ms/step\t         0.2700 raw-ms/step\t         1.889 ratio\nPASS\n"
	bs := parseGoBench(out)
	if len(bs) != 1 || bs[0].name != "BenchmarkRunnerOverhead" || bs[0].iters != 300 {
		t.Fatalf("got %+v", bs)
	}
	if bs[0].metrics["overhead-ms/step"] != 0.24 || bs[0].metrics["ratio"] != 1.889 {
		t.Errorf("metrics %v", bs[0].metrics)
	}
}

func TestMedian(t *testing.T) {
	s := time.Second
	if got := median([]time.Duration{5 * s, 1 * s, 3 * s}); got != 3*s {
		t.Errorf("odd: %v", got)
	}
	if got := median([]time.Duration{4 * s, 1 * s, 2 * s, 100 * s}); got != 3*s {
		t.Errorf("even: %v", got)
	}
}

// TestRotateParse: restart steps are found by their `systemctl restart`
// output; the waits are the restarts' own durations (k3s.restart's "is up
// after" lines), overlapping ones counted once.
func TestRotateParse(t *testing.T) {
	ev := `{"type":"step_started","step":0,"step_name":"prepare","node":"a","at":"2026-01-01T00:00:00Z"}
{"type":"step_done","step":0,"step_name":"prepare","node":"a","status":"ok","duration_ns":1000000000,"at":"2026-01-01T00:00:01Z"}
{"type":"step_started","step":1,"step_name":"restart servers","node":"a","at":"2026-01-01T00:00:01Z"}
{"type":"output","step":1,"node":"a","stream":"log","text":"systemctl restart k3s","at":"2026-01-01T00:00:01Z"}
{"type":"output","step":1,"node":"a","stream":"log","text":"k3s is up after 1.5s","at":"2026-01-01T00:00:02.5Z"}
{"type":"step_done","step":1,"step_name":"restart servers","node":"a","status":"changed","duration_ns":2000000000,"at":"2026-01-01T00:00:03Z"}
{"type":"step_started","step":1,"step_name":"restart servers","node":"b","at":"2026-01-01T00:00:03Z"}
{"type":"output","step":1,"node":"b","stream":"log","text":"systemctl restart k3s","at":"2026-01-01T00:00:03Z"}
{"type":"output","step":1,"node":"b","stream":"log","text":"k3s is up after 1s","at":"2026-01-01T00:00:04Z"}
{"type":"step_started","step":2,"step_name":"restart agents","node":"c","at":"2026-01-01T00:00:03.5Z"}
{"type":"output","step":2,"node":"c","stream":"log","text":"systemctl restart k3s-agent","at":"2026-01-01T00:00:03.5Z"}
{"type":"output","step":2,"node":"c","stream":"log","text":"k3s-agent is up after 1s","at":"2026-01-01T00:00:04.5Z"}
{"type":"step_done","step":2,"step_name":"restart agents","node":"c","status":"changed","duration_ns":1000000000,"at":"2026-01-01T00:00:04.5Z"}
{"type":"step_done","step":1,"step_name":"restart servers","node":"b","status":"changed","duration_ns":2000000000,"at":"2026-01-01T00:00:05Z"}
{"type":"run_done","status":"ok","duration_ns":5000000000,"at":"2026-01-01T00:00:05Z"}`
	var r rotateResult
	if err := r.parse([]byte(ev)); err != nil {
		t.Fatal(err)
	}
	// Restarts [1s,2.5s], [3s,4s] and the overlapping [3.5s,4.5s]: 1.5s + 1.5s.
	if r.waits != 3*time.Second || r.nRestart != 3 || len(r.restarts) != 2 || r.restarts[0].nodes != 2 || r.runDur != 5*time.Second || r.status != "ok" {
		t.Errorf("got waits %v (%d restarts) restart steps %+v run %v status %q", r.waits, r.nRestart, r.restarts, r.runDur, r.status)
	}
}

// TestMergeLabs: the merged inventory loads with caretaker's own parser,
// has every node once (later labs prefixed), each with its own lab's key,
// and one known_hosts with every lab's host keys.
func TestMergeLabs(t *testing.T) {
	work := t.TempDir()
	var labs []*runningLab
	for i := 1; i <= 2; i++ {
		dir := filepath.Join(work, "lab"+string(rune('0'+i)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		inv := `clusters:
  - name: lab
    ssh:
      user: root
      identity_files: [id_ed25519]
      known_hosts: known_hosts
      host_key_policy: strict
    nodes:
      - name: server-1
        address: 127.0.0.1
        port: 2201
        role: server
        k3s:
          data_dir: server-1/var/lib/rancher/k3s
      - name: agent-1
        address: 127.0.0.1
        port: 2202
        role: agent
`
		for name, data := range map[string]string{"inventory.yaml": inv, "id_ed25519": "key", "known_hosts": "[127.0.0.1]:220" + string(rune('0'+i)) + " ssh-ed25519 AAAA\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		labs = append(labs, &runningLab{dir: dir, inventory: filepath.Join(dir, "inventory.yaml"), key: filepath.Join(dir, "id_ed25519"), knownHost: filepath.Join(dir, "known_hosts")})
	}
	path, err := mergeLabs(&config{work: work}, labs)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventorypkg.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := inv.Cluster("")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range cl.Nodes {
		got = append(got, n.Name+" "+filepath.Base(filepath.Dir(n.SSH.IdentityFiles[0]))+" "+n.K3s.DataDir)
	}
	want := []string{
		"server-1 lab1 " + filepath.Join(labs[0].dir, "server-1/var/lib/rancher/k3s"),
		"agent-1 lab1 /var/lib/rancher/k3s",
		"l2-server-1 lab2 " + filepath.Join(labs[1].dir, "server-1/var/lib/rancher/k3s"),
		"l2-agent-1 lab2 /var/lib/rancher/k3s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	kh, err := os.ReadFile(cl.Nodes[0].SSH.KnownHosts)
	if err != nil || strings.Count(string(kh), "ssh-ed25519") != 2 {
		t.Errorf("merged known_hosts %q (%v)", kh, err)
	}
}
