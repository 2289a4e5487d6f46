package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caretaker/caretaker/lab"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
)

// labNode is one node of a running lab.
type labNode struct {
	name, address, role string
	port                int
	// root is the node's file tree on this machine (DIR/<node>): in
	// openssh mode it is mounted over the real paths inside the node.
	root string
}

// runningLab is a lab started with `caretaker lab up`.
type runningLab struct {
	dir, inventory string
	key, knownHost string
	user           string
	nodes          []labNode
	release        func()
	caretaker      string
	pid            int // the lab daemon
}

// startLab runs `caretaker lab up` in a fresh directory on a free
// loopback subnet (lab.AllocateSubnet, shared with the lab's own tests).
func startLab(ctx context.Context, cfg *config, name string, args ...string) (*runningLab, error) {
	subnet, release, err := lab.AllocateSubnet()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.work, name)
	_ = os.RemoveAll(dir)
	l := &runningLab{dir: dir, release: release, caretaker: cfg.caretaker}
	all := append([]string{"lab", "up", "--dir", dir, "--subnet", subnet, "--timeout", "4m"}, args...)
	o, err := execTimed(ctx, 5*time.Minute, "", nil, cfg.caretaker, all...)
	if err == nil && o.code != 0 {
		err = fmt.Errorf("exit %d: %s", o.code, tailOf(o.stderr, 15))
	}
	if err != nil {
		l.stop(ctx)
		return nil, fmt.Errorf("caretaker %s: %w", strings.Join(all, " "), err)
	}
	l.inventory = strings.TrimSpace(string(o.stdout))
	if l.inventory == "" {
		l.inventory = filepath.Join(dir, "inventory.yaml")
	}
	inv, err := inventorypkg.Load(l.inventory)
	if err != nil {
		l.stop(ctx)
		return nil, err
	}
	cl, err := inv.Cluster("")
	if err != nil {
		l.stop(ctx)
		return nil, err
	}
	for _, n := range cl.Nodes {
		port := n.Port
		if port == 0 {
			port = 22
		}
		l.nodes = append(l.nodes, labNode{name: n.Name, address: n.Address, role: n.Role, port: port, root: filepath.Join(dir, n.Name)})
		if len(n.SSH.IdentityFiles) > 0 {
			l.key = n.SSH.IdentityFiles[0]
		}
		l.knownHost, l.user = n.SSH.KnownHosts, n.User
	}
	if l.user == "" {
		l.user = "root"
	}
	if _, after, ok := strings.Cut(string(o.stderr), "daemon pid "); ok {
		l.pid, _ = strconv.Atoi(strings.TrimRight(strings.Fields(after)[0], ","))
	}
	say("lab %s up: %d nodes (%s)", name, len(l.nodes), tailOf(o.stderr, 1))
	return l, nil
}

// stop runs `caretaker lab down` and frees the subnet.
func (l *runningLab) stop(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	o, err := execTimed(ctx, 2*time.Minute, "", nil, l.caretaker, "lab", "down", "--dir", l.dir)
	if err != nil || o.code != 0 {
		fmt.Fprintf(os.Stderr, "bench: lab down --dir %s: %v %s\n", l.dir, err, tailOf(o.stderr, 5))
	}
	if l.release != nil {
		l.release()
		l.release = nil
	}
}

// serverDir is K3s's server directory as seen inside an openssh-mode node.
const serverDir = inventorypkg.DefaultDataDir + "/server"

// hostPath is where a path inside an openssh-mode node lives on this
// machine.
func (n labNode) hostPath(p string) string { return filepath.Join(n.root, p) }

// expectedSums reads every node's server-ca.crt from its tree on this
// machine: the sha256 every runner must report.
func (l *runningLab) expectedSums() (map[string]string, error) {
	m := map[string]string{}
	for _, n := range l.nodes {
		b, err := os.ReadFile(n.hostPath(serverDir + "/tls/server-ca.crt"))
		if err != nil {
			return nil, fmt.Errorf("expected checksum of %s: %w", n.name, err)
		}
		s := sha256.Sum256(b)
		m[n.name] = hex.EncodeToString(s[:])
	}
	return m, nil
}

// backups counts every node's archives in server/tls-backups.
func (l *runningLab) backups() map[string]int {
	m := map[string]int{}
	for _, n := range l.nodes {
		ents, _ := os.ReadDir(n.hostPath(serverDir + "/tls-backups"))
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".tar.gz") {
				m[n.name]++
			}
		}
	}
	return m
}

// checkBackups verifies that every node got exactly one new archive,
// mode 0600, since before.
func (l *runningLab) checkBackups(before map[string]int) error {
	after := l.backups()
	var bad []string
	for _, n := range l.nodes {
		if d := after[n.name] - before[n.name]; d != 1 {
			bad = append(bad, n.name+": "+strconv.Itoa(d)+" new archives")
		}
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return fmt.Errorf("want one new backup archive per node: %s", strings.Join(bad, ", "))
	}
	// The newest archive of the first node: private.
	n := l.nodes[0]
	ents, _ := os.ReadDir(n.hostPath(serverDir + "/tls-backups"))
	if len(ents) > 0 {
		fi, err := ents[len(ents)-1].Info()
		if err == nil && fi.Mode().Perm() != 0o600 {
			return fmt.Errorf("%s: backup %s has mode %o, want 600", n.name, fi.Name(), fi.Mode().Perm())
		}
	}
	return nil
}

// verifySums compares the checksums a runner reported with the expected
// ones: one per node, each equal to the file's.
func verifySums(got, want map[string]string) error {
	var bad []string
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			bad = append(bad, name+": no checksum")
		case g != w:
			bad = append(bad, fmt.Sprintf("%s: %.12s… want %.12s…", name, g, w))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			bad = append(bad, name+": not a node of the lab")
		}
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return fmt.Errorf("got %d checksums for %d nodes: %s", len(got), len(want), strings.Join(bad, "; "))
	}
	return nil
}

// labCPU is the CPU time the lab daemons (and the children they waited
// for: shells, shims) have used so far, from /proc/PID/stat.
func labCPU(labs []*runningLab) time.Duration {
	var ticks int64
	for _, l := range labs {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(l.pid) + "/stat")
		if err != nil || l.pid == 0 {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// Fields after the command: state is f[0], utime f[11], stime
		// f[12], cutime f[13], cstime f[14].
		for _, k := range []int{11, 12, 13, 14} {
			if k < len(f) {
				v, _ := strconv.ParseInt(f[k], 10, 64)
				ticks += v
			}
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}
