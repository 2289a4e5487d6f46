// Package sshserver is a small in-process SSH server built on
// golang.org/x/crypto/ssh. It runs exec requests through a shell, forwards
// direct-tcpip channels and accepts public-key authentication only. Tests of
// the SSH executor use it on 127.0.0.1:0, and the lab runs one per simulated
// node.
//
// Semantics follow OpenSSH where it matters to callers: a command runs as
// `Shell -c line` with stdin, stdout and stderr wired to the channel; the
// exit status is sent as "exit-status"; env requests are accepted; a
// "signal" request or a closed channel kills the command's whole process
// group, so a cancelled command does not linger. Unlike OpenSSH, no pty,
// shell or subsystem requests are served.
//
// By default any user name is accepted and commands run as the server's
// own user. With Config.Users the server checks user names as sshd does
// (an unknown user, or a key not in that user's authorized keys, fails
// authentication) and runs each command as that user, with the user's
// shell, home and PATH; with Config.Chroot every command runs with that
// directory as its root. Both need the server to run as root.
package sshserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Config configures a Server.
type Config struct {
	// Addr is the address to listen on, e.g. "127.0.0.1:0" or "127.0.1.3:0".
	Addr string
	// HostKey is the server's host key; see GenerateHostKey.
	HostKey ssh.Signer
	// AuthorizedKeys are the client keys allowed to log in (public-key
	// authentication is the only method offered) when Users is nil: then
	// any user name is accepted and commands run as the server's own user.
	AuthorizedKeys []ssh.PublicKey
	// Users, when set, looks up the user a client logs in as; a nil user
	// or an error refuses the login, and so does a key that is not in the
	// user's AuthorizedKeys. Commands then run as that user (Shell is
	// replaced by the user's shell, Dir by the user's home).
	Users func(name string) (*User, error)
	// Chroot, when set, is the root directory of every command (the
	// server must run as root). Dir and the user's home are inside it.
	Chroot string
	// Command, when set, builds the process for a command line run as user
	// u (nil without Users), e.g. to start it in another mount namespace
	// through nsenter; it replaces Shell, Dir, Chroot and the credentials.
	// The server still sets the environment, the standard streams and the
	// process group.
	Command func(u *User, line string) (*exec.Cmd, error)
	// Shell runs each command as `Shell -c line`; default /bin/sh.
	Shell string
	// Env is added to the environment of commands, after a minimal base
	// (PATH, HOME, USER, LOGNAME, SHELL); later entries win. Variables sent
	// by the client with env requests come last.
	Env []string
	// Dir is the working directory of commands; default the server's own.
	Dir string
	// AllowTCPForwarding allows direct-tcpip channels (Executor.Dial).
	AllowTCPForwarding bool
	// OutputWaitDelay bounds how long, after a command exited, the server
	// waits for processes it left in the background to close stdout and
	// stderr. Zero waits as long as they keep them open, like OpenSSH.
	OutputWaitDelay time.Duration
	// Logf, when set, receives one line per notable event (connection
	// errors, refused channels).
	Logf func(format string, args ...any)
}

// User is an account commands can run as (Config.Users).
type User struct {
	Name     string
	UID, GID uint32
	Groups   []uint32 // supplementary groups
	Home     string   // working directory and HOME, inside Config.Chroot
	Shell    string   // commands run as `Shell -c line`
	// AuthorizedKeys are the keys this user may log in with.
	AuthorizedKeys []ssh.PublicKey
}

// userPath is OpenSSH's compiled-in default PATH for a user.
func (u *User) userPath() string {
	if u.UID == 0 {
		return defaultPath
	}
	return "/usr/local/bin:/usr/bin:/bin:/usr/games"
}

// Server is a running SSH server. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	sshCfg   *ssh.ServerConfig
	ln       net.Listener
	baseEnv  []string
	keys     map[string]bool
	conns    atomic.Int64
	sessions atomic.Int64

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// defaultPath is the PATH of commands unless Config.Env sets one; it is
// OpenSSH's compiled-in default for root.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// handshakeTimeout bounds a client's SSH handshake, so that a client that
// connects and says nothing does not hold a goroutine forever.
const handshakeTimeout = 30 * time.Second

// Start listens on cfg.Addr and serves connections until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.HostKey == nil {
		return nil, errors.New("sshserver: Config.HostKey is required (see GenerateHostKey)")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Shell == "" {
		cfg.Shell = "/bin/sh"
	}
	s := &Server{
		cfg:  cfg,
		keys: make(map[string]bool, len(cfg.AuthorizedKeys)),
		open: make(map[net.Conn]struct{}),
	}
	for _, k := range cfg.AuthorizedKeys {
		s.keys[string(k.Marshal())] = true
	}
	s.sshCfg = &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if s.cfg.Users != nil {
				return s.userKey(meta.User(), key)
			}
			if s.keys[string(key.Marshal())] {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("public key not authorized")
		},
		ServerVersion: "SSH-2.0-caretaker-sshserver",
	}
	s.sshCfg.AddHostKey(cfg.HostKey)
	s.baseEnv = baseEnv(cfg.Shell)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sshserver: listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// userKey authenticates key for user name as sshd does: the user must
