package lab_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/lab"
	"github.com/caretaker/caretaker/lab/labtest"
)

// listeners returns the TCP sockets listening on an address of subnet
// (/proc/net/tcp, state 0A).
func listeners(t *testing.T, subnet string) []string {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" {
			continue
		}
		hostport := strings.Split(fields[1], ":")
		if len(hostport) != 2 {
			continue
		}
		b, err := hex.DecodeString(hostport[0])
		if err != nil || len(b) != 4 {
			continue
		}
		ip := net.IPv4(b[3], b[2], b[1], b[0]).String()
		port, _ := strconv.ParseUint(hostport[1], 16, 16)
		if strings.HasPrefix(ip, subnet+".") {
			out = append(out, fmt.Sprintf("%s:%d", ip, port))
		}
	}
	return out
}

// caretaker runs `caretaker lab ...` through this test binary (TestMain)
// as a separate process, as a user would.
func caretaker(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"lab"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// Acceptance 8 (CLI path): `lab up` starts a detached daemon and returns
// once every node is up; status, fault and SSH work; `lab down` leaves no
// process and no listener.
func TestLabUpStatusFaultDownCLI(t *testing.T) {
	subnet, release, err := lab.AllocateSubnet()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	dir := t.TempDir()
	began := time.Now()
	out, errs, err := caretaker(t, "up", "--dir", dir, "--servers", "3", "--agents", "2", "--subnet", subnet,
		"--node-version", "server-3=v1.32.3+k3s1", "--server-source", "server-2=env")
	if err != nil {
		t.Fatalf("lab up: %v\n%s%s", err, out, errs)
	}
	t.Logf("lab up (CLI, 3 servers + 2 agents) took %s", time.Since(began).Round(time.Millisecond))
	downed := false
	defer func() {
		if !downed {
			caretaker(t, "down", "--dir", dir)
		}
	}()
	if strings.TrimSpace(out) != filepath.Join(dir, "inventory.yaml") {
		t.Errorf("lab up printed %q, want the inventory path", out)
	}

	out, errs, err = caretaker(t, "status", "--dir", dir, "--output", "json")
	if err != nil {
		t.Fatalf("lab status: %v\n%s", err, errs)
	}
	var st lab.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if len(st.Nodes) != 5 || !st.Ready || st.PID == os.Getpid() {
		t.Fatalf("status = %+v", st)
	}
	for _, n := range st.Nodes {
		if n.State != "active" || n.SSHPort == 0 || !strings.HasPrefix(n.Address, subnet+".") {
			t.Errorf("node %+v", n)
		}
	}
	if st.Nodes[2].Version != "v1.32.3+k3s1" || st.Nodes[0].Version != lab.DefaultVersion {
		t.Errorf("versions: %s, %s", st.Nodes[0].Version, st.Nodes[2].Version)
	}
	for _, p := range []string{st.Etcd.CACert, st.Etcd.Cert, st.Etcd.Key, st.TokenFile, st.Inventory} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("status names %s: %v", p, err)
		}
	}
	if text, _, err := caretaker(t, "status", "--dir", dir); err != nil || !strings.Contains(text, "server-1") {
		t.Errorf("text status: %v\n%s", err, text)
	}

	// SSH into the daemon's nodes; fault injection.
	l := &cluster{t: t}
	c := connectInventory(t, st.Inventory, l)
	if env := string(c.read("server-2", c.nodes["server-2"].K3s.EnvFiles[2])); !strings.Contains(env, "K3S_URL=") {
		t.Errorf("server-2's env file lacks K3S_URL:\n%s", env)
	}
	if _, errs, err := caretaker(t, "fault", "--dir", dir, "agent-1", "fail-start"); err != nil {
		t.Fatalf("lab fault: %v %s", err, errs)
	}
	if _, _, code := c.run("agent-1", "systemctl restart k3s-agent"); code == 0 {
		t.Errorf("restart succeeded with fail-start injected")
	}
	// Restart=always: the unit waits for its next automatic restart.
	if o, _, _ := c.run("agent-1", "systemctl show k3s-agent -p ActiveState,SubState,Result"); o != "Result=exit-code\nActiveState=activating\nSubState=auto-restart\n" {
		t.Errorf("agent-1 with fail-start injected:\n%s", o)
	}
	if j := c.journal("agent-1"); !strings.Contains(j, "injected fault fail-start") {
		t.Errorf("journal lacks the injected fault line:\n%s", j)
	}
	if _, errs, err := caretaker(t, "fault", "--dir", dir, "agent-1", "clear"); err != nil {
		t.Fatalf("lab fault clear: %v %s", err, errs)
	}
	c.mustRun("agent-1", "systemctl restart k3s-agent")
	for _, ex := range c.ex {
		ex.Close()
	}

	if len(listeners(t, subnet)) == 0 {
		t.Fatal("no listener found on the lab subnet while it runs (the check would prove nothing)")
	}
	if _, errs, err := caretaker(t, "down", "--dir", dir); err != nil {
		t.Fatalf("lab down: %v\n%s", err, errs)
	}
	downed = true
	if left := listeners(t, subnet); len(left) > 0 {
		t.Errorf("listeners left after lab down: %v", left)
	}
	if alive(st.PID) {
		t.Errorf("the lab daemon (pid %d) still runs after lab down", st.PID)
	}
	if _, err := os.Stat(filepath.Join(dir, "lab.sock")); err == nil {
		t.Errorf("lab.sock left behind")
	}
	if _, err := os.Stat(st.Inventory); err != nil {
		t.Errorf("lab down removed the inventory (files in DIR stay): %v", err)
	}
	if out, _, err := caretaker(t, "status", "--dir", dir); err == nil {
		t.Errorf("lab status succeeds after down:\n%s", out)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// Acceptance 8 (Go API): Close leaves no listener on the lab's subnet.
func TestCloseLeavesNoListener(t *testing.T) {
	subnet, release, err := lab.AllocateSubnet()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	l := labtest.Start(t, lab.Options{Servers: 2, Agents: 1, Subnet: subnet})
	before := listeners(t, subnet)
	// 2 supervisors, 2 etcd members (client + peer), 3 SSH servers.
	if len(before) < 8 {
		t.Fatalf("listeners while running: %v, want at least 8", before)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if left := listeners(t, subnet); len(left) > 0 {
		t.Errorf("listeners left after Close: %v", left)
	}
	// The nodes' mounts lived in the keeper's namespace only.
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), l.Dir()) {
		t.Errorf("mounts under %s on the host:\n%s", l.Dir(), mi)
	}
}

// BenchmarkLabUp prints how long starting a lab of 3 servers and 2 agents
// takes (acceptance 8: under 10 s on a 2-core machine), in-process as the
// daemon runs it, and closing it.
func BenchmarkLabUp(b *testing.B) {
	shim := labtest.ShimBinary(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		subnet, release, err := lab.AllocateSubnet()
		if err != nil {
			b.Fatal(err)
		}
		began := time.Now()
		l, err := lab.Start(b.Context(), lab.Options{Dir: b.TempDir(), Servers: 3, Agents: 2, Subnet: subnet, ShimBinary: shim})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(began)
		total += took
		b.StopTimer()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		release()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/lab-up")
	b.Logf("lab up, 3 servers + 2 agents: %.2fs per lab (%d runs)", total.Seconds()/float64(b.N), b.N)
}
