package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/caretaker/caretaker/lab/shim"
)

// controlServer serves the lab socket DIR/lab.sock: node commands from the
// shim and the lab commands (status, down, fault, ping).
type controlServer struct {
	l    *Lab
	ln   net.Listener
	wg   sync.WaitGroup
	ctx  context.Context
	stop context.CancelFunc

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startControl(l *Lab) (*controlServer, error) {
	path := filepath.Join(l.opts.Dir, shim.SocketName)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("lab: listen on %s: %w", path, err)
	}
	_ = os.Chmod(path, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	c := &controlServer{l: l, ln: ln, ctx: ctx, stop: cancel, conns: map[net.Conn]bool{}}
	c.wg.Add(1)
	go c.serve()
	return c, nil
}

func (c *controlServer) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[conn] = true
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.handle(conn)
			c.mu.Lock()
			delete(c.conns, conn)
			c.mu.Unlock()
		}()
	}
}

func (c *controlServer) close() {
	c.stop()
	_ = c.ln.Close()
	c.mu.Lock()
	for conn := range c.conns {
		_ = conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// connWriter serialises the frames written to one connection.
type connWriter struct {
	mu   sync.Mutex
	conn net.Conn
}

func (w *connWriter) frame(kind byte) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return shim.FrameWriter{W: w.conn, Kind: kind}.Write(p)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (c *controlServer) handle(conn net.Conn) {
	defer conn.Close()
	req, err := shim.ReadRequest(conn)
	if err != nil {
		return
	}
	w := &connWriter{conn: conn}
	stdout, stderr := w.frame(shim.FrameStdout), w.frame(shim.FrameStderr)
	stdinR, stdinW := io.Pipe()
	// The command's context ends when its client goes away (the shim was
	// killed, e.g. with its SSH session): a blocking systemctl stops
	// waiting, the job it started goes on, as with systemd.
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	go func() {
		for {
			kind, payload, err := shim.ReadFrame(conn)
			if err != nil {
				_ = stdinW.CloseWithError(io.EOF)
				cancel()
				return
			}
			switch kind {
			case shim.FrameStdin:
				if _, err := stdinW.Write(payload); err != nil {
					return
				}
			case shim.FrameStdinEOF:
				_ = stdinW.Close()
			}
		}
	}()
	defer stdinR.Close()
	code := c.dispatch(ctx, req, stdinR, stdout, stderr)
	w.mu.Lock()
	_ = shim.WriteFrame(conn, shim.FrameExit, shim.ExitPayload(code))
	w.mu.Unlock()
	if req.Op == shim.OpDown {
		go func() { _ = c.l.Close() }()
	}
}

func (c *controlServer) dispatch(ctx context.Context, req shim.Request, stdin io.Reader, stdout, stderr io.Writer) int {
	l := c.l
	switch req.Op {
	case shim.OpPing:
		fmt.Fprintln(stdout, "pong")
		return 0
	case shim.OpStatus:
		st := l.Status()
		if req.Output == "json" {
			b, _ := json.MarshalIndent(st, "", "  ")
			fmt.Fprintln(stdout, string(b))
			return 0
		}
		writeStatusText(stdout, st)
		return 0
	case shim.OpDown:
		fmt.Fprintf(stdout, "lab in %s stopping\n", l.opts.Dir)
		return 0
	case shim.OpFault:
		if err := l.SetFault(req.Node, req.Fault); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	case shim.OpExec:
		n, ok := l.byName[req.Node]
		if !ok {
			fmt.Fprintf(stderr, "lab: no node %q\n", req.Node)
			return 1
		}
		if len(req.Argv) == 0 {
			fmt.Fprintln(stderr, "lab: empty command")
			return 2
		}
		inv := &invocation{n: n, ctx: ctx, args: req.Argv[1:], cwd: req.Cwd, env: req.Env, stdin: stdin, stdout: stdout, stderr: stderr}
		switch req.Argv[0] {
		case "k3s":
			return inv.k3s()
		case "systemctl":
			return inv.systemctl()
		case "journalctl":
			return inv.journalctl()
		}
		fmt.Fprintf(stderr, "lab: %s is not a node command\n", req.Argv[0])
		return 127
	}
	fmt.Fprintf(stderr, "lab: unknown request %q\n", req.Op)
	return 2
}

// Status describes a running lab (`caretaker lab status`).
type Status struct {
	Name      string       `json:"name"`
	Dir       string       `json:"dir"`
	PID       int          `json:"pid"`
	SSH       string       `json:"ssh_mode"`
	Inventory string       `json:"inventory"`
	Nodes     []NodeStatus `json:"nodes"`
	Etcd      EtcdStatus   `json:"etcd"`
	// TokenFile is server-1's server/token (host path).
	TokenFile string `json:"token_file"`
	// UpSeconds is how long starting the lab took.
	UpSeconds float64 `json:"up_seconds"`
	// Ready is true once every service is up and the inventory written.
	Ready bool `json:"ready"`
}

// NodeStatus is one node of a Status.
type NodeStatus struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Version string `json:"version"`
	Address string `json:"address"`
	SSHPort int    `json:"ssh_port"`
	Service string `json:"service"`
	State   string `json:"state"`
	// SubState is systemd's sub-state (running, start, auto-restart, dead).
	SubState string `json:"sub_state"`
	Fault    string `json:"fault,omitempty"`
	// Root is DIR/<node>, the node's root file system (its / on the host).
	Root string `json:"root"`
}

// EtcdStatus says how to reach the lab's etcd.
type EtcdStatus struct {
	// Endpoint is server-1's client endpoint "<ip>:2379"; Endpoints lists
	// every server's (one etcd member per server).
	Endpoint  string   `json:"endpoint"`
	Endpoints []string `json:"endpoints"`
	// CACert, Cert and Key are copies of the etcd CA bundle, client
	// certificate and key of the server that started last (refreshed at
	// every server start, so that they match the members' current CAs).
	CACert string `json:"cacert"`
	Cert   string `json:"cert"`
	Key    string `json:"key"`
}

// Status reports the lab's nodes, etcd and token file.
func (l *Lab) Status() Status {
	st := Status{
		Name: l.opts.Name, Dir: l.opts.Dir, PID: os.Getpid(), SSH: l.opts.SSH, Inventory: l.InventoryPath(),
		UpSeconds: l.UpDuration().Seconds(), Ready: l.UpDuration() > 0,
	}
	if eps := l.etcdEndpoints(); len(eps) > 0 {
		d := filepath.Join(l.opts.Dir, "etcd-client")
		st.Etcd = EtcdStatus{Endpoint: eps[0], Endpoints: eps, CACert: filepath.Join(d, "ca.crt"), Cert: filepath.Join(d, "client.crt"), Key: filepath.Join(d, "client.key")}
	}
	for _, n := range l.nodes {
		n.mu.Lock()
		ns := NodeStatus{Name: n.name, Role: n.role, Version: n.version.String(), Address: n.ip, SSHPort: n.sshPort,
			Service: n.service, State: n.u.active, SubState: n.u.sub, Fault: n.fault, Root: n.root}
		n.mu.Unlock()
		st.Nodes = append(st.Nodes, ns)
		if st.TokenFile == "" && n.isServer() {
			st.TokenFile = n.host(filepath.Join(n.dataDir, "server", "token"))
		}
	}
	return st
}

func writeStatusText(w io.Writer, st Status) {
	fmt.Fprintf(w, "lab %q in %s (pid %d, ssh %s, up in %.1fs)\n", st.Name, st.Dir, st.PID, st.SSH, st.UpSeconds)
	fmt.Fprintf(w, "inventory: %s\n\n", st.Inventory)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tVERSION\tADDRESS\tSSH PORT\tSERVICE\tSTATE")
	for _, n := range st.Nodes {
		state := n.State
		if n.State == stateActivating && n.SubState != "" {
			state += " (" + n.SubState + ")"
		}
		if n.Fault != "" {
			state += " (fault " + n.Fault + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, n.Role, n.Version, n.Address, n.SSHPort, n.Service, state)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\netcd: %s\n  --cacert %s --cert %s --key %s\n", strings.Join(st.Etcd.Endpoints, ","), st.Etcd.CACert, st.Etcd.Cert, st.Etcd.Key)
	fmt.Fprintf(w, "server token file: %s\n", st.TokenFile)
}
