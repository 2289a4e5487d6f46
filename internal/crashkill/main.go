// Command crashkill is a test-only tool: it starts a command and kills it
// with SIGKILL right after the command wrote line K of a run journal
// (RUNS/<run ID>/journal.jsonl), so that crash tests can stop caretaker at
// every journal-entry boundary without a hook in caretaker itself.
//
//	crashkill -runs STATE/runs -k K [-cpu N] [-out FILE] -- caretaker run ...
//	crashkill -runs STATE/runs -match S [-match S2] [-k N] ... -- caretaker run ...
//
// With -match, K counts only the journal lines that contain every S: the
// kill lands right after the K-th such line (the kill point named by what
// the entry is, not by its index).
//
// How the kill lands exactly after line K: the command runs pinned to one
// CPU; crashkill's watching thread is pinned to the same CPU with the
// real-time policy SCHED_FIFO and sleeps on inotify. Every write(2) of a
// journal line (the journal writes one line per call) wakes it, and a
// real-time thread preempts the command's thread before that returns to
// user space; while crashkill counts lines and sends SIGKILL, no thread of
// the command can run on its only CPU, so it dies with exactly K lines
// written and nothing done after the write. When SCHED_FIFO is not allowed,
// crashkill polls every millisecond instead and says "mode": "poll": the
// kill may then land a few lines late.
//
// It prints one JSON object on its stdout: {"mode", "run_dir", "lines" (in
// the journal after the command died), "matched" (of them, those -match
// counted), "killed" (false: the command ended before line K), "exit" (the
// command's exit code, -9 when killed)}. The command's stdout and stderr go to -out (and -out.err).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const journalName = "journal.jsonl"

type report struct {
	Mode   string `json:"mode"`
	RunDir string `json:"run_dir"`
	Lines  int    `json:"lines"`
	// Matched is how many lines matched -match when the command died.
	Matched int    `json:"matched,omitempty"`
	Killed  bool   `json:"killed"`
	Exit    int    `json:"exit"`
	Error   string `json:"error,omitempty"`
}

func main() {
	runs := flag.String("runs", "", "the state directory's runs/ directory (created if missing)")
	k := flag.Int("k", 1, "kill right after this many journal lines were written")
	cpu := flag.Int("cpu", 0, "the CPU the command and the watcher share")
	out := flag.String("out", "", "file for the command's stdout (stderr: FILE.err)")
	var match multiFlag
	flag.Var(&match, "match", "count only journal lines containing this text (repeatable: all of them)")
	flag.Parse()
	if *runs == "" || flag.NArg() == 0 || *k < 1 {
		fmt.Fprintln(os.Stderr, "usage: crashkill -runs DIR -k K [-cpu N] [-out FILE] -- CMD ARGS...")
		os.Exit(2)
	}
	rep, err := run(*runs, *k, *cpu, *out, match, flag.Args())
	if err != nil {
		rep.Error = err.Error()
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	if err != nil {
		os.Exit(1)
	}
}

// watcher follows the journal of the one run created under runs.
type watcher struct {
	fd      int
	runs    string
	runDir  string
	dirWd   int
	offset  int64
	lines   int // journal lines written (complete)
	matched int // of them, those containing every match
	match   []string
	partial []byte // a line written in part so far
	journal *os.File
}

// hits is what K counts: lines, or matching lines with -match.
func (w *watcher) hits() int {
	if len(w.match) > 0 {
		return w.matched
	}
	return w.lines
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func run(runs string, k, cpu int, out string, match []string, argv []string) (report, error) {
	rep := report{Mode: "rt"}
	if err := os.MkdirAll(runs, 0o700); err != nil {
		return rep, err
	}
	// Everything below happens on this thread: its affinity and policy
	// must not leak to other goroutines, so it is never unlocked (the
	// thread ends with the goroutine).
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return rep, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return rep, fmt.Errorf("inotify: %w", err)
	}
	defer unix.Close(fd)
	w := &watcher{fd: fd, runs: runs, dirWd: -1, match: match}
	if _, err := unix.InotifyAddWatch(fd, runs, unix.IN_CREATE); err != nil {
		return rep, fmt.Errorf("watch %s: %w", runs, err)
	}
	// SCHED_FIFO, not inherited by the command (reset on fork).
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 10, Flags: unix.SCHED_FLAG_RESET_ON_FORK}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		rep.Mode = "poll"
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if out != "" {
		so, err1 := os.Create(out)
		se, err2 := os.Create(out + ".err")
		if err := errors.Join(err1, err2); err != nil {
			return rep, err
		}
		defer so.Close()
		defer se.Close()
		cmd.Stdout, cmd.Stderr = so, se
	}
	// The command inherits this thread's CPU affinity (fork copies it).
	if err := cmd.Start(); err != nil {
		return rep, err
	}
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	var werr error
	if rep.Mode == "rt" {
		werr = w.watch(k, cmd.Process.Pid, done)
	} else {
		werr = w.poll(k, cmd.Process.Pid, done)
	}
	<-done
	rep.RunDir, rep.Matched = w.runDir, w.matched
	var xe *exec.ExitError
	if errors.As(waitErr, &xe) {
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			rep.Exit = -int(ws.Signal())
		} else {
			rep.Exit = xe.ExitCode()
		}
	}
	rep.Killed = werr == nil && rep.Exit == -int(unix.SIGKILL)
	if w.runDir != "" {
		if data, err := os.ReadFile(filepath.Join(w.runDir, journalName)); err == nil {
			rep.Lines = bytes.Count(data, []byte("\n"))
		}
	}
	if errors.Is(werr, errEnded) {
		werr = nil // the command ended before line k: reported with killed=false
	}
	return rep, werr
}

