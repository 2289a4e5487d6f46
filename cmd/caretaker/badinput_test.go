package main

// The bad-input suite (issue 12): table-driven cases across inventory,
// playbook, parameters, flags, SSH, K3s state, runtime signals and check,
// run against one simulator lab. Every case asserts its exit code (2 for
// bad input; the documented code where the right outcome is another: 1
// for an SSH or K3s problem found on a node, 4 for drift, 1 for a stopped
// run), a fragment of its message (what, where, what to do), that no file
// under any node's tree changed, and that no token or private-key text
// shows in stdout, stderr, JSON events or the run's journal
// (badinput_helpers_test.go). Cases that damage the lab put it back.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/builtins/k3sops"
)

func TestBadInput(t *testing.T) {
	began := time.Now()
	s := newBISuite(t)
	cases := biCases(s)
	t.Logf("bad-input suite: lab up in %s, %d cases", time.Since(began).Round(100*time.Millisecond), len(cases))
	groups := map[string]int{}
	for _, c := range cases {
		groups[c.group]++
		t.Run(c.group+"/"+c.name, func(t *testing.T) { s.runCase(t, c) })
	}
	t.Logf("bad-input suite: %d cases (%v) in %s", len(cases), groups, time.Since(began).Round(100*time.Millisecond))
}

// biCases is the table: inventory, playbook, parameters, flags, SSH, K3s
// state, signals, check.
func biCases(s *biSuite) []biCase {
	var cases []biCase
	for _, f := range []func(*biSuite) []biCase{biInventoryCases, biPlaybookCases, biParamCases, biFlagCases, biSSHCases, biK3sCases, biSignalCases, biCheckCases, biStateCases} {
		cases = append(cases, f(s)...)
	}
	return cases
}

// rotate is `run rotate-ca` against inv with JSON output and the case's
// state directory.
func (s *biSuite) rotate(inv string, extra ...string) []string {
	return append([]string{"run", "rotate-ca", "-i", inv, "--yes", "-o", "json", "--state-dir", s.state}, extra...)
}

// runPB is `run PLAYBOOK` against the lab with JSON output.
func (s *biSuite) runPB(pb string, extra ...string) []string {
	return append([]string{"run", pb, "-i", s.inv, "--yes", "-o", "json", "--state-dir", s.state}, extra...)
}

// vocabulary is how a selector that matches nothing names what exists.
const biVocabulary = "nodes: server-1, server-2, server-3, agent-1; groups: group:etcd; labels: label:lab-version=v1.30.10+k3s1"

