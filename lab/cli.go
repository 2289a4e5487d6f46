package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/lab/shim"
)

// RunShim must be the first thing main does: when the binary was started
// as a lab node's k3s, systemctl or journalctl (its basename is one of
// them, or args[1] is "lab-shim"), or as an openssh-mode node init
// (args[1] == "lab-nsinit"), it does that job and returns handled=true with
// the exit code; otherwise it returns handled=false at once.
//
//	func main() {
//		if code, ok := lab.RunShim(os.Args); ok {
//			os.Exit(code)
//		}
//		...
//	}
func RunShim(args []string) (exitCode int, handled bool) { return shim.Run(args) }

// DefaultDir is where `caretaker lab` keeps its lab unless --dir says
// otherwise.
func DefaultDir() string { return filepath.Join(os.TempDir(), "caretaker-lab") }

// upFlags are the flags of `lab up` (and of the hidden `lab daemon`).
type upFlags struct {
	dir, name, version, scenario, ssh, subnet string
	engine, k3sBinary                         string
	servers, agents                           int
	nodeVersions, serverSources               []string
	secureToken, bootstrapBug                 bool
	timeout, startDelay                       time.Duration
}

func (f *upFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", DefaultDir(), "lab directory (node trees, etcd, inventory, keys, socket)")
	fl.StringVar(&f.name, "name", "lab", "cluster name in the inventory")
	fl.IntVar(&f.servers, "servers", 3, "number of K3s servers")
	fl.IntVar(&f.agents, "agents", 2, "number of K3s agents")
	fl.StringVar(&f.version, "version", DefaultVersion, "K3s version of every node")
	fl.StringArrayVar(&f.nodeVersions, "node-version", nil, "NODE=VERSION: a node's own K3s version (repeatable; a mixed cluster)")
	fl.StringVar(&f.scenario, "scenario", ScenarioInitReplaced, "init-replaced (every server has server: pointing at a peer) or cluster-init (server-1 has cluster-init: true)")
	fl.StringArrayVar(&f.serverSources, "server-source", nil, "NODE=config|dropin|unit|env: where that server's `server` is set (repeatable; default config)")
	fl.BoolVar(&f.secureToken, "secure-token", false, "configure nodes with the full K10<ca-hash>::server:<password> token")
	fl.StringVar(&f.ssh, "ssh", SSHInProcess, "inprocess (SSH servers in the lab process) or openssh (one sshd per node in its own mount namespace; needs root)")
	fl.StringVar(&f.subnet, "subnet", DefaultSubnet, "first three octets of the node addresses (node N is SUBNET.N)")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long lab up waits for the lab to come up")
	fl.DurationVar(&f.startDelay, "start-delay", 0, "how long each service start takes once the lab is up (real K3s servers: 10-15s); 0 for fast tests")
	fl.StringVar(&f.engine, "engine", EngineSim, "sim (simulated K3s nodes: fast, agents, any --version) or real (a real K3s binary in systemd-nspawn machines with systemd and sshd; servers only; needs root)")
	fl.StringVar(&f.k3sBinary, "k3s-binary", "", "real engine: the K3s binary (or .xz) to run, e.g. your production release's k3s from its GitHub release page; default $CARETAKER_K3S_BINARY, else ../shared/k3s/k3s.xz")
	fl.BoolVar(&f.bootstrapBug, "bootstrap-bug", false, "servers answer /v1-k3s/server-bootstrap from their disk, as releases with bug k3s-io/k3s#11233 do, whatever their version says (real engine: K3S_SERVE_BOOTSTRAP_FROM_DISK=true); the inventory says k3s: {bootstrap_bug: true}")
}

func (f *upFlags) options() (Options, error) {
	o := Options{Dir: f.dir, Name: f.name, Servers: f.servers, Agents: f.agents, Version: f.version,
		Scenario: f.scenario, SecureToken: f.secureToken, SSH: f.ssh, Subnet: f.subnet, StartDelay: f.startDelay,
		Engine: f.engine, K3sBinary: f.k3sBinary, BootstrapBug: f.bootstrapBug}
	kv := func(list []string, flag string) (map[string]string, error) {
		m := map[string]string{}
		for _, s := range list {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" || v == "" {
				return nil, fmt.Errorf("--%s %q: want NODE=VALUE", flag, s)
			}
			m[k] = v
		}
		return m, nil
	}
	var err error
	if o.NodeVersions, err = kv(f.nodeVersions, "node-version"); err != nil {
		return o, err
	}
	if o.ServerSource, err = kv(f.serverSources, "server-source"); err != nil {
		return o, err
	}
	return o, nil
}

