package realnode

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// These tests need nothing but Go.

func TestAgentsRefusedPlainly(t *testing.T) {
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), Servers: 3, Agents: 2, K3sBinary: "/nonexistent"})
	if !errors.Is(err, ErrAgentsUnsupported) {
		t.Fatalf("Start with agents: got %v, want ErrAgentsUnsupported", err)
	}
	for _, want := range []string{"agents need containerd", "writable cgroup controllers", "systemd-nspawn", "simulator"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	base := Options{Dir: t.TempDir(), Servers: 3, K3sBinary: "/k3s"}
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no dir", func(o *Options) { o.Dir = "" }, "no lab directory"},
		{"no servers", func(o *Options) { o.Servers = 0 }, "--servers"},
		{"bad scenario", func(o *Options) { o.Scenario = "x" }, "unknown scenario"},
		{"init-replaced needs 2", func(o *Options) { o.Servers = 1 }, "at least 2 servers"},
		{"source of unknown node", func(o *Options) { o.ServerSource = map[string]string{"server-4": "config"} }, "not a server"},
		{"bad source", func(o *Options) { o.ServerSource = map[string]string{"server-1": "x"} }, "want config, dropin"},
		{"subnet not loopback", func(o *Options) { o.Subnet = "10.0.0" }, "127.X.Y"},
		{"subnet of lo", func(o *Options) { o.Subnet = "127.0.0" }, "host's own"},
		{"bad token", func(o *Options) { o.Token = "a b" }, "token password"},
	}
	for _, c := range cases {
		o := base
		c.mod(&o)
		if _, err := o.withDefaults(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	o, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Scenario != ScenarioInitReplaced || o.Subnet != DefaultSubnet || o.Name != "lab" || len(o.Token) != 32 {
		t.Errorf("defaults: %+v", o)
	}
}

// Host-global names derive from the subnet: two labs never share one, and
// every interface name fits IFNAMSIZ.
func TestNamesDoNotCollide(t *testing.T) {
	a, b := names{255, 255}, names{2, 1}
	if len(a.bridge()) > 15 || len(a.veth(254)) > 15 {
		t.Fatalf("interface names too long: %q %q", a.bridge(), a.veth(254))
	}
	seen := map[string]bool{}
	for _, nm := range []names{a, b, {2, 2}, {22, 1}, {2, 21}} {
		for _, s := range []string{nm.bridge(), nm.veth(1), nm.veth(12), nm.netns(1), nm.machine("server-1"), nm.cgroup()} {
			if seen[s] {
				t.Errorf("name %q used twice", s)
			}
			seen[s] = true
		}
	}
}

// renderServer puts `server` in exactly the chosen source, and the
// sources parse back (internal/k3s.Effective) to the intended settings.
func TestRenderServerSources(t *testing.T) {
	url := "https://127.2.1.1:6443"
	for _, src := range []string{SourceConfig, SourceDropIn, SourceUnit, SourceEnv} {
		files := renderServer("server-2", serverConf{addr: "127.2.1.2", token: "pw", serverURL: url, source: src, bootstrap: true})
		eff := effective(t, files)
		if got := k3s.SettingValue(eff, "server"); got != url {
			t.Errorf("%s: effective server %q, want %q", src, got, url)
		}
		if got := eff["server"].Source; !strings.Contains(got, map[string]string{SourceConfig: "config.yaml", SourceDropIn: "50-server.yaml", SourceUnit: "k3s.service", SourceEnv: ".env"}[src]) {
			t.Errorf("%s: server comes from %q", src, got)
		}
		if !strings.Contains(string(files[nodeEnvFile]), "K3S_SERVE_BOOTSTRAP_FROM_DISK=true\n") {
			t.Errorf("%s: env file lacks the bootstrap bug toggle: %q", src, files[nodeEnvFile])
		}
		if k3s.SettingValue(eff, "token") != "pw" || k3s.SettingValue(eff, "node-ip") != "127.2.1.2" {
			t.Errorf("%s: token/node-ip: %v", src, eff)
		}
	}
	files := renderServer("server-1", serverConf{addr: "127.2.1.1", token: "pw", clusterInit: true, source: SourceUnit})
	if eff := effective(t, files); k3s.SettingValue(eff, "cluster-init") != "true" || k3s.SettingValue(eff, "server") != "" {
		t.Errorf("server-1 first phase: %v", eff)
	}
	if files[nodeDropIn] != nil {
		t.Errorf("a drop-in without the dropin source")
	}
}

func effective(t *testing.T, files map[string][]byte) map[string]k3s.Setting {
	t.Helper()
	src := k3s.Sources{Unit: files[nodeUnitFile], UnitPath: nodeUnitFile,
		Config: files[nodeConfigFile], ConfigPath: nodeConfigFile,
		EnvFiles: []k3s.NamedFile{{Path: nodeEnvFile, Data: files[nodeEnvFile]}}}
	if d := files[nodeDropIn]; d != nil {
		src.DropIns = []k3s.NamedFile{{Path: nodeDropIn, Data: d}}
	}
	eff, err := k3s.Effective(src)
	if err != nil {
		t.Fatalf("effective config: %v", err)
	}
	return eff
}

// The inventory parses with caretaker's own loader: root, the lab's key,
// strict known_hosts, default K3s paths. With the bootstrap bug every
// server says k3s: {bootstrap_bug: true}.
func TestInventoryShape(t *testing.T) {
	dir := t.TempDir()
	c := &Cluster{st: &state{Dir: dir, Name: "lab", Nodes: []nodeState{
		{Name: "server-1", Address: "127.2.9.1"}, {Name: "server-2", Address: "127.2.9.2"}}}}
	b, err := c.renderInventory(false)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse(filepath.Join(dir, "inventory.yaml"), b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	cl, err := inv.Cluster("lab")
	if err != nil {
		t.Fatal(err)
	}
	if cl.SSH.User != "root" || cl.SSH.HostKeyPolicy != inventory.HostKeyStrict || cl.SSH.KnownHosts != filepath.Join(dir, "known_hosts") ||
		len(cl.SSH.IdentityFiles) != 1 || cl.SSH.IdentityFiles[0] != filepath.Join(dir, "id_ed25519") {
		t.Errorf("ssh settings %+v", cl.SSH)
	}
	for i, n := range cl.Nodes {
		if n.Name != c.st.Nodes[i].Name || n.Address != c.st.Nodes[i].Address || n.Role != inventory.RoleServer || n.Port != 22 ||
			n.K3s.DataDir != inventory.DefaultDataDir || n.K3s.UnitFile != inventory.DefaultServerUnit || n.K3s.Service != inventory.DefaultServerService {
			t.Errorf("node %d: %+v", i, n)
		}
	}
	b, err = c.renderInventory(true)
	if err != nil {
		t.Fatal(err)
	}
	inv, err = inventory.Parse(filepath.Join(dir, "inventory.yaml"), b)
	if err != nil {
		t.Fatalf("with the bootstrap bug: %v\n%s", err, b)
	}
	for _, n := range inv.Clusters[0].Nodes {
		if n.K3s.BootstrapBug != inventory.BootstrapBugTrue {
			t.Errorf("%s: bootstrap_bug %q, want true", n.Name, n.K3s.BootstrapBug)
		}
	}
}