func biInventoryCases(s *biSuite) []biCase {
	role := lineOf(s.base, "role: server")
	port := s.firstMatch(`port: \d+`)
	addr2 := s.lab.NodeAddress("server-2")
	rotateVariant := func(name string, edit func(string) string) func(s *biSuite) []string {
		return func(s *biSuite) []string { return s.rotate(s.variant(name, edit)) }
	}
	yamlAt := func(name string) string { return fmt.Sprintf("inv/%s.yaml:%d: ", name, role) }
	return []biCase{
		{group: "inventory", name: "yaml syntax error on its line", code: 2, want: []string{yamlAt("syntax"), "not valid YAML"},
			args: rotateVariant("syntax", func(b string) string { return replaceFirst(b, "role: server", "role: server: oops") })},
		{group: "inventory", name: "tab in the indentation", code: 2, want: []string{yamlAt("tab"), "a tab in the indentation", "spaces only"},
			args: rotateVariant("tab", func(b string) string { return replaceFirst(b, "        role: server", "\trole: server") })},
		{group: "inventory", name: "unknown key", code: 2, want: []string{fmt.Sprintf("inv/unknown.yaml:%d: clusters[0].nodes[0].colour: unknown key", role+1), "allowed here: name, address"},
			args: rotateVariant("unknown", func(b string) string {
				return replaceFirst(b, "role: server\n", "role: server\n        colour: blue\n")
			})},
		{group: "inventory", name: "bad role", code: 2, want: []string{yamlAt("role"), `role: must be server or agent, got "master"`},
			args: rotateVariant("role", func(b string) string { return replaceFirst(b, "role: server", "role: master") })},
		{group: "inventory", name: "duplicate node name", code: 2, want: []string{`node "server-1" is declared twice (first on line`, "names must be unique"},
			args: rotateVariant("dup", func(b string) string { return replaceFirst(b, "name: server-2", "name: server-1") })},
		{group: "inventory", name: "missing -i file", code: 2, want: []string{"no such file or directory", "give the inventory file with -i FILE"},
			args: func(s *biSuite) []string { return s.rotate(filepath.Join(s.dir, "nosuch.yaml")) }},
		{group: "inventory", name: "-i names a directory", code: 2, want: []string{"is a directory", "give the inventory file with -i FILE"},
			args: func(s *biSuite) []string { return s.rotate(s.dir) }},
		{group: "inventory", name: "empty file", code: 2, want: []string{"the inventory is empty", "clusters:"},
			args: func(s *biSuite) []string { return s.rotate(s.write("inv/empty.yaml", "")) }},
		{group: "inventory", name: "only comments", code: 2, want: []string{"the inventory is empty"},
			args: func(s *biSuite) []string { return s.rotate(s.write("inv/comments.yaml", "# nothing yet\n")) }},
		{group: "inventory", name: "no servers", code: 2, want: []string{`cluster "lab" has no server`, "mark the server nodes with role: server"},
			args: rotateVariant("noservers", func(b string) string { return strings.ReplaceAll(b, "role: server", "role: agent") })},
		{group: "inventory", name: "no servers, check", code: 2, want: []string{`cluster "lab" has no server`},
			args: func(s *biSuite) []string {
				return []string{"check", "-i", s.variant("noservers-check", func(b string) string { return strings.ReplaceAll(b, "role: server", "role: agent") })}
			}},
		{group: "inventory", name: "address that is no address", code: 2, want: []string{"clusters[0].nodes[1].address: must be an IP address or a host name", `"not an address"`},
			args: rotateVariant("address", func(b string) string { return replaceFirst(b, "address: "+addr2, `address: "not an address"`) })},
		{group: "inventory", name: "port out of range", code: 2, want: []string{"clusters[0].nodes[0].port: must be a port number from 1 to 65535", `"70000"`},
			args: rotateVariant("port", func(b string) string { return replaceFirst(b, port, "port: 70000") })},
		{group: "inventory", name: "port that is a word", code: 2, want: []string{"port: must be a port number", `"ssh"`},
			args: rotateVariant("portword", func(b string) string { return replaceFirst(b, port, "port: ssh") })},
		{group: "inventory", name: "bad duration", code: 2, want: []string{"clusters[0].ssh.connect_timeout: must be a duration such as 10s", `"10 parsecs"`},
			args: rotateVariant("duration", func(b string) string {
				return replaceFirst(b, "host_key_policy: strict", "host_key_policy: strict\n      connect_timeout: 10 parsecs")
			})},
		{group: "inventory", name: "bad host_key_policy", code: 2, want: []string{"host_key_policy: must be strict or accept-new", `"trust-me"`},
			args: rotateVariant("policy", func(b string) string { return replaceFirst(b, "host_key_policy: strict", "host_key_policy: trust-me") })},
		{group: "inventory", name: "etcd_endpoint without a port", code: 2, want: []string{"clusters[0].nodes[1].k3s.etcd_endpoint: must be host:port"},
			args: rotateVariant("endpoint", func(b string) string {
				return replaceFirst(b, "etcd_endpoint: "+addr2+":2379", "etcd_endpoint: "+addr2)
			})},
		{group: "inventory", name: "labels that are a list", code: 2, want: []string{"labels: must be a mapping of label names to values"},
			args: rotateVariant("labels", func(b string) string {
				return regexp.MustCompile(`labels:\n\s+lab-version: \S+`).ReplaceAllLiteralString(b, "labels: [a, b]")
			})},
		{group: "inventory", name: "bootstrap_bug neither auto nor a boolean", code: 2, want: []string{"bootstrap_bug: must be auto, true or false", `"maybe"`},
			args: rotateVariant("bug", func(b string) string {
				return replaceFirst(b, "          etcd_endpoint:", "          bootstrap_bug: maybe\n          etcd_endpoint:")
			})},
		{group: "inventory", name: "two clusters without --cluster", code: 2, want: []string{"declares 2 clusters (lab, other): choose one with --cluster"},
			args: rotateVariant("two", func(b string) string {
				i := strings.Index(b, "  - name: lab")
				return b + strings.Replace(b[i:], "  - name: lab", "  - name: other", 1)
			})},
	}
}

