package lab_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caretaker/caretaker/lab"
)

// isolationScenario: a node's commands see the node's tree as / — a write
// to /etc lands in DIR/<node>/etc, never in the host's /etc; /etc/hostname
// is the node's; /usr is the host's, read-only; the node commands are at
// the paths of a real node.
func isolationScenario(t *testing.T, mode string) {
	const probe = "/etc/caretaker-host-write-test"
	if _, err := os.Stat(probe); err == nil {
		t.Fatalf("%s exists on the host before the test; remove it", probe)
	}
	l := startLab(t, lab.Options{Servers: 1, Agents: 1, SSH: mode})
	c := connect(t, l)
	for _, node := range []string{"server-1", "agent-1"} {
		out := c.mustRun(node, "touch "+probe+"; ls /; cat /etc/hostname; command -v k3s systemctl journalctl; k3s --version | head -1")
		for _, want := range []string{"etc\n", "usr\n", "var\n", node + "\n", "/usr/local/bin/k3s\n", "/usr/bin/systemctl\n", "/usr/bin/journalctl\n", "k3s version " + lab.DefaultVersion} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", node, want, out)
			}
		}
		if _, err := os.Stat(filepath.Join(l.NodeRoot(node), probe)); err != nil {
			t.Errorf("%s: the write to %s did not land in the node's tree: %v", node, probe, err)
		}
		if _, errs, code := c.run(node, "touch /usr/caretaker-host-write-test"); code == 0 || !strings.Contains(errs, "Read-only file system") {
			t.Errorf("%s: writing under /usr: exit %d, %q; want a read-only file system", node, code, errs)
		}
	}
	if _, err := os.Stat(probe); err == nil {
		os.Remove(probe)
		t.Fatalf("a node command wrote %s on the host", probe)
	}
	if _, err := os.Stat("/usr/caretaker-host-write-test"); err == nil {
		t.Fatalf("a node command wrote under the host's /usr")
	}
	// The node's K3s files are at the default paths inside the node only.
	if tok := c.read("server-1", "/var/lib/rancher/k3s/server/token"); !strings.HasPrefix(string(tok), "K10") {
		t.Errorf("server/token at the default path = %q", tok)
	}
	if _, err := os.Stat("/var/lib/rancher/k3s/server/token"); err == nil {
		t.Errorf("the node's files leaked onto the host's /var/lib/rancher")
	}
	if n := c.nodes["server-1"]; n.K3s.DataDir != "/var/lib/rancher/k3s" || n.K3s.UnitFile != "/etc/systemd/system/k3s.service" {
		t.Errorf("the inventory does not use the default K3s paths: %+v", n.K3s)
	}
}

// TestNodeCommandsIsolatedInProcess pins issue 10 #2 for --ssh inprocess.
func TestNodeCommandsIsolatedInProcess(t *testing.T) {
	t.Parallel()
	isolationScenario(t, lab.SSHInProcess)
}

// TestNodeCommandsIsolatedOpenSSH pins issue 10 #2 for --ssh openssh.
func TestNodeCommandsIsolatedOpenSSH(t *testing.T) {
	t.Parallel()
	requireOpenSSH(t)
	isolationScenario(t, lab.SSHOpenSSH)
}

// sshUsersScenario: users are checked as sshd does: root logs in, a user
// that does not exist on the node or has no authorized key is refused.
func sshUsersScenario(t *testing.T, mode string) {
	l := startLab(t, lab.Options{Servers: 1, SSH: mode})
	st := l.Status()
	key, err := os.ReadFile(filepath.Join(l.Dir(), "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := knownhosts.New(filepath.Join(l.Dir(), "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(st.Nodes[0].Address, strconv.Itoa(st.Nodes[0].SSHPort))
	run := func(user, line string) (string, error) {
		cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hk, Timeout: 10 * time.Second}
		cli, err := ssh.Dial("tcp", addr, cfg)
		if err != nil {
			return "", err
		}
		defer cli.Close()
		s, err := cli.NewSession()
		if err != nil {
			return "", err
		}
		defer s.Close()
		out, err := s.CombinedOutput(line)
		return string(out), err
	}
	dial := func(user string) (string, error) { return run(user, "id -un; echo $HOME") }
	if out, err := dial("root"); err != nil || out != "root\n/root\n" {
		t.Errorf("root: %q, %v", out, err)
	}
	for _, u := range []string{"nosuchuser", "daemon"} {
		if _, err := dial(u); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("user %s: %v, want an authentication failure", u, err)
		}
	}
	if _, err := os.Stat("/usr/bin/sudo"); err != nil {
		t.Logf("sudo is not installed on this host: the nodes have no admin user")
		if _, err := dial("admin"); err == nil {
			t.Errorf("admin logged in on a host without sudo")
		}
		return
	}
	out, err := dial("admin")
	if err != nil || out != "admin\n/home/admin\n" {
		t.Fatalf("admin: %q, %v", out, err)
	}
	// A NOPASSWD sudo user; node commands work through sudo too.
	if out, err := run("admin", "sudo -n id -un; sudo -n systemctl is-active k3s"); err != nil || out != "root\nactive\n" {
		t.Errorf("admin with sudo: %q, %v", out, err)
	}
}

// TestSSHUsersCheckedInProcess pins issue 10 #3 for --ssh inprocess.
func TestSSHUsersCheckedInProcess(t *testing.T) {
	t.Parallel()
	sshUsersScenario(t, lab.SSHInProcess)
}

// TestSSHUsersCheckedOpenSSH: the same against real sshd.
func TestSSHUsersCheckedOpenSSH(t *testing.T) {
	t.Parallel()
	requireOpenSSH(t)
	sshUsersScenario(t, lab.SSHOpenSSH)
}
