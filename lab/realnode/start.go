package realnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EnvKeepOnFailure is the environment variable that, set to 1, makes a failed Start leave the lab running
// for inspection (tear it down with Open + Close, `lab down`).
const EnvKeepOnFailure = "CARETAKER_REALNODE_KEEP_ON_FAILURE"

// Start brings a lab up: prerequisites and host settings, the cached root
// filesystem and K3s binary, the network, one systemd-nspawn machine per
// server booted to multi-user with sshd, then K3s started server by
// server until every /readyz answers ok, and finally Dir/inventory.yaml.
// On failure it tears down what it made (unless $CARETAKER_REALNODE_KEEP_ON_FAILURE=1).
func Start(ctx context.Context, o Options) (*Cluster, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	if err := available(ctx, o.K3sBinary); err != nil {
		return nil, err
	}
	c := &Cluster{logf: o.Logf}
	if err := c.prepare(ctx, o); err != nil {
		return nil, c.failed(err)
	}
	t := time.Now()
	if err := c.boot(ctx); err != nil {
		return nil, c.failed(err)
	}
	o.Logf("timing: %d machines booted (systemd running, sshd answering) in %.1fs", len(c.st.Nodes), time.Since(t).Seconds())
	t = time.Now()
	if err := c.startK3s(ctx, o); err != nil {
		return nil, c.failed(err)
	}
	o.Logf("timing: K3s on %d servers ready in %.1fs", len(c.st.Nodes), time.Since(t).Seconds())
	if err := c.writeInventory(o); err != nil {
		return nil, c.failed(err)
	}
	c.st.Ready = true
	if err := c.st.save(); err != nil {
		return nil, c.failed(err)
	}
	o.Logf("timing: lab up in %.1fs total; inventory %s", time.Since(began).Seconds(), c.InventoryPath())
	return c, nil
}

// failed tears down a lab whose Start failed and returns err with what
// the teardown said.
func (c *Cluster) failed(err error) error {
	if c.st == nil {
		return err
	}
	if os.Getenv(EnvKeepOnFailure) == "1" {
		return fmt.Errorf("%w (lab kept for inspection in %s: $%s=1)", err, c.st.Dir, EnvKeepOnFailure)
	}
	if cerr := c.Close(); cerr != nil {
		return errors.Join(err, fmt.Errorf("and tearing the lab down: %w", cerr))
	}
	return err
}

// prepare makes everything up to the booted machines: state, host
// settings, caches, network, node root filesystems and identities, and
// the K3s config of the first phase.
func (c *Cluster) prepare(ctx context.Context, o Options) error {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("realnode: create the lab directory: %w", err)
	}
	if old, err := loadState(o.Dir); err == nil {
		if anySupervisorAlive(old) {
			return fmt.Errorf("realnode: a lab is already running in %s: `caretaker lab down --dir %s` first", o.Dir, o.Dir)
		}
		o.Logf("removing the remains of an earlier lab in %s", o.Dir)
		if err := (&Cluster{st: old, logf: o.Logf}).Close(); err != nil {
			return fmt.Errorf("realnode: tear down the earlier lab in %s: %w", o.Dir, err)
		}
	}
	x, y, _ := subnetOctets(o.Subnet)
	nm := names{x, y}
	hier, err := detectCgroups()
	if err != nil {
		return err
	}
	st := &state{Version: 1, Dir: o.Dir, Name: o.Name, Subnet: o.Subnet, Bridge: nm.bridge(),
		Scenario: o.Scenario, SecureToken: o.SecureToken, BootstrapBug: o.BootstrapBug}
	for _, h := range hier {
		st.CgroupRoots = append(st.CgroupRoots, filepath.Join(h, nm.cgroup()))
	}
	for i := 1; i <= o.Servers; i++ {
		name := fmt.Sprintf("server-%d", i)
		n := nodeState{Name: name, Index: i, Address: fmt.Sprintf("%s.%d", o.Subnet, i), Machine: nm.machine(name),
			Netns: nm.netns(i), Veth: nm.veth(i), Dir: filepath.Join(o.Dir, "nodes", name), Source: o.ServerSource[name]}
		if n.Source == "" {
			n.Source = SourceConfig
		}
		n.Root = filepath.Join(n.Dir, "root")
		for _, r := range st.CgroupRoots {
			n.Cgroups = append(n.Cgroups, filepath.Join(r, name))
		}
		st.Nodes = append(st.Nodes, n)
	}
	c.st = st
	if err := st.save(); err != nil {
		return err
	}
	// Register first (exclusive per subnet under the host lock), then
	// check: two Starts on one subnet cannot both pass.
	if err := hostAcquire(ctx, st.Bridge, st.Dir); err != nil {
		return err
	}
	st.HostAcquired, st.OwnsSubnet = true, true
	if err := st.save(); err != nil {
		return err
	}
	if err := checkSubnetFree(ctx, o.Subnet, nm, o.Servers); err != nil {
		return err
	}
	if err := c.caches(ctx, o); err != nil {
		return err
	}
	t := time.Now()
	if err := bridgeUp(ctx, st.Subnet, st.Bridge); err != nil {
		return err
	}
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if err := nodeNetUp(ctx, st.Subnet, st.Bridge, n.Netns, n.Veth, n.Index); err != nil {
			return err
		}
	}
	o.Logf("timing: network (bridge %s, %d netns) in %.2fs", st.Bridge, len(st.Nodes), time.Since(t).Seconds())
	t = time.Now()
	if err := c.nodeFiles(ctx, o); err != nil {
		return err
	}
	o.Logf("timing: root filesystems, keys and K3s config in %.2fs", time.Since(t).Seconds())
	return nil
}

