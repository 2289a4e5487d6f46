package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// outcome is what one process did.
type outcome struct {
	wall   time.Duration
	code   int           // exit code; -1 when killed or not started
	maxRSS int64         // peak resident set of the process itself, bytes
	cpu    time.Duration // user + system CPU of the process and its waited-for children
	stdout []byte
	stderr []byte
}

// tailOf returns the last lines of b, for error messages.
func tailOf(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// execTimed runs a command in its own process group (killed as a whole on
// timeout or cancellation), measuring its wall time from start to exit.
func execTimed(ctx context.Context, timeout time.Duration, dir string, env []string, name string, args ...string) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	o := outcome{wall: time.Since(start), code: -1, stdout: out.Bytes(), stderr: errb.Bytes()}
	if cmd.ProcessState != nil {
		o.code = cmd.ProcessState.ExitCode()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			o.maxRSS = ru.Maxrss * 1024 // kilobytes on Linux
			o.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if ctx.Err() != nil {
		return o, fmt.Errorf("%s: %w after %s (stderr: %s)", name, ctx.Err(), timeout, tailOf(o.stderr, 5))
	}
	var xe *exec.ExitError
	if err != nil && !errors.As(err, &xe) {
		return o, fmt.Errorf("%s: %w", name, err)
	}
	return o, nil
}

// firstLine runs a command and returns the first non-empty line of its
// output (stdout, else stderr), or "" when it cannot run.
func firstLine(ctx context.Context, name string, args ...string) string {
	if _, err := exec.LookPath(name); err != nil {
		return ""
	}
	o, err := execTimed(ctx, 20*time.Second, "", nil, name, args...)
	if err != nil {
		return ""
	}
	for _, b := range [][]byte{o.stdout, o.stderr} {
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				return l
			}
		}
	}
	return ""
}

// envInfo describes the machine and the tools measured.
type envInfo struct {
	cpu      string
	kernel   string
	versions []string
}

func describeEnv(ctx context.Context, cfg *config) envInfo {
	e := envInfo{cpu: fmt.Sprintf("%d CPUs", runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpu += " (" + strings.TrimSpace(v) + ")"
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
	add := func(label, v string) {
		if v == "" {
			v = "not installed"
		}
		e.versions = append(e.versions, label+": "+v)
	}
	add("caretaker", firstLine(ctx, cfg.caretaker, "version"))
	add("go", firstLine(ctx, "go", "version"))
	add("ansible", firstLine(ctx, "ansible-playbook", "--version"))
	add("parallel-ssh", firstLine(ctx, "parallel-ssh", "--version"))
	add("OpenSSH client", firstLine(ctx, "ssh", "-V"))
	add("OpenSSH server", sshdVersion(ctx))
	return e
}

// sshdVersion reads the server's version from `sshd -V` (OpenSSH 9.2
// prints its usage with the version to stderr).
func sshdVersion(ctx context.Context) string {
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		return ""
	}
	o, _ := execTimed(ctx, 10*time.Second, "", nil, "/usr/sbin/sshd", "-V")
	for _, l := range strings.Split(string(o.stderr)+string(o.stdout), "\n") {
		if strings.Contains(l, "OpenSSH") {
			return strings.TrimSpace(l)
		}
	}
	return "/usr/sbin/sshd"
}

// loadAvg returns /proc/loadavg's three load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