func biPlaybookCases(s *biSuite) []biCase {
	pb := func(name, src string) func(s *biSuite) []string {
		return func(s *biSuite) []string { return s.runPB(s.write("pb/"+name, src)) }
	}
	plan := func(name, src string) func(s *biSuite) []string {
		return func(s *biSuite) []string { return []string{"plan", s.write("pb/"+name, src), "-i", s.inv} }
	}
	return []biCase{
		{group: "playbook", name: "syntax error", code: 2, want: []string{"pb/syntax.star:4:1: got end of file, want ')'"},
			args: pb("syntax.star", "def f(node):\n    pass\nstep(\"a\", f\n")},
		{group: "playbook", name: "unknown builtin", code: 2, want: []string{"pb/undefined.star:2:5: undefined: frobnicate"},
			args: pb("undefined.star", "def f(node):\n    frobnicate(node)\nstep(\"a\", f)\n")},
		{group: "playbook", name: "unknown member of a builtin module", code: 2, want: []string{`pb/member.star:2:9: k3s has no member "rotate_cert" (it has: `, "rotate_ca", "see `caretaker docs k3s`"},
			args: pb("member.star", "def f(node):\n    k3s.rotate_cert(node)\nstep(\"a\", f)\n")},
		{group: "playbook", name: "load() of a parent directory", code: 2, want: []string{"cannot load ../outside.star", "only .star modules beside the playbook or in a --lib directory"},
			args: pb("up.star", "load(\"../outside.star\", \"x\")\n")},
		{group: "playbook", name: "load() of an absolute path", code: 2, want: []string{"cannot load /etc/passwd.star", "by a relative path"},
			args: pb("abs.star", "load(\"/etc/passwd.star\", \"x\")\n")},
		{group: "playbook", name: "load() through a symlink leading out", code: 2, want: []string{"pb/link.star leads outside", "through a symbolic link"},
			args: func(s *biSuite) []string {
				s.write("outside.star", "x = 1\n")
				link := filepath.Join(s.dir, "pb", "link.star")
				_ = os.Remove(link)
				if err := os.Symlink(filepath.Join(s.dir, "outside.star"), link); err != nil {
					s.t.Fatal(err)
				}
				return s.runPB(s.write("pb/symlink.star", "load(\"link.star\", \"x\")\n"))
			}},
		{group: "playbook", name: "load() of a missing module", code: 2, want: []string{"cannot load nosuch.star", "not found"},
			args: pb("missing.star", "load(\"nosuch.star\", \"x\")\n")},
		{group: "playbook", name: "infinite loop at load time", code: 2, want: []string{"loading", "ran 10000000 Starlark operations", "an endless loop? (stopped at", "pb/loop.star:4:"},
			args: plan("loop.star", "def spin():\n    n = 0\n    while True:\n        n += 1\nspin()\n")},
		{group: "playbook", name: "step selector label matching nothing", code: 2, want: []string{`step "a" (`, `selector "label:zone=x" selects no node of cluster lab (` + biVocabulary, "allow_empty = True"},
			args: plan("label.star", "step(\"a\", lambda node: None, nodes = \"label:zone=x\")\n")},
		{group: "playbook", name: "step selector group matching nothing", code: 2, want: []string{`selector "group:workers" selects no node`, "groups: group:etcd"},
			args: plan("group.star", "step(\"a\", lambda node: None, nodes = \"servers,group:workers\")\n")},
		{group: "playbook", name: "step naming an unknown node", code: 2, want: []string{`selector "server-9" selects no node`, biVocabulary},
			args: plan("node.star", "step(\"a\", lambda node: None, nodes = \"server-9\")\n")},
		{group: "playbook", name: "allow_empty step plans without targets", code: 0, want: []string{"a [read-only"},
			args: plan("allow.star", "step(\"a\", lambda node: None, nodes = \"label:zone=x\", allow_empty = True, mutates = False)\n")},
		{group: "playbook", name: "duplicate step name", code: 2, want: []string{`a step named "a" is already declared at`, "pb/dupstep.star:1:5"},
			args: plan("dupstep.star", "step(\"a\", lambda node: None)\nstep(\"a\", lambda node: None)\n")},
		{group: "playbook", name: "step timeout that is no duration", code: 2, want: []string{`timeout must be a duration such as "30s"`, `"soon"`},
			args: plan("timeout.star", "step(\"a\", lambda node: None, timeout = \"soon\")\n")},
		{group: "playbook", name: "node method at load time", code: 2, want: []string{"inside a step"},
			args: plan("loadrun.star", "nodes()[0].run(\"true\")\n")},
		{group: "playbook", name: "no such shipped playbook", code: 2, want: []string{`no playbook "rotate-cas"`, "rotate-ca"},
			args: func(s *biSuite) []string { return s.runPB("rotate-cas") }},
		{group: "playbook", name: "missing playbook file", code: 2, want: []string{"nosuch.star"},
			args: func(s *biSuite) []string { return s.runPB(filepath.Join(s.dir, "nosuch.star")) }},
	}
}