// args renders the flags for the daemon's command line.
func (f *upFlags) args() []string {
	a := []string{"--dir", f.dir, "--name", f.name, "--servers", strconv.Itoa(f.servers), "--agents", strconv.Itoa(f.agents),
		"--version", f.version, "--scenario", f.scenario, "--ssh", f.ssh, "--subnet", f.subnet}
	for _, v := range f.nodeVersions {
		a = append(a, "--node-version", v)
	}
	for _, v := range f.serverSources {
		a = append(a, "--server-source", v)
	}
	if f.secureToken {
		a = append(a, "--secure-token")
	}
	if f.bootstrapBug {
		a = append(a, "--bootstrap-bug")
	}
	if f.startDelay > 0 {
		a = append(a, "--start-delay", f.startDelay.String())
	}
	return a
}

// NewCommand returns the `lab` command tree: up, status, down, fault and
// the hidden daemon that up starts.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "lab",
		Short: "K3s for rehearsals and tests: simulated nodes (--engine sim) or real K3s on real systemd machines (--engine real)",
		Long: `The lab starts K3s nodes on this machine, each on its own loopback address
with its own SSH server and file tree. caretaker runs against it through
DIR/inventory.yaml.

  --engine sim   simulated K3s nodes (any --version, agents, faults), one
                 embedded etcd member per server; starts in about a second
  --engine real  a real K3s binary (--k3s-binary: e.g. the k3s of your
                 production release) as the installer's k3s.service in
                 systemd-nspawn machines with real systemd, sshd and sudo;
                 servers only; needs root; about a minute for 3 servers`,
		SilenceUsage: true,
	}
	root.AddCommand(newUpCommand(), newDaemonCommand(), newStatusCommand(), newDownCommand(), newFaultCommand())
	return root
}

func newUpCommand() *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "start a lab in the background and print its inventory path",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := f.options(); err != nil {
				return err
			}
			dir, err := filepath.Abs(f.dir)
			if err != nil {
				return err
			}
			f.dir = dir
			switch f.engine {
			case EngineReal:
				return upReal(cmd, f)
			case EngineSim:
				return up(cmd.Context(), cmd, f)
			}
			return fmt.Errorf("lab up: --engine %q: want %s or %s", f.engine, EngineSim, EngineReal)
		},
	}
	f.register(cmd)
	return cmd
}

// daemonArgs is the command line that reaches `lab daemon` in this binary:
// the names of the commands between the root and `lab`.
func daemonArgs(cmd *cobra.Command) []string {
	var chain []string
	for c := cmd.Parent(); c != nil && c.HasParent(); c = c.Parent() {
		chain = append([]string{c.Name()}, chain...)
	}
	return append(chain, "daemon")
}

