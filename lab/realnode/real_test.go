package realnode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
)

// Subnets of the test labs (AllocateSubnet: 127.2.y, apart from labs of
// other test processes and outside nodes.sh's 127.1.0.0/16).
var testSubnet, testSubnet2 string

// allocTestSubnets reserves the two subnets for the test.
func allocTestSubnets(t *testing.T) {
	t.Helper()
	for _, p := range []*string{&testSubnet, &testSubnet2} {
		s, release, err := AllocateSubnet()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(release)
		*p = s
	}
}

// needReal says in one line why a test cannot run when this machine
// cannot run the real engine (root, systemd-nspawn, a K3s binary): it is
// skipped on a developer's machine and fails under CI ($CI set), where the
// engine must run (labtest.RequireReal has the same rule).
func needReal(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("needs the real engine, which cannot run here: %v", err)
		}
		t.Skipf("needs the real engine (root, systemd-nspawn, $%s or ../shared/k3s/k3s.xz): %v", EnvK3sBinary, err)
	}
}

func startLab(t *testing.T, o Options) *Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	o.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start: %d servers up in %.1fs", o.Servers, time.Since(began).Seconds())
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// Needs root, systemd-nspawn, mmdebstrap and the K3s binary (shared/k3s/k3s.xz or $CARETAKER_K3S_BINARY).
func TestRealCluster(t *testing.T) {
	needReal(t)
	allocTestSubnets(t)
	sources := map[string]string{"server-1": SourceDropIn, "server-2": SourceUnit, "server-3": SourceEnv}
	c := startLab(t, Options{Servers: 3, Scenario: ScenarioInitReplaced, ServerSource: sources, SecureToken: true, Subnet: testSubnet})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("server set in the chosen source", func(t *testing.T) { checkSources(ctx, t, c, sources) })
	t.Run("readyz on every server", func(t *testing.T) {
		for _, n := range c.NodeNames() {
			if ok, msg := c.Readyz(ctx, n); !ok {
				t.Errorf("%s: /readyz: %s", n, msg)
			}
		}
	})
	t.Run("three voting etcd members", func(t *testing.T) { checkEtcdMembers(ctx, t, c, 3) })
	t.Run("secure token", func(t *testing.T) { checkSecureToken(t, c) })
	t.Run("ssh root and admin with strict known_hosts", func(t *testing.T) { checkSSH(ctx, t, c) })
	t.Run("inventory loads and dials", func(t *testing.T) { checkInventory(ctx, t, c) })
	t.Run("fault fail-start and clear", func(t *testing.T) { checkFault(ctx, t, c, "server-3") })
	t.Run("status", func(t *testing.T) {
		st, err := c.Status(ctx)
		if err != nil || !st.Ready || len(st.Nodes) != 3 {
			t.Fatalf("Status: %+v, %v", st, err)
		}
		for _, n := range st.Nodes {
			if !n.Running || n.ActiveState != "active" || n.SubState != "running" || (n.Machine != "running" && n.Machine != "degraded") {
				t.Errorf("%s: %+v", n.Name, n)
			}
		}
	})
	t.Run("same subnet refused, first lab untouched", func(t *testing.T) {
		_, err := Start(ctx, Options{Dir: t.TempDir(), Servers: 2, Subnet: testSubnet, Logf: t.Logf})
		if err == nil || !strings.Contains(err.Error(), c.Dir()) {
			t.Errorf("Start on the running lab's subnet: %v, want a refusal naming %s", err, c.Dir())
		}
		for _, n := range c.NodeNames() {
			if ok, msg := c.Readyz(ctx, n); !ok {
				t.Errorf("%s after the refused Start: /readyz %s", n, msg)
			}
		}
	})
	t.Run("reboot inside restarts the machine", func(t *testing.T) { checkReboot(ctx, t, c, "server-2") })
	t.Run("second lab on another subnet at the same time", func(t *testing.T) { checkSecondLab(t, c) })
	t.Run("Open from the state file and Close leave nothing", func(t *testing.T) { checkOpenClose(t, c) })
}