// exist and the key must be one of the user's authorized keys.
func (s *Server) userKey(name string, key ssh.PublicKey) (*ssh.Permissions, error) {
	u, err := s.cfg.Users(name)
	if err != nil || u == nil {
		return nil, fmt.Errorf("invalid user %s", name)
	}
	want := string(key.Marshal())
	for _, k := range u.AuthorizedKeys {
		if string(k.Marshal()) == want {
			return &ssh.Permissions{Extensions: map[string]string{userExtension: name}}, nil
		}
	}
	return nil, fmt.Errorf("public key not authorized for user %s", name)
}

// userExtension carries the authenticated user name in ssh.Permissions.
const userExtension = "sshserver-user"

func baseEnv(shell string) []string {
	env := []string{"PATH=" + defaultPath, "SHELL=" + shell}
	if u, err := user.Current(); err == nil {
		env = append(env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	} else if h, err := os.UserHomeDir(); err == nil {
		env = append(env, "HOME="+h)
	}
	return env
}

// GenerateHostKey returns a fresh ed25519 host key.
func GenerateHostKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sshserver: generate host key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

// Addr returns the address the server listens on ("127.0.0.1:40123").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// HostKey returns the server's public host key, e.g. to pin it in a
// known_hosts file.
func (s *Server) HostKey() ssh.PublicKey { return s.cfg.HostKey.PublicKey() }

// Connections returns the number of TCP connections accepted so far.
func (s *Server) Connections() int64 { return s.conns.Load() }

// Sessions returns the number of session channels opened so far.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// Close stops listening, closes every connection (which kills the commands
// still running) and waits for all of the server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.conns.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(c, s.sshCfg)
	if err != nil {
		s.logf("sshserver: %s: handshake: %v", c.RemoteAddr(), err)
		return
	}
	c.SetDeadline(time.Time{})
	defer sc.Close()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Global requests: keepalive@openssh.com and anything else get a
		// failure reply, as OpenSSH does; any reply proves liveness.
		ssh.DiscardRequests(reqs)
	}()

	var chWG sync.WaitGroup
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			s.sessions.Add(1)
			chWG.Add(1)
			go func() {
				defer chWG.Done()
				s.serveSession(ch, creqs, sc.Permissions)
			}()
		case "direct-tcpip":
			if !s.cfg.AllowTCPForwarding {
				nc.Reject(ssh.Prohibited, "tcp forwarding is disabled on this server")
				continue
			}
			chWG.Add(1)
			go func() {
				defer chWG.Done()
				s.serveDirectTCPIP(nc)
			}()
		default:
			nc.Reject(ssh.UnknownChannelType, "unsupported channel type "+nc.ChannelType())
		}
	}
	// The connection is gone: closing it makes every channel's request
	// stream end, which kills the commands still running.
	sc.Close()
	chWG.Wait()
}

// session is the state of one session channel.
type session struct {
	srv  *Server
	ch   ssh.Channel
	env  []string
	user string // authenticated user name (Config.Users)

	mu      sync.Mutex
	started bool
	done    bool
	pgid    int
}

func (s *Server) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, perms *ssh.Permissions) {
	ss := &session{srv: s, ch: ch}
	if perms != nil {
		ss.user = perms.Extensions[userExtension]
	}
	var cmdWG sync.WaitGroup
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if err := ssh.Unmarshal(req.Payload, &kv); err != nil {
				req.Reply(false, nil)
				continue
			}
			ss.mu.Lock()
			ss.env = append(ss.env, kv.Name+"="+kv.Value)
			ss.mu.Unlock()
			req.Reply(true, nil)
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			ss.mu.Lock()
			already := ss.started
			ss.started = true
			ss.mu.Unlock()
			if already {
				req.Reply(false, nil)
				continue
			}
			r, err := ss.start(p.Command)
			if err != nil {
				s.logf("sshserver: start %q: %v", p.Command, err)
				req.Reply(false, nil)
				ch.Close()
				continue
			}
			req.Reply(true, nil)
			cmdWG.Add(1)
			go func() {
				defer cmdWG.Done()
				ss.wait(r)
			}()
		case "signal":
			var p struct{ Signal string }
			if err := ssh.Unmarshal(req.Payload, &p); err == nil {
				if sig, ok := signals[p.Signal]; ok {
					ss.kill(sig)
				}
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		default:
			// pty-req, shell, subsystem, x11-req, ...: not served.
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
	// The client closed the channel (or the connection went away): a
	// command still running has nobody to talk to.
	ss.kill(syscall.SIGKILL)
	cmdWG.Wait()
	ch.Close()
}

var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// kill signals the command's process group if the command still runs.
func (ss *session) kill(sig syscall.Signal) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.pgid > 0 && !ss.done {
		syscall.Kill(-ss.pgid, sig)
	}
}

