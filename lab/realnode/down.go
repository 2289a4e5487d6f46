package realnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// stopWait is how long Close waits for the machines to halt cleanly.
const stopWait = 20 * time.Second

// Close tears the lab down (= `lab down`): it halts every machine cleanly
// (SIGTERM to systemd-nspawn), waits up to 20 s, kills whatever is left in
// the nodes' cgroups, unmounts the overlays, deletes the netns, veths and
// the bridge (with its address and routes), removes the cgroups and, when
// no other real-engine lab runs, restores the host sysctls and /run/netns.
// It then checks that nothing is left and says what is. Files in Dir stay
// (console logs, keys, inventory, the state file); the nodes' overlay
// layers are removed. Close is idempotent and works from another process
// (Open + Close), also after the process that started the lab died.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if st.OwnsSubnet && registeredDir(st.Bridge) != "" && registeredDir(st.Bridge) != st.Dir {
		c.logf("down: subnet %s now belongs to the lab in %s: leaving its network and cgroups alone", st.Subnet, registeredDir(st.Bridge))
		st.OwnsSubnet = false
	}
	t := time.Now()
	if forced := stopSupervisors(st, stopWait); len(forced) > 0 {
		c.logf("down: %s did not halt within %s: forced", strings.Join(forced, ", "), stopWait)
	}
	c.logf("timing: down: machines stopped in %.1fs", time.Since(t).Seconds())
	t = time.Now()
	var errs []error
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if err := unmountNodeRoot(n); err != nil {
			errs = append(errs, err)
		}
		removeEmptyDirs("/run/systemd/nspawn/propagate/"+n.Machine, "/run/systemd/nspawn/propagate", "/run/systemd/nspawn/locks", "/run/systemd/nspawn")
	}
	// The network and cgroup names derive from the subnet: only a lab
	// that holds the subnet's registration removes them (a Start refused
	// because another lab has the subnet must not touch that lab's).
	if st.OwnsSubnet {
		errs = append(errs, netDown(ctx, st)...)
		for _, r := range st.CgroupRoots {
			if err := removeCgroupTree(r, 5*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("realnode: %w", err))
			}
		}
	}
	// Keep the registration while something is left, so that a retried
	// Close still removes it.
	if st.HostAcquired && len(errs) == 0 {
		restored, err := hostRelease(ctx, st.Bridge, st.Dir)
		if err != nil {
			errs = append(errs, err)
		} else {
			st.HostAcquired = false
			if len(restored) > 0 {
				c.logf("down: last real-engine lab: restored %s", strings.Join(restored, ", "))
			}
		}
	}
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if !isMountPoint(n.Root) {
			for _, d := range []string{"root", "upper", "work"} {
				if err := os.RemoveAll(filepath.Join(n.Dir, d)); err != nil {
					errs = append(errs, fmt.Errorf("realnode: %s: remove %s: %w", n.Name, d, err))
				}
			}
		}
	}
	st.Ready = false
	left := c.Leftovers()
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("realnode: after down, still present: %s", strings.Join(left, "; ")))
	}
	if len(errs) == 0 {
		st.OwnsSubnet = false
	}
	if err := st.save(); err != nil {
		errs = append(errs, err)
	}
	c.logf("timing: down: mounts, network, cgroups removed in %.1fs", time.Since(t).Seconds())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("realnode: lab down in %s: %w", st.Dir, err)
	}
	return nil
}

// Leftovers lists what of the lab still exists on the host: processes
// (supervisors, anything in the lab's cgroups), mounts under the lab dir,
// netns, links and routes, cgroup dirs (those while the lab owns its
// subnet's names). Empty after a complete Close.
func (c *Cluster) Leftovers() []string {
	st := c.st
	var left []string
	for _, n := range st.Nodes {
		if alive(n.SupervisorPID, n.SupervisorStart) {
			left = append(left, fmt.Sprintf("process %d (supervisor of %s)", n.SupervisorPID, n.Name))
		}
	}
	if st.OwnsSubnet {
		for _, r := range st.CgroupRoots {
			if pids := cgroupProcs(r); len(pids) > 0 {
				left = append(left, fmt.Sprintf("processes %v in %s", pids, r))
			}
			if fileExists(r) {
				left = append(left, "cgroup "+r)
			}
		}
		left = append(left, netLeftovers(st)...)
	}
	for _, m := range mountPoints() {
		if m == st.Dir || strings.HasPrefix(m, st.Dir+"/") {
			left = append(left, "mount "+m)
		}
	}
	for _, n := range st.Nodes {
		if fileExists("/run/systemd/nspawn/propagate/" + n.Machine) {
			left = append(left, "dir /run/systemd/nspawn/propagate/"+n.Machine)
		}
	}
	if st.HostAcquired {
		left = append(left, "registration "+filepath.Join(runDir, "labs", st.Bridge))
	}
	return left
}

// removeEmptyDirs removes each dir in order if it is empty.
func removeEmptyDirs(dirs ...string) {
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			continue
		}
	}
}
