package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/runner/errs"
)

const goodInventory = `
clusters:
  - name: prod
    ssh:
      user: ops
      identity_files: [keys/id_ed25519]
      known_hosts: known_hosts
      host_key_policy: accept-new
      connect_timeout: 5s
    nodes:
      - name: s1
        address: 10.0.0.1
        role: server
        groups: [etcd]
        labels: {zone: a}
      - name: a1
        address: 10.0.0.9
        port: 2222
        sudo: yes
        role: agent
        k3s:
          data_dir: /data/k3s
          etcd_endpoint: 10.0.0.1:2379
      - name: s2
        address: 10.0.0.2
        role: server
        user: root
`

func TestParseInventory(t *testing.T) {
	inv, err := Parse("/etc/caretaker/inv.yaml", []byte(goodInventory))
	if err != nil {
		t.Fatal(err)
	}
	c, err := inv.Cluster("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "prod" || len(c.Nodes) != 3 {
		t.Fatalf("cluster = %q with %d nodes", c.Name, len(c.Nodes))
	}
	s1, a1, s2 := c.Node("s1"), c.Node("a1"), c.Node("s2")
	if s1.User != "ops" || s1.Port != 22 || s1.K3s.DataDir != DefaultDataDir || s1.K3s.Service != "k3s" || s1.K3s.UnitFile != DefaultServerUnit {
		t.Errorf("s1 defaults wrong: %+v", s1)
	}
	if a1.Port != 2222 || !a1.Sudo || a1.K3s.Service != "k3s-agent" || a1.K3s.UnitFile != DefaultAgentUnit || a1.K3s.DataDir != "/data/k3s" || a1.K3s.EtcdEndpoint != "10.0.0.1:2379" {
		t.Errorf("a1 wrong: %+v", a1)
	}
	wantEnv := []string{"/etc/default/k3s-agent", "/etc/sysconfig/k3s-agent", "/etc/systemd/system/k3s-agent.service.env"}
	if strings.Join(a1.K3s.EnvFiles, ",") != strings.Join(wantEnv, ",") {
		t.Errorf("a1 env files = %v, want %v", a1.K3s.EnvFiles, wantEnv)
	}
	if s2.User != "root" {
		t.Errorf("s2 user = %q, want per-node override root", s2.User)
	}
	if got := s1.SSH.IdentityFiles[0]; got != filepath.Join("/etc/caretaker", "keys/id_ed25519") {
		t.Errorf("identity file not resolved against the inventory dir: %q", got)
	}
	if s1.SSH.KnownHosts != "/etc/caretaker/known_hosts" || s1.SSH.HostKeyPolicy != HostKeyAcceptNew || s1.SSH.ConnectTimeout.D().Seconds() != 5 {
		t.Errorf("ssh settings wrong: %+v", s1.SSH)
	}
	// Selection: servers first, inventory order kept.
	all, _ := c.Select("all")
	if names(all) != "s1,s2,a1" {
		t.Errorf("Select(all) = %s", names(all))
	}
	sel, _ := c.Select("group:etcd,a1")
	if names(sel) != "s1,a1" {
		t.Errorf("Select(group:etcd,a1) = %s", names(sel))
	}
	sel, _ = c.Select("label:zone=a")
	if names(sel) != "s1" {
		t.Errorf("Select(label) = %s", names(sel))
	}
	if _, err := c.Select("nosuchnode"); err == nil || !strings.Contains(err.Error(), "selects no node") || !strings.Contains(err.Error(), "groups: group:etcd; labels: label:zone=a") || !errors.Is(err, errs.ErrBadInput) {
		t.Errorf("Select(nosuchnode) err = %v", err)
	}
}

func names(ns []*Node) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return strings.Join(out, ",")
}

func TestParseInventoryErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		want       []string
	}{
		{"unknown top key", "clusterz: []\n", 1, []string{"unknown key \"clusterz\"", "allowed here: clusters"}},
		{"unknown node key", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n        role: server\n        adress: y\n", 7, []string{"clusters[0].nodes[0].adress", "unknown key", "address"}},
		{"bad role", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n        role: master\n", 6, []string{"clusters[0].nodes[0].role", "must be server or agent", "master"}},
		{"missing role", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n", 4, []string{"role", "is required"}},
		{"bad port", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n        role: agent\n        port: 99999\n", 7, []string{"port", "1 to 65535"}},
		{"bad sudo", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n        role: agent\n        sudo: maybe\n", 7, []string{"sudo", "yes or no"}},
		{"bad bootstrap_bug", "clusters:\n  - name: c\n    k3s:\n      bootstrap_bug: sometimes\n    nodes:\n      - name: a\n        address: x\n        role: server\n", 4, []string{"clusters[0].k3s.bootstrap_bug", "auto, true or false", "sometimes"}},
		{"bad policy", "clusters:\n  - name: c\n    ssh:\n      host_key_policy: off\n    nodes:\n      - {name: a, address: x, role: agent}\n", 4, []string{"host_key_policy", "strict or accept-new"}},
		{"bad duration", "clusters:\n  - name: c\n    ssh:\n      connect_timeout: soon\n    nodes:\n      - {name: a, address: x, role: agent}\n", 4, []string{"connect_timeout", "duration"}},
		{"duplicate node", "clusters:\n  - name: c\n    nodes:\n      - {name: a, address: x, role: agent}\n      - {name: a, address: y, role: agent}\n", 5, []string{"declared twice", "line 4"}},
		{"no nodes", "clusters:\n  - name: c\n", 2, []string{"nodes", "non-empty list"}},
		{"bad yaml", "clusters:\n  - name: c\n\t- nodes: []\n", 3, []string{"not valid YAML", "a tab in the indentation (column 1)"}},
		{"indentation", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n       role: server\n", 6, []string{"not valid YAML", "did not find expected"}},
		{"unclosed flow", "clusters:\n  - name: c\n    nodes:\n      - {name: a, address: x\n\n", 4, []string{"not valid YAML"}},
		{"empty", "", 0, []string{"the inventory is empty", "clusters:"}},
		{"only comments", "# nothing yet\n", 0, []string{"the inventory is empty"}},
		{"no server", "clusters:\n  - name: c\n    nodes:\n      - {name: a, address: x, role: agent}\n", 4, []string{"clusters[0].nodes", "has no server", "role: server"}},
		{"unknown k3s key", "clusters:\n  - name: c\n    nodes:\n      - name: a\n        address: x\n        role: agent\n        k3s: {datadir: /x}\n", 7, []string{"k3s.datadir", "data_dir"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("inv.yaml", []byte(tc.yaml))
			var ie *Error
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want *InventoryError", err)
			}
			if !errors.Is(err, errs.ErrBadInput) {
				t.Errorf("error does not match ErrBadInput")
			}
			if ie.Line != tc.line {
				t.Errorf("line = %d, want %d (%v)", ie.Line, tc.line, err)
			}
			if !strings.HasPrefix(err.Error(), "inv.yaml:") {
				t.Errorf("error does not start with the file name: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestInventoryClusterChoice(t *testing.T) {
	inv, err := Parse("inv.yaml", []byte("clusters:\n  - name: a\n    nodes: [{name: x, address: h, role: server}]\n  - name: b\n    nodes: [{name: y, address: h, role: server}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Cluster(""); err == nil || !strings.Contains(err.Error(), "--cluster") {
		t.Errorf("ambiguous cluster err = %v", err)
	}
	if c, err := inv.Cluster("b"); err != nil || c.Nodes[0].Name != "y" {
		t.Errorf("Cluster(b) = %v, %v", c, err)
	}
	if _, err := inv.Cluster("zz"); err == nil || !strings.Contains(err.Error(), "a, b") {
		t.Errorf("Cluster(zz) err = %v", err)
	}
}

func TestInventoryBootstrapBugOverride(t *testing.T) {
	src := `clusters:
  - name: c
    k3s:
      bootstrap_bug: true
      data_dir: /srv/k3s
    nodes:
      - {name: a, address: x, role: server}
      - name: b
        address: y
        role: server
        k3s: {bootstrap_bug: no}
      - {name: c, address: z, role: agent}
  - name: d
    nodes:
      - {name: e, address: w, role: server}
`
	dir := t.TempDir()
	p := filepath.Join(dir, "inv.yaml")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	c, d := inv.Clusters[0], inv.Clusters[1]
	want := []struct {
		n         *Node
		bug, from string
	}{
		{c.Nodes[0], BootstrapBugTrue, "inv.yaml:4 clusters[0].k3s.bootstrap_bug"},
		{c.Nodes[1], BootstrapBugFalse, "inv.yaml:11 clusters[0].nodes[1].k3s.bootstrap_bug"},
		{c.Nodes[2], BootstrapBugTrue, "inv.yaml:4 clusters[0].k3s.bootstrap_bug"},
		{d.Nodes[0], BootstrapBugAuto, ""},
	}
	for _, w := range want {
		if w.n.K3s.BootstrapBug != w.bug || w.n.K3s.BootstrapBugFrom != w.from {
			t.Errorf("%s: bootstrap_bug %q from %q, want %q from %q", w.n.Name, w.n.K3s.BootstrapBug, w.n.K3s.BootstrapBugFrom, w.bug, w.from)
		}
	}
	if got := c.Nodes[1].K3s.DataDir; got != "/srv/k3s" {
		t.Errorf("cluster-wide data_dir not inherited: %q", got)
	}
	if got := d.Nodes[0].K3s.DataDir; got != DefaultDataDir {
		t.Errorf("another cluster's k3s settings leaked: data_dir %q", got)
	}
}