var errEnded = errors.New("the command ended before the journal had the lines asked for")

// watch reads inotify events until the journal has k lines, then kills pid.
// It returns errEnded when the command's run dir disappears from view
// (IN_IGNORED) or the command exits first (its pid cannot be signalled).
func (w *watcher) watch(k, pid int, done <-chan struct{}) error {
	buf := make([]byte, 64*1024)
	pfd := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	for {
		// Poll with a timeout only to notice a command that ended before
		// line k; the wake-up on a write comes from inotify.
		ready, err := unix.Poll(pfd, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll inotify: %w", err)
		}
		if ready <= 0 {
			select {
			case <-done:
				return errEnded
			default:
				continue
			}
		}
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = string(bytes.TrimRight(raw, "\x00"))
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if err := w.event(int(ev.Wd), ev.Mask, name); err != nil {
				return err
			}
		}
		if w.hits() >= k {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				return errEnded
			}
			return nil
		}
	}
}

// event follows one inotify event: the run's directory appearing under
// runs (then watch it), or the journal growing (then count its lines).
func (w *watcher) event(wd int, mask uint32, name string) error {
	switch {
	case w.dirWd < 0 && mask&unix.IN_CREATE != 0 && mask&unix.IN_ISDIR != 0:
		w.runDir = filepath.Join(w.runs, name)
		wd, err := unix.InotifyAddWatch(w.fd, w.runDir, unix.IN_MODIFY|unix.IN_CREATE)
		if err != nil {
			return fmt.Errorf("watch %s: %w", w.runDir, err)
		}
		w.dirWd = wd
		return w.count()
	case wd == w.dirWd && name == journalName:
		return w.count()
	}
	return nil
}

// count reads what was appended to the journal since the last call.
func (w *watcher) count() error {
	if w.journal == nil {
		f, err := os.Open(filepath.Join(w.runDir, journalName))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		w.journal = f
	}
	buf := make([]byte, 32*1024)
	for {
		n, err := w.journal.ReadAt(buf, w.offset)
		w.offset += int64(n)
		data := append(w.partial, buf[:n]...)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			w.line(data[:i])
			data = data[i+1:]
		}
		w.partial = append([]byte(nil), data...)
		if err != nil || n == 0 {
			return nil
		}
	}
}

// line counts one complete journal line.
func (w *watcher) line(l []byte) {
	w.lines++
	if len(w.match) == 0 {
		return
	}
	for _, m := range w.match {
		if !bytes.Contains(l, []byte(m)) {
			return
		}
	}
	w.matched++
}

// poll is the fallback without SCHED_FIFO: it looks every millisecond.
func (w *watcher) poll(k, pid int, done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return errEnded
		case <-time.After(time.Millisecond):
		}
		if w.runDir == "" {
			entries, _ := os.ReadDir(w.runs)
			for _, e := range entries {
				if e.IsDir() {
					w.runDir = filepath.Join(w.runs, e.Name())
				}
			}
			if w.runDir == "" {
				continue
			}
		}
		if err := w.count(); err != nil {
			return err
		}
		if w.hits() >= k {
			_ = unix.Kill(pid, unix.SIGKILL)
			return nil
		}
	}
}
