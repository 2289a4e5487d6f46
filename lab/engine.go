package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/lab/realnode"
)

// Engines: how a lab runs K3s.
const (
	// EngineSim is the simulator: simulated K3s nodes in one process
	// (fast, agents, any K3s version).
	EngineSim = "sim"
	// EngineReal is the real engine: a real K3s binary as the installer's
	// k3s.service in systemd-nspawn machines with real systemd and sshd
	// (servers only; package lab/realnode).
	EngineReal = "real"
)

// Handle is a running lab of either engine, as tools and tests use it:
// its inventory, its nodes' files and commands reached directly (not
// through caretaker), faults, and Close.
type Handle interface {
	// Engine is EngineSim or EngineReal.
	Engine() string
	// Dir is the lab directory.
	Dir() string
	// InventoryPath is the lab's inventory for caretaker.
	InventoryPath() string
	// NodeNames lists the nodes, servers first.
	NodeNames() []string
	// NodeAddress is the node's IP address (reachable from this host).
	NodeAddress(node string) string
	// NodeRoot is the host directory that is the node's "/": a node file
	// p is NodeRoot(node)+p on this host.
	NodeRoot(node string) string
	// Exec runs `sh -c script` as root on the node, independently of
	// caretaker, and returns its output and exit code.
	Exec(ctx context.Context, node, script string) (stdout, stderr string, code int, err error)
	// InjectFault sets a fault on the node's K3s service: FaultFailStart,
	// FaultHangStart or FaultClear.
	InjectFault(ctx context.Context, node, fault string) error
	// Close stops the lab and leaves nothing running.
	Close() error
}

// StartEngine starts a lab of the engine o.Engine names (default the
// simulator) and returns it once every node is up and the inventory is
// written.
func StartEngine(ctx context.Context, o Options) (Handle, error) {
	switch o.Engine {
	case "", EngineSim:
		return Start(ctx, o)
	case EngineReal:
		c, err := realnode.Start(ctx, o.realOptions())
		if err != nil {
			return nil, err
		}
		return realHandle{c}, nil
	}
	return nil, fmt.Errorf("lab: unknown engine %q (want %s or %s)", o.Engine, EngineSim, EngineReal)
}

// realOptions maps lab options onto the real engine's.
func (o Options) realOptions() realnode.Options {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return realnode.Options{
		Dir: o.Dir, Name: o.Name, Servers: o.Servers, Agents: o.Agents, Scenario: o.Scenario,
		ServerSource: o.ServerSource, SecureToken: o.SecureToken, BootstrapBug: o.BootstrapBug,
		K3sBinary: o.K3sBinary, Subnet: o.Subnet, Token: o.Token, Logf: logf,
	}
}

// IsRealLab reports whether dir holds a lab of the real engine.
func IsRealLab(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, realnode.StateFile))
	return err == nil
}

// OpenReal reattaches to a running real-engine lab in dir.
func OpenReal(dir string) (Handle, error) {
	c, err := realnode.Open(dir)
	if err != nil {
		return nil, err
	}
	return realHandle{c}, nil
}

// realHandle is a real-engine lab as a Handle.
type realHandle struct{ *realnode.Cluster }

func (realHandle) Engine() string { return EngineReal }

func (h realHandle) InjectFault(ctx context.Context, node, fault string) error {
	return h.SetFault(ctx, node, fault)
}

// Engine is EngineSim: a Lab is the simulator.
func (l *Lab) Engine() string { return EngineSim }

// NodeNames lists the lab's nodes, servers first.
func (l *Lab) NodeNames() []string { return l.nodeNames() }

// NodeAddress is the node's loopback address.
func (l *Lab) NodeAddress(name string) string {
	if n, ok := l.byName[name]; ok {
		return n.ip
	}
	return ""
}

// InjectFault is SetFault for the Handle interface.
func (l *Lab) InjectFault(_ context.Context, node, fault string) error {
	return l.SetFault(node, fault)
}

// Exec runs script on the node over the lab's own SSH (the node's pinned
// host key, the lab's client key, as root), as an operator would by hand.
func (l *Lab) Exec(ctx context.Context, node, script string) (string, string, int, error) {
	n, ok := l.byName[node]
	if !ok {
		return "", "", -1, fmt.Errorf("lab: no node %q", node)
	}
	addr := net.JoinHostPort(n.ip, strconv.Itoa(n.sshPort))
	cfg := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(l.clientKey)},
		HostKeyCallback: ssh.FixedHostKey(n.hostKey), Timeout: 10 * time.Second}
	d := net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", "", -1, fmt.Errorf("lab: %s: %w", node, err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(raw, addr, cfg)
	if err != nil {
		raw.Close()
		return "", "", -1, fmt.Errorf("lab: %s: ssh: %w", node, err)
	}
	cli := ssh.NewClient(sc, chans, reqs)
	defer cli.Close()
	stop := context.AfterFunc(ctx, func() { cli.Close() })
	defer stop()
	sess, err := cli.NewSession()
	if err != nil {
		return "", "", -1, fmt.Errorf("lab: %s: ssh session: %w", node, err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errb
	err = sess.Run(script)
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0, nil
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitStatus(), nil
	}
	return out.String(), errb.String(), -1, fmt.Errorf("lab: %s: %w", node, err)
}