// biCert writes a PEM certificate and its key into the suite's directory.
func biCert(s *biSuite) (cert, key string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(k)
	key = s.write("pki/root.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	s.secrets = append(s.secrets, strings.Split(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), "\n")[1])
	cert = s.write("pki/root.crt", string(selfSigned(s.t, "bad-input-root", true, time.Now().AddDate(1, 0, 0))))
	return cert, key
}

func biParamCases(s *biSuite) []biCase {
	cert, key := biCert(s)
	intPB := "n = param(\"n\", 3, min = 1, max = 5)\nstep(\"a\", lambda node: None, mutates = False)\n"
	return []biCase{
		{group: "params", name: "unknown -p", code: 2, want: []string{`unknown parameter "restart-timeout" for playbook rotate-ca`, "restart_timeout (duration, default \"3m\")"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "restart-timeout=5m") }},
		{group: "params", name: "-p without a value", code: 2, want: []string{"key=value"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "restart_timeout") }},
		{group: "params", name: "bad duration", code: 2, want: []string{"playbooks/rotate-ca.star:", "-p restart_timeout=banana", "is not a duration", "at least 10s"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "restart_timeout=banana") }},
		{group: "params", name: "duration below its minimum", code: 2, want: []string{"-p restart_timeout=1s: below the minimum 10s"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "restart_timeout=1s") }},
		{group: "params", name: "missing file param", code: 2, want: []string{"-p root_cert=", "nosuch.crt does not exist", "a PEM certificate file on the controller"},
			args: func(s *biSuite) []string {
				return s.rotate(s.inv, "-p", "root_cert="+filepath.Join(s.dir, "nosuch.crt"))
			}},
		{group: "params", name: "non-PEM file param", code: 2, want: []string{"notes.txt holds no PEM certificate"},
			args: func(s *biSuite) []string {
				return s.rotate(s.inv, "-p", "root_cert="+s.write("notes.txt", "not a certificate\n"))
			}},
		{group: "params", name: "a private key given as the certificate", code: 2, want: []string{"root.key holds a PEM", "not a certificate"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "root_cert="+key, "-p", "root_key="+key) }},
		{group: "params", name: "a certificate given as the key", code: 2, want: []string{"-p root_key=", "root.crt"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "root_cert="+cert, "-p", "root_key="+cert) }},
		{group: "params", name: "bad choice", code: 2, want: []string{`-p workaround=sometimes: "sometimes" is not allowed (one of auto, always, never)`},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "workaround=sometimes") }},
		{group: "params", name: "bad boolean", code: 2, want: []string{`-p force=perhaps: "perhaps" is not a boolean`},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-p", "force=perhaps") }},
		{group: "params", name: "int above its maximum", code: 2, want: []string{"pb/int.star:1:", "-p n=9: above the maximum 5"},
			args: func(s *biSuite) []string { return s.runPB(s.write("pb/int.star", intPB), "-p", "n=9") }},
		{group: "params", name: "int that is a word", code: 2, want: []string{`-p warn_days=soon: "soon" is not an integer`},
			args: func(s *biSuite) []string { return s.runPB("check-certs", "-p", "warn_days=soon") }},
		{group: "params", name: "int below its minimum", code: 2, want: []string{"-p warn_days=-1: below the minimum 0"},
			args: func(s *biSuite) []string { return s.runPB("check-certs", "-p", "warn_days=-1") }},
		{group: "params", name: "plan refuses a bad value too", code: 2, want: []string{"-p restart_timeout=banana"},
			args: func(s *biSuite) []string {
				return []string{"plan", "rotate-ca", "-i", s.inv, "-p", "restart_timeout=banana"}
			}},
		{group: "params", name: "resume -p changing a frozen param", code: 2, want: []string{"resume -p label: refused", "already done with the old value", "resumable = True", "caretaker undo"},
			args: func(s *biSuite) []string {
				src := "label = param(\"label\", \"a\")\ndef touch(node):\n    node.run(\"true\")\nstep(\"touch\", touch, nodes = \"server-1\")\nstep(\"stop\", lambda node: fail(\"stop here\"), nodes = \"server-1\", mutates = False)\n"
				r := runCaretakerBinary(s.t, s.runPB(s.write("pb/frozen.star", src))...)
				id := runID(r)
				if r.Code != 1 || id == "" {
					s.t.Fatalf("set-up run: exit %d, run %q:\n%s", r.Code, id, r.Describe())
				}
				return []string{"resume", id, "-p", "label=b", "--state-dir", s.state, "--yes", "-o", "json"}
			}},
		{group: "params", name: "resume of an unknown run", code: 2, want: []string{"20990101-000000-nosuch-0000"},
			args: func(s *biSuite) []string {
				return []string{"resume", "20990101-000000-nosuch-0000", "--state-dir", s.state}
			}},
	}
}