// start starts line in its own process group. All three standard streams
// are *os.File pipes copied by the server's own goroutines with pooled
// buffers: Wait then neither waits for the client to close stdin nor
// allocates copy buffers per command.
func (ss *session) start(line string) (*running, error) {
	s := ss.srv
	shell, dir, base := s.cfg.Shell, s.cfg.Dir, s.baseEnv
	attr := &syscall.SysProcAttr{Setpgid: true, Chroot: s.cfg.Chroot}
	var u *User
	if s.cfg.Users != nil {
		var err error
		if u, err = s.cfg.Users(ss.user); err != nil || u == nil {
			return nil, fmt.Errorf("user %s is gone: %v", ss.user, err)
		}
		shell, dir = u.Shell, u.Home
		base = []string{"PATH=" + u.userPath(), "SHELL=" + u.Shell, "HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name}
		attr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	}
	var cmd *exec.Cmd
	if s.cfg.Command != nil {
		c, err := s.cfg.Command(u, line)
		if err != nil {
			return nil, err
		}
		cmd, attr = c, &syscall.SysProcAttr{Setpgid: true}
	} else {
		cmd = exec.Command(shell, "-c", line)
		cmd.Dir = dir
	}
	ss.mu.Lock()
	env := make([]string, 0, len(base)+len(s.cfg.Env)+len(ss.env))
	env = append(append(append(env, base...), s.cfg.Env...), ss.env...)
	ss.mu.Unlock()
	cmd.Env = env
	cmd.SysProcAttr = attr

	var files [6]*os.File // stdin r/w, stdout r/w, stderr r/w
	closeAll := func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, err
		}
		files[i], files[i+1] = r, w
	}
	stdinR, stdinW, outR, outW, errR, errW := files[0], files[1], files[2], files[3], files[4], files[5]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, outW, errW
	ss.mu.Lock()
	err := cmd.Start()
	if err == nil {
		ss.pgid = cmd.Process.Pid
	}
	ss.mu.Unlock()
	// The child has its copies; the server keeps only its ends.
	stdinR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		stdinW.Close()
		outR.Close()
		errR.Close()
		return nil, err
	}
	r := &running{cmd: cmd, stdinW: stdinW, outR: outR, errR: errR}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Ends when the client sends EOF, the channel closes, or the
		// command is gone (write error after stdinW is closed).
		pooledCopy(stdinW, ss.ch)
		stdinW.Close()
	}()
	r.copies.Add(2)
	go func() {
		defer r.copies.Done()
		pooledCopy(ss.ch, outR)
		outR.Close() // a gone client means EPIPE for the command, not a hang
	}()
	go func() {
		defer r.copies.Done()
		pooledCopy(ss.ch.Stderr(), errR)
		errR.Close()
	}()
	return r, nil
}

// running is a started command and the server's ends of its pipes.
type running struct {
	cmd                *exec.Cmd
	stdinW, outR, errR *os.File
	copies             sync.WaitGroup
}

func (ss *session) wait(r *running) {
	err := r.cmd.Wait()
	ss.mu.Lock()
	ss.done = true
	ss.mu.Unlock()
	r.stdinW.Close()
	// Output may still come from processes the command left behind; wait
	// for them to close it, or at most OutputWaitDelay.
	copied := make(chan struct{})
	go func() { r.copies.Wait(); close(copied) }()
	if d := ss.srv.cfg.OutputWaitDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-copied:
			t.Stop()
		case <-t.C:
			r.outR.Close()
			r.errR.Close()
			<-copied
		}
	} else {
		<-copied
	}
	r.outR.Close()
	r.errR.Close()

	ss.ch.CloseWrite()
	status := 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				sendExitSignal(ss.ch, ws.Signal())
				ss.ch.Close()
				return
			}
			status = ee.ExitCode()
		} else {
			status = 255
			fmt.Fprintf(ss.ch.Stderr(), "sshserver: %v\n", err)
		}
	}
	_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
	ss.ch.Close()
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pooledCopy is io.Copy with a pooled buffer.
func pooledCopy(w io.Writer, r io.Reader) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	_, _ = io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, *bp) // ends when either side closes
}

func sendExitSignal(ch ssh.Channel, sig syscall.Signal) {
	name := ""
	for n, s := range signals {
		if s == sig {
			name = n
		}
	}
	if name == "" {
		name = "KILL"
	}
	_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
		Signal     string
		CoreDumped bool
		Message    string
		Lang       string
	}{Signal: name, Message: "killed by signal " + strconv.Itoa(int(sig))}))
}

func (s *Server) serveDirectTCPIP(nc ssh.NewChannel) {
	var p struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	target := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		s.logf("sshserver: direct-tcpip to %s: %v", target, err)
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go func() {
		// The request stream ends when the client closes the channel:
		// then the target connection goes too, even if it is idle.
		ssh.DiscardRequests(reqs)
		conn.Close()
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, ch) // a forwarded connection ends when either side closes
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(ch, conn)
		ch.CloseWrite()
	}()
	wg.Wait()
	ch.Close()
	conn.Close()
}

// AuthorizedKey formats key as one authorized_keys line (without newline).
func AuthorizedKey(key ssh.PublicKey) string {
	return string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(key)))
}