func checkSources(ctx context.Context, t *testing.T, c *Cluster, sources map[string]string) {
	want := map[string]string{
		"server-1": "https://" + c.NodeAddress("server-2") + ":6443",
		"server-2": "https://" + c.NodeAddress("server-1") + ":6443",
		"server-3": "https://" + c.NodeAddress("server-1") + ":6443",
	}
	where := map[string]string{SourceConfig: nodeConfigFile, SourceDropIn: nodeDropIn, SourceUnit: nodeUnitFile, SourceEnv: nodeEnvFile}
	for node, src := range sources {
		out, _, code, err := c.Exec(ctx, node, "cat "+nodeUnitFile+" "+nodeConfigFile+" "+nodeEnvFile+" 2>/dev/null; cat "+nodeDropIn+" 2>/dev/null; true")
		if err != nil || code != 0 {
			t.Fatalf("%s: read sources: %v %d", node, err, code)
		}
		root := c.NodeRoot(node)
		files := map[string][]byte{}
		for _, p := range []string{nodeConfigFile, nodeDropIn, nodeUnitFile, nodeEnvFile} {
			if b, err := os.ReadFile(filepath.Join(root, p)); err == nil {
				files[p] = b
			}
		}
		eff := effective(t, files)
		if got := eff["server"]; got.Value != want[node] || got.Source != where[src] {
			t.Errorf("%s: server = %q from %s, want %q from %s", node, got.Value, got.Source, want[node], where[src])
		}
		if ci := eff["cluster-init"]; ci.Value != "" {
			t.Errorf("%s: cluster-init %q still set (%s)", node, ci.Value, ci.Source)
		}
		if !strings.Contains(out, want[node]) {
			t.Errorf("%s: the node's own view of its sources lacks %s", node, want[node])
		}
	}
}