// caches makes sure the base rootfs and the K3s layer are in the cache
// (concurrently: a base build takes ~30-60 s, a decompression ~3 s).
func (c *Cluster) caches(ctx context.Context, o Options) error {
	t := time.Now()
	var wg sync.WaitGroup
	var baseErr, k3sErr error
	wg.Add(2)
	go func() { defer wg.Done(); c.st.Base, baseErr = ensureBase(ctx, o.CacheDir, o.Logf) }()
	go func() { defer wg.Done(); c.st.K3sLayer, k3sErr = ensureK3s(ctx, o.CacheDir, o.K3sBinary, o.Logf) }()
	wg.Wait()
	if err := errors.Join(baseErr, k3sErr); err != nil {
		return err
	}
	o.Logf("timing: cached rootfs %s and K3s layer ready in %.2fs", c.st.Base, time.Since(t).Seconds())
	return c.st.save()
}

// nodeFiles mounts every node's root, gives it its identity, writes
// known_hosts, ssh_config and the first-phase K3s config.
func (c *Cluster) nodeFiles(ctx context.Context, o Options) error {
	st := c.st
	_, authorized, err := clientKey(st.Dir)
	if err != nil {
		return err
	}
	var kh strings.Builder
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return fmt.Errorf("realnode: %w", err)
		}
		if err := mountNodeRoot(st, n); err != nil {
			return err
		}
		if err := st.save(); err != nil {
			return err
		}
		pub, err := nodeIdentity(st, n, authorized)
		if err != nil {
			return err
		}
		kh.WriteString(knownHostsLine(n.Address, pub) + "\n")
		if _, err := writeServerFiles(n.Root, renderServer(n.Name, c.phaseConf(o, n, o.Token, false))); err != nil {
			return fmt.Errorf("realnode: %s: %w", n.Name, err)
		}
	}
	if err := writeFileAtomic(filepath.Join(st.Dir, "known_hosts"), []byte(kh.String()), 0o644); err != nil {
		return fmt.Errorf("realnode: write known_hosts: %w", err)
	}
	return writeFileAtomic(filepath.Join(st.Dir, "ssh_config"), []byte("# empty on purpose: the lab's nodes need no ssh_config\n"), 0o644)
}

// boot starts every node's supervisor and waits until each machine's
// systemd has finished booting and sshd answers with the pinned host key.
func (c *Cluster) boot(ctx context.Context) error {
	for i := range c.st.Nodes {
		if err := startSupervisor(&c.st.Nodes[i]); err != nil {
			return err
		}
		if err := c.st.save(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	errs := make([]error, len(c.st.Nodes))
	var wg sync.WaitGroup
	for i := range c.st.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.waitBooted(ctx, &c.st.Nodes[i]) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitBooted polls `systemctl is-system-running --wait` over SSH until it
// answers running or degraded.
func (c *Cluster) waitBooted(ctx context.Context, n *nodeState) error {
	t := time.Now()
	var last string
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		if !alive(n.SupervisorPID, n.SupervisorStart) {
			b, _ := os.ReadFile(filepath.Join(n.Dir, "console.log"))
			return false, fmt.Errorf("realnode: %s: systemd-nspawn exited while booting; %s:\n%s", n.Name, filepath.Join(n.Dir, "console.log"), tailLines(string(b), 15))
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, _, _, err := sshRun(cctx, c.st.Dir, n.Address, "root", "systemctl is-system-running --wait")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = strings.TrimSpace(out)
		return last == "running" || last == "degraded", nil
	})
	if err != nil {
		return fmt.Errorf("realnode: %s did not finish booting (last: %s): %w", n.Name, last, err)
	}
	if last == "degraded" {
		failed, _, _, _ := c.Exec(ctx, n.Name, "systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\\n' ' '")
		c.logf("%s: booted degraded (failed units: %s)", n.Name, strings.TrimSpace(failed))
	}
	c.logf("%s: booted (%s) in %.1fs", n.Name, last, time.Since(t).Seconds())
	return nil
}
