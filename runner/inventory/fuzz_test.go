package inventory

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/runner/errs"
)

// simpleName is a node name a selector can name on its own.
var simpleName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// FuzzParse (issue 12): whatever the bytes, Parse returns an inventory that
// holds what the README promises, or a bad-input error that names the file
// (and a line inside it); parsing is deterministic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"clusters:\n  - name: c\n    nodes:\n      - {name: s1, address: 10.0.0.1, role: server}\n      - {name: a1, address: 10.0.0.2, role: agent, groups: [g], labels: {zone: a}}\n",
		"clusters:\n  - name: c\n    ssh: {user: root, port: 2222, known_hosts: kh, host_key_policy: accept-new, connect_timeout: 5s}\n    k3s: {data_dir: /d, env_files: [/e]}\n    nodes:\n      - name: s1\n        address: h\n        role: server\n        k3s: {bootstrap_bug: true}\n",
		"clusters:\n  - name: c\n    nodes:\n      - {name: a, address: x, role: agent}\n",
		"clusters:\n  - name: c\n    nodes:\n      - {name: s, address: x, role: server}\n  - name: c\n    nodes:\n      - {name: s, address: x, role: server}\n",
		"clusters:\n\t- name: c\n",
		"clusters: [\n",
		"",
		"# only a comment\n",
		"clusters:\n  - name: c\n    nodes:\n      - {name: s, ssh_host: alias, role: server, port: 70000}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "/inv/inventory.yaml"
		inv, err := Parse(path, data)
		if err != nil {
			checkParseError(t, err, path, data)
			return
		}
		again, err := Parse(path, data)
		if err != nil || !reflect.DeepEqual(inv, again) {
			t.Fatalf("parsing the same bytes twice differs: %v", err)
		}
		checkInventory(t, inv)
	})
}

func checkParseError(t *testing.T, err error, path string, data []byte) {
	t.Helper()
	if !errors.Is(err, errs.ErrBadInput) {
		t.Fatalf("an inventory error that is not bad input (exit 2): %v", err)
	}
	if !strings.HasPrefix(err.Error(), path) || len(err.Error()) <= len(path)+2 {
		t.Fatalf("error %q does not start with the file and say what is wrong", err)
	}
	var ie *Error
	if errors.As(err, &ie) && ie.Line > yamlLines(data) {
		t.Fatalf("error on line %d of a %d-line file: %v", ie.Line, yamlLines(data), err)
	}
}

// yamlLines counts lines as YAML does: "\n", "\r\n" and a lone "\r" end
// one (testdata/fuzz/FuzzParse/9f73b4d211d3cd95: "\r0" has two).
func yamlLines(data []byte) int {
	n := bytes.Count(data, []byte("\n")) + 1
	return n + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n"))
}

func checkInventory(t *testing.T, inv *Inventory) {
	t.Helper()
	if len(inv.Clusters) == 0 {
		t.Fatal("an inventory without clusters")
	}
	clusters := map[string]bool{}
	for _, c := range inv.Clusters {
		if c.Name == "" || clusters[c.Name] {
			t.Fatalf("cluster name %q empty or repeated", c.Name)
		}
		clusters[c.Name] = true
		if len(c.Nodes) == 0 || !hasServer(c.Nodes) {
			t.Fatalf("cluster %q: %d nodes, none a server", c.Name, len(c.Nodes))
		}
		names := map[string]bool{}
		for _, n := range c.Nodes {
			switch {
			case n.Name == "" || names[n.Name]:
				t.Fatalf("cluster %q: node name %q empty or repeated", c.Name, n.Name)
			case n.Role != RoleServer && n.Role != RoleAgent:
				t.Fatalf("node %q: role %q", n.Name, n.Role)
			case n.Address == "" && n.SSHHost == "":
				t.Fatalf("node %q: neither address nor ssh_host", n.Name)
			case n.Cluster != c.Name:
				t.Fatalf("node %q says cluster %q, is in %q", n.Name, n.Cluster, c.Name)
			case n.Port < 0 || n.Port > 65535 || n.SSH.Port < 0 || n.SSH.Port > 65535:
				t.Fatalf("node %q: port %d / ssh port %d", n.Name, n.Port, n.SSH.Port)
			}
			names[n.Name] = true
			if simpleName.MatchString(n.Name) {
				sel, err := c.Select(n.Name)
				if err != nil || len(sel) != 1 || sel[0] != n {
					t.Fatalf("--limit %s selects %v (%v), want that node", n.Name, sel, err)
				}
			}
		}
		all, err := c.Select("all")
		if err != nil || len(all) != len(c.Nodes) {
			t.Fatalf("--limit all selects %d of %d nodes (%v)", len(all), len(c.Nodes), err)
		}
	}
}