func up(ctx context.Context, cmd *cobra.Command, f *upFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	began := time.Now()
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return fmt.Errorf("lab up: create %s: %w", f.dir, err)
	}
	sock := filepath.Join(f.dir, shim.SocketName)
	if code, _ := callLab(sock, shim.Request{Op: shim.OpPing}, io.Discard); code == 0 {
		return fmt.Errorf("lab up: a lab is already running in %s (caretaker lab status --dir %s)", f.dir, f.dir)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("lab up: find this executable: %w", err)
	}
	logPath := filepath.Join(f.dir, "lab.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	defer logf.Close()
	d := exec.Command(exe, append(daemonArgs(cmd), f.args()...)...)
	d.Stdout, d.Stderr = logf, logf
	d.Dir = "/"
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.Start(); err != nil {
		return fmt.Errorf("lab up: start the lab daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	deadline := time.NewTimer(f.timeout)
	defer deadline.Stop()
	for {
		var out strings.Builder
		if code, err := callLab(sock, shim.Request{Op: shim.OpStatus, Output: "json"}, &out); err == nil && code == 0 {
			var st Status
			if json.Unmarshal([]byte(out.String()), &st) == nil && st.Ready {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", st.Inventory)
				fmt.Fprintf(cmd.ErrOrStderr(), "lab up: %d servers, %d agents (ssh %s) in %.2fs; daemon pid %d, log %s\n",
					f.servers, f.agents, f.ssh, time.Since(began).Seconds(), st.PID, logPath)
				return nil
			}
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("lab up: the lab daemon exited (%v):\n%s", err, tail(string(log), 30))
		case <-deadline.C:
			_ = d.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("lab up: the lab did not come up within %s; see %s", f.timeout, logPath)
		case <-ctx.Done():
			_ = d.Process.Signal(syscall.SIGTERM)
			return ctx.Err()
		case <-time.After(40 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// callLab sends one request to a lab daemon.
func callLab(sock string, req shim.Request, out io.Writer) (int, error) {
	var errb strings.Builder
	code, err := shim.Call(sock, req, nil, out, &errb)
	if err != nil {
		return code, err
	}
	if code != 0 && errb.Len() > 0 {
		return code, errors.New(strings.TrimSpace(errb.String()))
	}
	return code, nil
}

func newDaemonCommand() *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:    "daemon",
		Short:  "run a lab in the foreground (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options()
			if err != nil {
				return err
			}
			o.Logf = func(format string, a ...any) {
				fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, a...))
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			defer stop()
			l, err := Start(ctx, o)
			if err != nil {
				return err
			}
			select {
			case <-l.Done():
			case <-ctx.Done():
			}
			err = l.Close()
			o.Logf("lab stopped")
			return err
		},
	}
	f.register(cmd)
	return cmd
}

func newStatusCommand() *cobra.Command {
	var dir, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the lab's nodes, service states, etcd endpoint and token file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("lab status: --output %q: want text or json", output)
			}
			if IsRealLab(dir) {
				return statusReal(cmd, dir, output)
			}
			sock := filepath.Join(dir, shim.SocketName)
			code, err := callLab(sock, shim.Request{Op: shim.OpStatus, Output: output}, cmd.OutOrStdout())
			if err != nil {
				return noLabError(dir, sock, err)
			}
			if code != 0 {
				return fmt.Errorf("lab status: exit %d", code)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", DefaultDir(), "lab directory")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// noLabError says that no lab answers in dir and how to start one (the
// shim's own hint points back at lab status).
func noLabError(dir, sock string, err error) error {
	flag := ""
	if dir != DefaultDir() {
		flag = " --dir " + dir
	}
	if _, statErr := os.Stat(sock); statErr != nil {
		return fmt.Errorf("lab status: no lab in %s: start one with `caretaker lab up%s`", dir, flag)
	}
	if cause := errors.Unwrap(err); cause != nil {
		err = cause
	}
	return fmt.Errorf("lab status: the lab in %s does not answer (%w): `caretaker lab down%s` cleans up after it, then `caretaker lab up%s` starts a new one", dir, err, flag, flag)
}

func newDownCommand() *cobra.Command {
	var dir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "down",
		Short: "stop the lab: every process, listener and mount; files in DIR stay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if IsRealLab(dir) {
				return downReal(cmd, dir)
			}
			sock := filepath.Join(dir, shim.SocketName)
			var out strings.Builder
			if _, err := callLab(sock, shim.Request{Op: shim.OpStatus, Output: "json"}, &out); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "lab down: no lab running in %s\n", dir)
				return nil
			}
			var st Status
			_ = json.Unmarshal([]byte(out.String()), &st)
			if _, err := callLab(sock, shim.Request{Op: shim.OpDown}, io.Discard); err != nil {
				return fmt.Errorf("lab down: %w", err)
			}
			deadline := time.Now().Add(timeout)
			for processAlive(st.PID) {
				if time.Now().After(deadline) {
					return fmt.Errorf("lab down: the lab daemon (pid %d) is still running after %s; see %s", st.PID, timeout, filepath.Join(dir, "lab.log"))
				}
				time.Sleep(20 * time.Millisecond)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "lab down: stopped the lab in %s\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", DefaultDir(), "lab directory")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the daemon to exit")
	return cmd
}

// processAlive reports whether pid runs (zombies count as gone).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func newFaultCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "fault NODE fail-start|hang-start|clear",
		Short: "inject a fault: fail-start makes every start of the node's service fail (Restart=always retries), hang-start makes it hang before ready, until clear",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if IsRealLab(dir) {
				return faultReal(cmd, dir, args[0], args[1])
			}
			sock := filepath.Join(dir, shim.SocketName)
			if _, err := callLab(sock, shim.Request{Op: shim.OpFault, Node: args[0], Fault: args[1]}, cmd.OutOrStdout()); err != nil {
				return fmt.Errorf("lab fault: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", DefaultDir(), "lab directory")
	return cmd
}
