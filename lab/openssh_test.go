package lab_test

import (
	"os"
	"strings"
	"testing"

	"github.com/caretaker/caretaker/lab"
)

// requireOpenSSH fails (or, with CARETAKER_SKIP_OPENSSH=1, skips) when the
// openssh mode cannot run here: it needs root and Debian's openssh-server.
func requireOpenSSH(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "not running as root"
	} else if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		why = "/usr/sbin/sshd is missing"
	}
	if why == "" {
		return
	}
	msg := "the openssh lab mode needs root and openssh-server (apt-get install openssh-server): " + why
	if os.Getenv("CARETAKER_SKIP_OPENSSH") == "1" {
		t.Skip(msg + " (CARETAKER_SKIP_OPENSSH=1)")
	}
	t.Fatal(msg + "; set CARETAKER_SKIP_OPENSSH=1 to skip this test")
}

// Acceptance 7: the bug scenario of test 1 through real OpenSSH servers,
// each node in its own mount namespace with the real K3s paths.
func TestBugReproducedOverOpenSSH(t *testing.T) {
	requireOpenSSH(t)
	bugScenario(t, lab.SSHOpenSSH)
}

// In openssh mode a node sees its own tree at the real paths, and the
// node commands are at the paths of a real node, first on sshd's PATH.
func TestOpenSSHNodeView(t *testing.T) {
	requireOpenSSH(t)
	l := startLab(t, lab.Options{Servers: 1, Agents: 1, SSH: lab.SSHOpenSSH})
	c := connect(t, l)
	for _, node := range []string{"server-1", "agent-1"} {
		out := c.mustRun(node, "hostname; command -v k3s systemctl; /usr/local/bin/k3s --version | head -1; /usr/bin/systemctl is-active k3s k3s-agent || true; cat /etc/rancher/k3s/config.yaml")
		for _, want := range []string{node + "\n", "/usr/local/bin/k3s\n", "/usr/bin/systemctl\n", "k3s version " + lab.DefaultVersion, "# written by caretaker lab for " + node} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", node, want, out)
			}
		}
	}
	if _, err := os.Stat("/var/lib/rancher/k3s/server/token"); err == nil {
		t.Errorf("the node's files leaked onto the host's /var/lib/rancher")
	}
	tok := c.read("server-1", "/var/lib/rancher/k3s/server/token")
	if !strings.HasPrefix(string(tok), "K10") {
		t.Errorf("server/token at the real path = %q", tok)
	}
}
