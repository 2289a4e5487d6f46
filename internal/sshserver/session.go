package sshserver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

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
