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
	// DialTarget, when set, maps the host:port a direct-tcpip channel asks
	// for to the address the server dials (the lab: a node's own
	// 127.0.0.1 is its own address).
	DialTarget func(hostPort string) string
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
	if s.cfg.DialTarget != nil {
		target = s.cfg.DialTarget(target)
	}
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