func checkEtcdMembers(ctx context.Context, t *testing.T, c *Cluster, want int) {
	tlsDir := filepath.Join(c.NodeRoot("server-1"), nodeServerDir, "tls", "etcd")
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "client.crt"), filepath.Join(tlsDir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(tlsDir, "server-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + c.NodeAddress("server-3") + ":2379"},
		TLS:         &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	mctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := cli.MemberList(mctx)
	if err != nil {
		t.Fatalf("etcd member list: %v", err)
	}
	voting := 0
	for _, m := range resp.Members {
		if !m.IsLearner {
			voting++
		}
		t.Logf("etcd member %s %v learner=%v", m.Name, m.PeerURLs, m.IsLearner)
	}
	if len(resp.Members) != want || voting != want {
		t.Errorf("etcd: %d members, %d voting; want %d voting", len(resp.Members), voting, want)
	}
}

func checkSecureToken(t *testing.T, c *Cluster) {
	for _, n := range c.NodeNames() {
		b, err := os.ReadFile(filepath.Join(c.NodeRoot(n), nodeConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		var tok string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "token: "); ok {
				tok = v
			}
		}
		onDisk, err := os.ReadFile(filepath.Join(c.NodeRoot(n), nodeServerDir, "token"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, "K10") || tok != strings.TrimSpace(string(onDisk)) {
			t.Errorf("%s: configured token %q, server/token %q: want the same K10<hash>::server:<pw>", n, tok, onDisk)
		}
	}
}

func checkSSH(ctx context.Context, t *testing.T, c *Cluster) {
	for _, n := range c.NodeNames() {
		out, _, code, err := c.SSH(ctx, n, "root", "id -un; hostname")
		if err != nil || code != 0 || out != "root\n"+n+"\n" {
			t.Errorf("%s: ssh root: %q %d %v", n, out, code, err)
		}
		out, _, code, err = c.SSH(ctx, n, "admin", "id -un; sudo -n id -un")
		if err != nil || code != 0 || out != "admin\nroot\n" {
			t.Errorf("%s: ssh admin + sudo -n: %q %d %v", n, out, code, err)
		}
	}
	// Strict: a known_hosts without the node's key refuses it.
	dir := t.TempDir()
	for _, f := range []string{"id_ed25519"} {
		b, _ := os.ReadFile(filepath.Join(c.Dir(), f))
		os.WriteFile(filepath.Join(dir, f), b, 0o600)
	}
	kh, _ := os.ReadFile(filepath.Join(c.Dir(), "known_hosts"))
	lines := strings.Split(strings.TrimSpace(string(kh)), "\n")
	// server-1's line carries server-2's key: a changed key.
	f := strings.Fields(lines[1])
	lines[0] = c.NodeAddress("server-1") + " " + f[1] + " " + f[2]
	os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	if _, _, _, err := sshRun(ctx, dir, c.NodeAddress("server-1"), "root", "true"); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("ssh with a wrong pinned key: got %v, want a key mismatch", err)
	}
}

func checkInventory(ctx context.Context, t *testing.T, c *Cluster) {
	inv, err := inventory.Load(c.InventoryPath())
	if err != nil {
		t.Fatalf("inventory.Load: %v", err)
	}
	cl, err := inv.Cluster("lab")
	if err != nil || len(cl.Nodes) != 3 || cl.SSH.HostKeyPolicy != inventory.HostKeyStrict {
		t.Fatalf("inventory cluster: %+v %v", cl, err)
	}
	for _, n := range cl.Nodes {
		if n.Address != c.NodeAddress(n.Name) || n.Role != inventory.RoleServer || n.K3s.DataDir != inventory.DefaultDataDir {
			t.Errorf("inventory node %+v", n)
		}
		e, err := sshnode.Dial(ctx, n)
		if err != nil {
			t.Errorf("%s: sshnode.Dial: %v", n.Name, err)
			continue
		}
		var out strings.Builder
		res, err := e.Run(ctx, transport.Command{Line: "systemctl is-active k3s", Stdout: &out})
		e.Close()
		if err != nil || res.ExitCode != 0 || strings.TrimSpace(out.String()) != "active" {
			t.Errorf("%s: over caretaker's executor: %q %+v %v", n.Name, out.String(), res, err)
		}
	}
}

func checkFault(ctx context.Context, t *testing.T, c *Cluster, node string) {
	if err := c.SetFault(ctx, node, FaultFailStart); err != nil {
		t.Fatal(err)
	}
	_, _, code, err := c.Exec(ctx, node, "systemctl restart k3s")
	if err != nil || code == 0 {
		t.Errorf("restart with fail-start: code %d, %v; want a failed start", code, err)
	}
	out, _, _, _ := c.Exec(ctx, node, "systemctl is-active k3s")
	if s := strings.TrimSpace(out); s == "active" {
		t.Errorf("k3s is %q with fail-start", s)
	}
	if out, _, _, _ := c.Exec(ctx, node, "find /etc -newer /run/systemd/system/k3s.service.d/50-lab-fault.conf -type f | head"); strings.TrimSpace(out) != "" {
		t.Errorf("the fault changed files under /etc: %s", out)
	}
	if err := c.SetFault(ctx, node, FaultClear); err != nil {
		t.Fatal(err)
	}
	if _, _, code, err := c.Exec(ctx, node, "systemctl restart k3s"); err != nil || code != 0 {
		t.Fatalf("restart after clear: code %d, %v", code, err)
	}
	if err := c.waitReadyz(ctx, mustNode(t, c, node)); err != nil {
		t.Fatal(err)
	}
}

func mustNode(t *testing.T, c *Cluster, name string) *nodeState {
	n, err := c.st.node(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// envChildDir makes TestHelperStartAndExit start a lab in that dir and
// exit without closing it: the lab must outlive the process that made it.
const envChildDir = "CARETAKER_REALNODE_TEST_CHILD_DIR"

// TestHelperStartAndExit is not a test: checkSecondLab runs the test
// binary with it to start a lab from another process that then exits.
func TestHelperStartAndExit(t *testing.T) {
	dir := os.Getenv(envChildDir)
	if dir == "" {
		t.Skip("helper process for checkSecondLab")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	o := Options{Dir: dir, Name: "second", Servers: 1, Scenario: ScenarioClusterInit, BootstrapBug: true, Subnet: testSubnet2, Logf: t.Logf}
	if n, err := strconv.Atoi(os.Getenv("CARETAKER_REALNODE_TEST_SERVERS")); err == nil {
		// By hand: a bigger lab, e.g. to measure or inspect a bring-up.
		o.Servers, o.Scenario, o.BootstrapBug = n, ScenarioInitReplaced, false
	}
	_, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
}

// TestHelperClose is not a test: with $CARETAKER_REALNODE_TEST_CLOSE_DIR
// it tears down the lab in that dir (Open + Close), e.g. one left by
// TestHelperStartAndExit or a failed run with $CARETAKER_REALNODE_KEEP_ON_FAILURE=1.
func TestHelperClose(t *testing.T) {
	dir := os.Getenv("CARETAKER_REALNODE_TEST_CLOSE_DIR")
	if dir == "" {
		t.Skip("helper: set CARETAKER_REALNODE_TEST_CLOSE_DIR to tear down a lab")
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogf(t.Logf)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkSecondLab starts a one-server cluster-init lab with the bootstrap
// bug next to the first, from a child process that exits at once; it
// reattaches with Open, checks it and closes it: the first keeps running
// and the host settings stay raised while it does.
func checkSecondLab(t *testing.T, first *Cluster) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	cmd := exec.Command(exe, "-test.run=^TestHelperStartAndExit$", "-test.v")
	cmd.Env = append(os.Environ(), envChildDir+"="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("child process (%.1fs): %s", time.Since(began).Seconds(), out)
	c2, oerr := Open(dir)
	if oerr != nil {
		t.Fatalf("Open the second lab: %v (child: %v)", oerr, err)
	}
	c2.SetLogf(t.Logf)
	t.Cleanup(func() { c2.Close() })
	if err != nil {
		t.Fatalf("child process: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st, err := c2.Status(ctx); err != nil || !st.Ready || st.Nodes[0].ActiveState != "active" {
		t.Errorf("second lab after its creator exited: %+v %v", st, err)
	}
	if ok, msg := c2.Readyz(ctx, "server-1"); !ok {
		t.Errorf("second lab: /readyz %s", msg)
	}
	if ok, msg := first.Readyz(ctx, "server-1"); !ok {
		t.Errorf("first lab while the second runs: /readyz %s", msg)
	}
	env, _ := os.ReadFile(filepath.Join(c2.NodeRoot("server-1"), nodeEnvFile))
	if !strings.Contains(string(env), "K3S_SERVE_BOOTSTRAP_FROM_DISK=true") {
		t.Errorf("env file %q", env)
	}
	pe, _, _, _ := c2.Exec(ctx, "server-1", "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value k3s)/environ | grep K3S_SERVE")
	if strings.TrimSpace(pe) != "K3S_SERVE_BOOTSTRAP_FROM_DISK=true" {
		t.Errorf("k3s runs without the bug toggle: %q", pe)
	}
	inv, _ := os.ReadFile(c2.InventoryPath())
	if !strings.Contains(string(inv), "bootstrap_bug: true") {
		t.Errorf("inventory lacks bootstrap_bug: %s", inv)
	}
	if err := c2.Close(); err != nil {
		t.Fatalf("close the second lab: %v", err)
	}
	if left := c2.Leftovers(); len(left) > 0 {
		t.Errorf("second lab left %v", left)
	}
	if v, _ := readSysctl("fs.inotify.max_user_instances"); v != "8192" {
		t.Errorf("inotify instances %s after closing the second lab while the first runs", v)
	}
	if ok, msg := first.Readyz(ctx, "server-1"); !ok {
		t.Errorf("first lab after the second's Close: /readyz %s", msg)
	}
}

// checkReboot: `systemctl reboot` inside a node makes systemd-nspawn exit
// 133; the supervisor starts the machine again and K3s (enabled) comes
// back.
func checkReboot(ctx context.Context, t *testing.T, c *Cluster, node string) {
	n := mustNode(t, c, node)
	before, err := leaderPID(n)
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(ctx, node, "systemctl reboot")
	err = poll(ctx, 250*time.Millisecond, func() (bool, error) {
		p, err := leaderPID(n)
		return err == nil && p != before, nil
	})
	if err != nil {
		t.Fatalf("no new machine after reboot: %v", err)
	}
	if err := c.waitBooted(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := c.waitReadyz(ctx, n); err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(filepath.Join(n.Dir, "console.log"))
	if !strings.Contains(string(log), "systemd-nspawn exited 133") {
		t.Errorf("console.log does not show the reboot exit 133")
	}
}

func checkOpenClose(t *testing.T, c *Cluster) {
	o, err := Open(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	o.SetLogf(t.Logf)
	began := time.Now()
	if err := o.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close after Open: %.1fs", time.Since(began).Seconds())
	if err := o.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if left := o.Leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	// Independent checks of the host.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), c.Dir()) {
		t.Errorf("mounts under %s remain", c.Dir())
	}
	x, y, err := subnetOctets(testSubnet)
	if err != nil {
		t.Fatal(err)
	}
	nm := names{x: x, y: y}
	links, _ := run(context.Background(), "ip", "-o", "link")
	if strings.Contains(links, nm.bridge()) || strings.Contains(links, fmt.Sprintf("ctkv%d-%d-", x, y)) {
		t.Errorf("links remain: %s", links)
	}
	nss, _ := run(context.Background(), "ip", "netns", "list")
	if strings.Contains(nss, fmt.Sprintf("ctk-127.%d.%d-", x, y)) {
		t.Errorf("netns remain: %s", nss)
	}
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if fileExists(filepath.Join(h, nm.cgroup())) {
			t.Errorf("cgroup %s/%s remains", h, nm.cgroup())
		}
	}
	routes, _ := run(context.Background(), "ip", "route", "show", "table", "local")
	if strings.Contains(routes, testSubnet+".0/24") {
		t.Errorf("local route remains: %s", routes)
	}
}
