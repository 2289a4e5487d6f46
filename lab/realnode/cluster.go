package realnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Cluster is a running (or torn-down) real-engine lab: N systemd-nspawn
// machines with real systemd, sshd and K3s servers.
type Cluster struct {
	st   *state
	logf func(string, ...any)
	mu   sync.Mutex // serialises Close
}

// Open reattaches to the lab whose state file is dir/realnode.json, e.g.
// for `lab status`, `lab fault` or `lab down` from another process than
// the one that started it. It works whether or not the lab still runs
// (Close of a dead lab removes what is left of it).
func Open(dir string) (*Cluster, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	return &Cluster{st: st, logf: func(string, ...any) {}}, nil
}

// SetLogf sets where Close and the other methods log progress; nil
// discards.
func (c *Cluster) SetLogf(logf func(format string, args ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	c.logf = logf
}

// Dir is the lab directory.
func (c *Cluster) Dir() string { return c.st.Dir }

// InventoryPath is Dir/inventory.yaml, caretaker's inventory of the lab.
func (c *Cluster) InventoryPath() string { return filepath.Join(c.st.Dir, "inventory.yaml") }

// NodeNames lists the nodes, server-1..server-N.
func (c *Cluster) NodeNames() []string {
	out := make([]string, len(c.st.Nodes))
	for i, n := range c.st.Nodes {
		out[i] = n.Name
	}
	return out
}

// NodeAddress is the node's IPv4 address (<Subnet>.N), "" for an unknown
// node.
func (c *Cluster) NodeAddress(name string) string {
	if n, err := c.st.node(name); err == nil {
		return n.Address
	}
	return ""
}

// NodeRoot is the host path of the node's merged root filesystem (its
// overlay mount), for reading the node's files directly; "" for an
// unknown node.
func (c *Cluster) NodeRoot(name string) string {
	if n, err := c.st.node(name); err == nil {
		return n.Root
	}
	return ""
}

// nodeEnv is the environment of commands run inside a node.
var nodeEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"}

// Exec runs `sh -c script` as root inside the node, entering every
// namespace of the node's PID 1 with nsenter (not over SSH: tests read
// node state with it independently of caretaker). code is the script's
// exit status; err is set only when it could not be run.
func (c *Cluster) Exec(ctx context.Context, node, script string) (stdout, stderr string, code int, err error) {
	n, err := c.st.node(node)
	if err != nil {
		return "", "", -1, err
	}
	pid, err := leaderPID(n)
	if err != nil {
		return "", "", -1, err
	}
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(pid), "-a", "--", "/bin/sh", "-c", script)
	cmd.Env = nodeEnv
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return o.String(), e.String(), 0, nil
	case errors.As(err, &exit) && ctx.Err() == nil:
		return o.String(), e.String(), exit.ExitCode(), nil
	}
	return o.String(), e.String(), -1, fmt.Errorf("realnode: %s: exec %q: %w", node, script, err)
}

// SSH runs cmd on the node over real SSH (x/crypto/ssh, Dir/id_ed25519,
// host key checked strictly against Dir/known_hosts) as user (root or
// admin).
func (c *Cluster) SSH(ctx context.Context, node, user, cmd string) (stdout, stderr string, code int, err error) {
	n, err := c.st.node(node)
	if err != nil {
		return "", "", -1, err
	}
	return sshRun(ctx, c.st.Dir, n.Address, user, cmd)
}

// execOK runs script in the node and fails unless it exits 0.
func (c *Cluster) execOK(ctx context.Context, node, script string) (string, error) {
	out, errOut, code, err := c.Exec(ctx, node, script)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("realnode: %s: %q exited %d: %s", node, script, code, strings.TrimSpace(errOut+out))
	}
	return out, nil
}

// SetFault injects or clears a fault in the node's k3s.service:
// FaultFailStart writes the runtime drop-in
// /run/systemd/system/k3s.service.d/50-lab-fault.conf with
// ExecStartPre=/bin/false and reloads systemd (nothing under /etc
// changes), so every start fails; FaultClear removes it and reloads.
// FaultHangStart makes every start hang in "activating (start-pre)" with
// ExecStartPre=/bin/sleep infinity, as a K3s that never gets ready does
// under the installer's TimeoutStartSec=0. None restarts the service.
func (c *Cluster) SetFault(ctx context.Context, node, fault string) error {
	var script string
	switch fault {
	case FaultFailStart:
		script = fmt.Sprintf("mkdir -p %s && printf '[Service]\\nExecStartPre=/bin/false\\n' > %s && systemctl daemon-reload",
			filepath.Dir(faultDropIn), faultDropIn)
	case FaultHangStart:
		script = fmt.Sprintf("mkdir -p %s && printf '[Service]\nExecStartPre=/bin/sleep infinity\n' > %s && systemctl daemon-reload",
			filepath.Dir(faultDropIn), faultDropIn)
	case FaultClear:
		script = fmt.Sprintf("rm -f %s && { rmdir %s 2>/dev/null || true; } && systemctl daemon-reload", faultDropIn, filepath.Dir(faultDropIn))
	default:
		return fmt.Errorf("realnode: unknown fault %q (want %s, %s or %s)", fault, FaultFailStart, FaultHangStart, FaultClear)
	}
	_, err := c.execOK(ctx, node, script)
	return err
}

// Status is the lab's state, JSON-serialisable.
type Status struct {
	Engine    string       `json:"engine"` // "real"
	Name      string       `json:"name"`
	Dir       string       `json:"dir"`
	Subnet    string       `json:"subnet"`
	Inventory string       `json:"inventory"`
	Ready     bool         `json:"ready"` // Start completed and every node runs
	Nodes     []NodeStatus `json:"nodes"`
}

// NodeStatus is one node of Status.
type NodeStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Role    string `json:"role"`
	// Running: the supervisor and systemd-nspawn are alive.
	Running       bool `json:"running"`
	SupervisorPID int  `json:"supervisor_pid"`
	// Machine is `systemctl is-system-running` inside the node.
	Machine string `json:"machine"`
	// ActiveState and SubState of k3s.service (systemctl show).
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state"`
	Error       string `json:"error,omitempty"`
}

// Status reports every node: address, whether it runs, its systemd state
// and k3s.service's ActiveState/SubState.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	s := Status{Engine: "real", Name: c.st.Name, Dir: c.st.Dir, Subnet: c.st.Subnet, Inventory: c.InventoryPath(), Ready: c.st.Ready}
	s.Nodes = make([]NodeStatus, len(c.st.Nodes))
	var wg sync.WaitGroup
	for i := range c.st.Nodes {
		n := &c.st.Nodes[i]
		ns := &s.Nodes[i]
		*ns = NodeStatus{Name: n.Name, Address: n.Address, Role: "server", SupervisorPID: n.SupervisorPID}
		if nspawnPID(n) == 0 {
			s.Ready = false
			continue
		}
		ns.Running = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, _, _, err := c.Exec(ctx, n.Name, "systemctl is-system-running; systemctl show -p ActiveState -p SubState k3s")
			if err != nil {
				ns.Error = err.Error()
				return
			}
			for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
				k, v, ok := strings.Cut(l, "=")
				switch {
				case i == 0 && !ok:
					ns.Machine = l
				case k == "ActiveState":
					ns.ActiveState = v
				case k == "SubState":
					ns.SubState = v
				}
			}
		}()
	}
	wg.Wait()
	for _, n := range s.Nodes {
		if !n.Running {
			s.Ready = false
		}
	}
	return s, nil
}
