package realnode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// supervisorScript is the node supervisor, run as `sh -c` in its own
// session (setsid) so that it outlives the process that started the lab:
// it moves itself into the node's cgroups (one per hierarchy; without
// this, --keep-unit nodes collide at the root of the hierarchy), then runs
// systemd-nspawn and starts it again when it exits 133 (`systemctl
// reboot` inside the node) unless the node dir holds a "stopping" file.
//
//	sh -c SCRIPT realnode-supervisor NODEDIR NCG CG... NSPAWN-ARGS...
const supervisorScript = `d=$1; n=$2; shift 2
while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 97; shift; n=$((n-1)); done
while :; do
  systemd-nspawn "$@"; rc=$?
  echo "[realnode supervisor] systemd-nspawn exited $rc" >&2
  if [ "$rc" = 133 ] && [ ! -e "$d/stopping" ]; then continue; fi
  exit "$rc"
done`

// nspawnArgs are systemd-nspawn's arguments for a node: a booted systemd
// without registering with a host systemd (PID 1 here is not systemd), in
// the node's netns, console on the supervisor's stdout.
func nspawnArgs(n *nodeState) []string {
	return []string{
		"--boot", "--register=no", "--keep-unit",
		"--directory=" + n.Root,
		"--machine=" + n.Machine,
		"--network-namespace-path=/run/netns/" + n.Netns,
		"--console=pipe", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
		"--capability=CAP_NET_ADMIN,CAP_SYS_RESOURCE,CAP_IPC_LOCK,CAP_SYSLOG",
	}
}

// startSupervisor creates the node's cgroups and starts its supervisor,
// recording its PID and start time in n.
func startSupervisor(n *nodeState) error {
	for _, cg := range n.Cgroups {
		if err := os.MkdirAll(cg, 0o755); err != nil {
			return fmt.Errorf("realnode: %s: create cgroup %s: %w", n.Name, cg, err)
		}
	}
	os.Remove(filepath.Join(n.Dir, "stopping"))
	logf, err := os.OpenFile(filepath.Join(n.Dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("realnode: %s: console log: %w", n.Name, err)
	}
	defer logf.Close()
	args := []string{"-c", supervisorScript, "realnode-supervisor", n.Dir, strconv.Itoa(len(n.Cgroups))}
	args = append(args, n.Cgroups...)
	args = append(args, nspawnArgs(n)...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = hostEnv
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("realnode: %s: start the supervisor: %w", n.Name, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it ends while this process lives; otherwise init does.
	go func() { _ = cmd.Wait() }()
	st, err := readProcStat(pid)
	if err != nil {
		return fmt.Errorf("realnode: %s: the supervisor exited at once; see %s", n.Name, filepath.Join(n.Dir, "console.log"))
	}
	n.SupervisorPID, n.SupervisorStart = pid, st.startTime
	return nil
}

// nspawnPID is the node's systemd-nspawn (child of the supervisor), 0 if
// none.
func nspawnPID(n *nodeState) int {
	if !alive(n.SupervisorPID, n.SupervisorStart) {
		return 0
	}
	if c := children(n.SupervisorPID, "systemd-nspawn"); len(c) > 0 {
		return c[0]
	}
	return 0
}

// leaderPID is the node's PID 1 as the host sees it: the child of
// systemd-nspawn that runs systemd.
func leaderPID(n *nodeState) (int, error) {
	ns := nspawnPID(n)
	if ns == 0 {
		return 0, fmt.Errorf("realnode: %s is not running (no systemd-nspawn under supervisor %d); see %s", n.Name, n.SupervisorPID, filepath.Join(n.Dir, "console.log"))
	}
	for _, c := range children(ns, "") {
		if st, err := readProcStat(c); err == nil && st.comm == "systemd" {
			return c, nil
		}
	}
	return 0, fmt.Errorf("realnode: %s: systemd-nspawn %d has no systemd child yet", n.Name, ns)
}

// stopSupervisors halts the nodes cleanly (SIGTERM to systemd-nspawn makes
// the container's systemd power off), waits up to wait, then a second
// SIGTERM (immediate) and finally SIGKILL of everything in the nodes'
// cgroups (when the lab owns its subnet's names). It returns the supervisors that had to be forced.
func stopSupervisors(st *state, wait time.Duration) []string {
	for i := range st.Nodes {
		n := &st.Nodes[i]
		_ = os.WriteFile(filepath.Join(n.Dir, "stopping"), nil, 0o644)
		if p := nspawnPID(n); p != 0 {
			_ = signal(p, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && anySupervisorAlive(st) {
		time.Sleep(100 * time.Millisecond)
	}
	var forced []string
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if !alive(n.SupervisorPID, n.SupervisorStart) {
			continue
		}
		forced = append(forced, n.Name)
		if p := nspawnPID(n); p != 0 {
			_ = signal(p, syscall.SIGTERM)
		}
	}
	if len(forced) > 0 {
		time.Sleep(time.Second)
	}
	if st.OwnsSubnet {
		for _, root := range st.CgroupRoots {
			killCgroup(root, 5*time.Second)
		}
	}
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if alive(n.SupervisorPID, n.SupervisorStart) {
			_ = signal(n.SupervisorPID, syscall.SIGKILL)
		}
	}
	return forced
}

func anySupervisorAlive(st *state) bool {
	for _, n := range st.Nodes {
		if alive(n.SupervisorPID, n.SupervisorStart) {
			return true
		}
	}
	return false
}