// runID is the run ID of a JSON run's events.
func runID(r cliResult) string {
	for _, e := range r.Events {
		if e.Type == "run_started" {
			return e.str("run_id")
		}
	}
	return ""
}

func biFlagCases(s *biSuite) []biCase {
	return []biCase{
		{group: "flags", name: "plan -o yaml", code: 2, want: []string{`--output "yaml": use text or json`},
			args: func(s *biSuite) []string { return []string{"plan", "rotate-ca", "-i", s.inv, "-o", "yaml"} }},
		{group: "flags", name: "run -o xml", code: 2, want: []string{`--output "xml": use auto, tui, plain or json`},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "-o", "xml") }},
		{group: "flags", name: "--max-failed -1", code: 2, want: []string{"--max-failed -1: give a number of nodes ≥ 0"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--max-failed", "-1") }},
		{group: "flags", name: "--on-failure maybe", code: 2, want: []string{`--on-failure "maybe": use stop or continue`},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--on-failure", "maybe") }},
		{group: "flags", name: "--limit label matching nothing", code: 2, want: []string{`--limit "label:zone=x" selects no node of cluster lab (` + biVocabulary},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--limit", "label:zone=x") }},
		{group: "flags", name: "--limit group matching nothing", code: 2, want: []string{`--limit "group:workers" selects no node`, "groups: group:etcd"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--limit", "group:workers") }},
		{group: "flags", name: "--limit unknown node", code: 2, want: []string{`selector "server-9" selects no node of cluster lab`, biVocabulary},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--limit", "server-9") }},
		{group: "flags", name: "--cluster unknown", code: 2, want: []string{`has no cluster "prod"; it declares: lab`},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--cluster", "prod") }},
		{group: "flags", name: "--break-lock with --no-cluster-lock", code: 2, want: []string{"--break-lock and --no-cluster-lock contradict each other"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--break-lock", "--no-cluster-lock") }},
		{group: "flags", name: "--break-lock with --check", code: 2, want: []string{"--break-lock with --check", "leave --break-lock out"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--break-lock", "--check") }},
		{group: "flags", name: "docs --markdown --stubs", code: 2, want: []string{"give --markdown or --stubs, not both"},
			args: func(s *biSuite) []string { return []string{"docs", "--markdown", "--stubs"} }},
		{group: "flags", name: "bad --window", code: 2, want: []string{`--window "Someday 25:00"`, "example: \"Sat 02:00-05:00 Europe/Berlin\""},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--window", "Someday 25:00") }},
		{group: "flags", name: "bad --notify-url", code: 2, want: []string{"--notify-url: give an http:// or https:// URL"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--notify-url", "ftp://example.com/hook") }},
		{group: "flags", name: "unknown flag", code: 2, want: []string{"unknown flag: --frobnicate", "see caretaker run --help"},
			args: func(s *biSuite) []string { return s.rotate(s.inv, "--frobnicate") }},
		{group: "flags", name: "no inventory", code: 2, want: []string{"no inventory: give one with -i FILE"},
			args: func(s *biSuite) []string { return []string{"run", "rotate-ca", "--state-dir", s.state} }},
		{group: "flags", name: "no playbook argument", code: 2, want: []string{"run: accepts 1 arg(s), received 0", "usage: caretaker run PLAYBOOK"},
			args: func(s *biSuite) []string { return []string{"run", "-i", s.inv, "--state-dir", s.state} }},
		{group: "flags", name: "exec without a command", code: 2, want: []string{"exec: requires at least 1 arg(s)", "-- CMD"},
			args: func(s *biSuite) []string { return []string{"exec", "-i", s.inv, "--state-dir", s.state} }},
	}
}

func biSSHCases(s *biSuite) []biCase {
	khVariant := func(name, kh string) func(s *biSuite) []string {
		return func(s *biSuite) []string {
			p := s.write("ssh/"+name, kh)
			return s.runPB("ping", "-i", s.variant(name, func(b string) string {
				return replaceFirst(b, "known_hosts: "+filepath.Join(s.lab.Dir(), "known_hosts"), "known_hosts: "+p)
			}))
		}
	}
	addr2 := s.lab.NodeAddress("server-2")
	other := otherHostKey(s)
	return []biCase{
		{group: "ssh", name: "unknown host key, strict", code: 1, want: []string{"node server-2 (" + addr2, "host key verification failed", "is not in", "ssh-keyscan", "accept-new"},
			args: khVariant("kh-unknown", s.knownHostsWithout("server-2"))},
		{group: "ssh", name: "changed host key", code: 1, want: []string{"node server-2", "the host key has CHANGED", "ssh-keygen -R"},
			args: khVariant("kh-changed", s.knownHostsWithout("server-2", fmt.Sprintf("[%s]:%d %s", addr2, s.lab.Node("server-2").Port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other))))))},
		{group: "ssh", name: "missing known_hosts file", code: 2, want: []string{"clusters[0].ssh.known_hosts: the known_hosts file", "does not exist", "accept-new"},
			args: func(s *biSuite) []string {
				return s.runPB("ping", "-i", s.variant("kh-missing", func(b string) string {
					return replaceFirst(b, "known_hosts: "+filepath.Join(s.lab.Dir(), "known_hosts"), "known_hosts: "+filepath.Join(s.dir, "ssh", "absent"))
				}))
			}},
		{group: "ssh", name: "malformed known_hosts line beside good ones", code: 0, want: []string{"caretaker: warning:", "kh-malformed:1: ", "do not parse and are ignored"},
			args: khVariant("kh-malformed", "this line is no host key\n"+s.knownHostsWithout("none"))},
		{group: "ssh", name: "wrong user", code: 1, want: []string{"ssh authentication failed", `nobody\" was refused with`, "authorized_keys on the node"},
			args: func(s *biSuite) []string {
				return s.runPB("ping", "-i", s.variant("user", func(b string) string { return replaceFirst(b, "user: root", "user: nobody") }))
			}},
		{group: "ssh", name: "unreachable node", code: 1, want: []string{"node server-2 (" + addr2 + ":1): node unreachable", "that sshd listens on port 1"},
			args: func(s *biSuite) []string {
				return s.runPB("ping", "-i", s.variant("unreachable", func(b string) string {
					return replaceFirst(b, fmt.Sprintf("port: %d", s.lab.Node("server-2").Port), "port: 1")
				}))
			}},
		{group: "ssh", name: "missing identity file", code: 2, want: []string{"clusters[0].ssh.identity_files: identity file", "nosuch_id does not exist", "fix identity_files"},
			args: func(s *biSuite) []string {
				return s.runPB("ping", "-i", s.variant("id-missing", func(b string) string {
					return replaceFirst(b, "- "+filepath.Join(s.lab.Dir(), "id_ed25519"), "- "+filepath.Join(s.dir, "nosuch_id"))
				}))
			}},
		{group: "ssh", name: "identity file that is no key", code: 2, want: []string{"not-a-key is not a private key"},
			args: func(s *biSuite) []string {
				p := s.write("ssh/not-a-key", "hello\n")
				return s.runPB("ping", "-i", s.variant("id-notkey", func(b string) string {
					return replaceFirst(b, "- "+filepath.Join(s.lab.Dir(), "id_ed25519"), "- "+p)
				}))
			}},
		{group: "ssh", name: "identity file that is no key, check", code: 2, want: []string{"not-a-key is not a private key"},
			args: func(s *biSuite) []string {
				p := s.write("ssh/not-a-key", "hello\n")
				return []string{"check", "-i", s.variant("id-notkey-check", func(b string) string {
					return replaceFirst(b, "- "+filepath.Join(s.lab.Dir(), "id_ed25519"), "- "+p)
				})}
			}},
	}
}

// otherHostKey is a public key no node has.
func otherHostKey(s *biSuite) ssh.PublicKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		s.t.Fatal(err)
	}
	return pub
}

func biK3sCases(s *biSuite) []biCase {
	sd := func(n string) string { return k3sops.ServerDir(s.lab.Node(n)) }
	garbled := withFile("server-1", sd("server-1")+"/token", []byte("K10dead::server:x\n"))
	stale := withFile("server-2", sd("server-2")+"/tls/server-ca.crt", selfSigned(s.t, "k3s-server-ca@1000000000", true, time.Now().AddDate(10, 0, 0)))
	wrongEtcd := func(s *biSuite) string {
		a := s.lab.NodeAddress("server-2")
		return s.variant("etcd-server-2", func(b string) string {
			return replaceFirst(b, "etcd_endpoint: "+a+":2379", "etcd_endpoint: "+a+":2399")
		})
	}
	check := func(inv func(s *biSuite) string) func(s *biSuite) []string {
		return func(s *biSuite) []string { return []string{"check", "-i", inv(s), "-o", "json"} }
	}
	lab := func(s *biSuite) string { return s.inv }
	rehearse := func(inv func(s *biSuite) string) func(s *biSuite) []string {
		return func(s *biSuite) []string { return s.rotate(inv(s), "--check") }
	}
	return []biCase{
		{group: "k3s", name: "garbled server token, check", code: 1, fault: garbled, args: check(lab),
			want: []string{`"status": "broken"`, "server-1: " + sd("server-1") + "/token does not hold a K3s token", "would not come back from a restart", "put the cluster's token back"}},
		{group: "k3s", name: "garbled server token, rotate-ca --check", code: 1, fault: garbled, args: rehearse(lab),
			want: []string{"server-1 cannot read the datastore itself (read via server-2)", "fix that first"}},
		{group: "k3s", name: "wrong etcd_endpoint on server-2, check", code: 1, args: check(wrongEtcd),
			want: []string{`"status": "unreachable"`, `"via": "server-1"`, "the datastore could not be read through server-2", ":2399 is not reachable from node server-2", "check etcd_endpoint in the inventory"}},
		{group: "k3s", name: "wrong etcd_endpoint on server-2, rotate-ca --check", code: 1, args: rehearse(wrongEtcd),
			want: []string{"server-2 cannot read the datastore itself (read via server-1)"}},
		{group: "k3s", name: "stopped K3s on server-2, check", code: 1, fault: stoppedK3s("server-2"), args: check(lab),
			want: []string{`"status": "down"`, "K3s is not running on server-2 (inactive (dead))", "see journalctl -u k3s"}},
		{group: "k3s", name: "stopped K3s on server-2, rotate-ca --check", code: 1, fault: stoppedK3s("server-2"), args: rehearse(lab),
			want: []string{"K3s is not active or not serving on server-2: bring it up"}},
		{group: "k3s", name: "server-2 without the datastore's CA, check", code: 4, fault: stale, args: check(lab),
			want: []string{`"status": "drift"`, "1 node(s) without the datastore's CA: server-2", "k3s-server-ca@1000000000"}},
		{group: "k3s", name: "server-2 without the datastore's CA, rotate-ca --check", code: 1, fault: stale, args: rehearse(lab),
			want: []string{"the CA on the disk of server-2 is neither the datastore's nor the one it rotates from", "not a rotation in progress"}},
		{group: "k3s", name: "certificates expiring within warn_days, check-certs", code: 4,
			args: func(s *biSuite) []string { return s.runPB("check-certs", "-p", "warn_days=400") }, want: []string{"certificate(s) need attention", "client-admin.crt (system:admin) WARNING"}},
	}
}

func biSignalCases(s *biSuite) []biCase {
	slow := "def wait(node):\n    node.run(\"echo waiting; sleep 2\", changes = False)\ndef after(node):\n    node.run(\"true\", changes = False)\nstep(\"wait\", wait, mutates = False)\nstep(\"after\", after, mutates = False)\n"
	args := func(name string) func(s *biSuite) []string {
		return func(s *biSuite) []string { return s.runPB(s.write("pb/"+name, slow)) }
	}
	stopped := func(t *testing.T, s *biSuite, r cliResult) {
		if r.RunStatus() != "aborted" {
			t.Errorf("run_done status %q, want aborted (a summary):\n%s", r.RunStatus(), r.Describe())
		}
		for _, n := range s.lab.Nodes("") {
			if r.Started("after", n) {
				t.Errorf("step after started on %s after the signal", n)
			}
		}
	}
	return []biCase{
		{group: "signals", name: "SIGINT once: running commands finish, nothing new starts", code: 1, signal: syscall.SIGINT, args: args("sigint.star"),
			want: []string{"stopping after the running commands finish (Ctrl-C again to abort them now)", `"type":"run_done"`},
			check: func(t *testing.T, s *biSuite, r cliResult) {
				stopped(t, s, r)
				for _, n := range s.lab.Nodes("") {
					if st := r.StepStatus("wait", n); st != "ok" {
						t.Errorf("wait on %s: %q, want ok (it finishes)", n, st)
					}
				}
			}},
		{group: "signals", name: "SIGTERM: running commands stop, summary", code: 1, signal: syscall.SIGTERM, args: args("sigterm.star"),
			want: []string{`"type":"run_done"`, "terminated"}, check: stopped},
	}
}

func biCheckCases(s *biSuite) []biCase {
	return []biCase{
		{group: "check", name: "check --limit label matching nothing", code: 2, want: []string{"nothing would be checked", `--limit "label:zone=x" selects no node of cluster lab (` + biVocabulary},
			args: func(s *biSuite) []string { return []string{"check", "-i", s.inv, "--limit", "label:zone=x"} }},
		{group: "check", name: "check --limit group matching nothing", code: 2, want: []string{`--limit "group:workers" selects no node`},
			args: func(s *biSuite) []string { return []string{"check", "-i", s.inv, "--limit", "group:workers"} }},
		{group: "check", name: "check --limit unknown node", code: 2, want: []string{`"agent-9" selects no node`},
			args: func(s *biSuite) []string { return []string{"check", "-i", s.inv, "--limit", "agent-9"} }},
		{group: "check", name: "check --warn-days -1", code: 2, want: []string{"--warn-days -1: give a number of days ≥ 0"},
			args: func(s *biSuite) []string { return []string{"check", "-i", s.inv, "--warn-days", "-1"} }},
		{group: "check", name: "check -o yaml", code: 2, want: []string{`--output "yaml": use table or json`},
			args: func(s *biSuite) []string { return []string{"check", "-i", s.inv, "-o", "yaml"} }},
		{group: "check", name: "check without -i", code: 2, want: []string{"no inventory: give one with -i FILE"},
			args: func(s *biSuite) []string { return []string{"check"} }},
		{group: "check", name: "check --limit one server is healthy", code: 0, want: []string{"HEALTHY: 1 node(s)"},
			args: func(s *biSuite) []string { return []string{"check", "-i", s.inv, "--limit", "server-3"} }},
	}
}

func biStateCases(s *biSuite) []biCase {
	full := func(s *biSuite) func() {
		dir := filepath.Join(s.dir, "full")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			s.t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
			s.t.Fatalf("a full state dir needs root to mount a tmpfs: %v %s", err, out)
		}
		fill, _ := os.Create(filepath.Join(dir, "fill"))
		_, _ = fill.Write(make([]byte, 128<<10)) // until ENOSPC
		fill.Close()
		return func() {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				s.t.Errorf("umount %s: %v %s", dir, err, out)
			}
		}
	}
	once := func(what string) func(t *testing.T, s *biSuite, r cliResult) {
		return func(t *testing.T, s *biSuite, r cliResult) {
			if n := strings.Count(r.Stdout+r.Stderr, what); n != 1 {
				t.Errorf("%q appears %d times, want once:\n%s%s", what, n, r.Stdout, r.Stderr)
			}
		}
	}
	return []biCase{
		{group: "state", name: "full state dir: the error once", code: 1, fault: full, check: once("no space left on device"),
			want: []string{"journal", "cannot be written, not starting another step", "no space left on device"},
			args: func(s *biSuite) []string {
				return []string{"run", "ping", "-i", s.inv, "--yes", "-o", "plain", "--state-dir", filepath.Join(s.dir, "full")}
			}},
		{group: "state", name: "a failed cell's error once in plain output", code: 1, check: once("stop here, on purpose"),
			want: []string{"[stop] server-1: FAILED", "(the error is in the summary at the end)", "FAILED server-1 [stop]: "},
			args: func(s *biSuite) []string {
				pb := s.write("pb/stop.star", "step(\"stop\", lambda node: fail(\"stop here, on purpose\"), nodes = \"server-1\", mutates = False)\n")
				return []string{"run", pb, "-i", s.inv, "--yes", "-o", "plain", "--state-dir", s.state}
			}},
	}
}
