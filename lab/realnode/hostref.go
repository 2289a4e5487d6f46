package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// RunDir holds the host-wide bookkeeping shared by every real-engine lab
// of this machine: a lock, one file per running lab and the host settings
// as they were before the first lab changed them.
const RunDir = "/run/caretaker-realnode"

// runDir and procSys are RunDir and /proc/sys; tests point them elsewhere.
var (
	runDir  = RunDir
	procSys = "/proc/sys"
)

// hostSysctls are raised while any lab runs. Every node's systemd,
// journald, logind, dbus and user manager take inotify instances of uid 0:
// the default 128 stops booting at about 20 nodes.
var hostSysctls = []struct {
	key  string
	want int64
}{
	{"fs.inotify.max_user_instances", 8192},
	{"fs.inotify.max_user_watches", 1048576},
	{"net.ipv4.conf.all.route_localnet", 1},
}

// hostSaved is RunDir/saved.json: what the first lab found.
type hostSaved struct {
	Sysctls map[string]string `json:"sysctls"`
	// NetnsMounted says whether /run/netns was a mount point before the
	// first lab; if not, `ip netns add` made it one and the last lab's
	// Down unmounts it again when it is empty.
	NetnsMounted bool `json:"netns_mounted"`
}

func sysctlPath(key string) string {
	return filepath.Join(procSys, strings.ReplaceAll(key, ".", "/"))
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(key, val string) error {
	if err := os.WriteFile(sysctlPath(key), []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	return nil
}

// lockHost takes RunDir/lock.
func lockHost(ctx context.Context) (*flock.Flock, error) {
	if err := os.MkdirAll(filepath.Join(runDir, "labs"), 0o755); err != nil {
		return nil, fmt.Errorf("realnode: create %s: %w", runDir, err)
	}
	l := flock.New(filepath.Join(runDir, "lock"))
	if _, err := l.TryLockContext(ctx, 100*time.Millisecond); err != nil {
		return nil, fmt.Errorf("realnode: lock %s/lock: %w", runDir, err)
	}
	return l, nil
}

// hostAcquire registers the lab by its bridge name — refusing a name
// another live lab holds, so that no lab ever tears down another's
// network — and, for the first lab, records the host settings, then
// raises the sysctls.
func hostAcquire(ctx context.Context, bridge, dir string) error {
	l, err := lockHost(ctx)
	if err != nil {
		return err
	}
	defer l.Unlock()
	savedPath := filepath.Join(runDir, "saved.json")
	var saved hostSaved
	if liveLabs() == 0 {
		// No lab runs: what saved.json says is stale (e.g. /run is on
		// disk and survived a reboot). Record the host as it is now.
		os.Remove(savedPath)
	}
	if b, err := os.ReadFile(savedPath); err == nil {
		if err := json.Unmarshal(b, &saved); err != nil {
			return fmt.Errorf("realnode: %s: %w (remove it if no real-engine lab runs)", savedPath, err)
		}
	} else {
		saved = hostSaved{Sysctls: map[string]string{}, NetnsMounted: isMountPoint("/run/netns")}
		for _, s := range hostSysctls {
			v, err := readSysctl(s.key)
			if err != nil {
				return fmt.Errorf("realnode: read sysctl %s: %w", s.key, err)
			}
			saved.Sysctls[s.key] = v
		}
		b, _ := json.MarshalIndent(saved, "", "  ")
		if err := writeFileAtomic(savedPath, b, 0o644); err != nil {
			return fmt.Errorf("realnode: record the host settings in %s: %w", savedPath, err)
		}
	}
	reg := filepath.Join(runDir, "labs", bridge)
	if other := registeredDir(bridge); other != "" {
		if other != dir && (fileExists(filepath.Join("/sys/class/net", bridge)) || registrantAlive(bridge)) {
			return fmt.Errorf("realnode: the subnet of bridge %s is used by the lab in %s: `caretaker lab down --engine real --dir %s`, or choose another --subnet", bridge, other, other)
		}
	}
	me, err := readProcStat(os.Getpid())
	if err != nil {
		return fmt.Errorf("realnode: %w", err)
	}
	if err := os.WriteFile(reg, []byte(fmt.Sprintf("%s\n%d %d\n", dir, os.Getpid(), me.startTime)), 0o644); err != nil {
		return fmt.Errorf("realnode: register the lab in %s: %w", runDir, err)
	}
	for _, s := range hostSysctls {
		cur, err := readSysctl(s.key)
		if err != nil {
			return fmt.Errorf("realnode: read sysctl %s: %w", s.key, err)
		}
		if n, err := strconv.ParseInt(cur, 10, 64); err == nil && n >= s.want {
			continue
		}
		if err := writeSysctl(s.key, strconv.FormatInt(s.want, 10)); err != nil {
			return fmt.Errorf("realnode: %w", err)
		}
	}
	return nil
}

// hostRelease unregisters the lab (if the registration is still its
// own); when no other lab is registered it
// restores the recorded sysctls and unmounts /run/netns if the engine
// made it a mount point and it is empty. It returns what it restored.
func hostRelease(ctx context.Context, bridge, dir string) ([]string, error) {
	l, err := lockHost(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	if registeredDir(bridge) == dir {
		os.Remove(filepath.Join(runDir, "labs", bridge))
	}
	if liveLabs() > 0 {
		return nil, nil
	}
	savedPath := filepath.Join(runDir, "saved.json")
	b, err := os.ReadFile(savedPath)
	if os.IsNotExist(err) {
		return nil, nil
	}
	var saved hostSaved
	if err == nil {
		err = json.Unmarshal(b, &saved)
	}
	if err != nil {
		return nil, fmt.Errorf("realnode: read %s: %w", savedPath, err)
	}
	var done []string
	var firstErr error
	for _, s := range hostSysctls {
		v, ok := saved.Sysctls[s.key]
		if !ok {
			continue
		}
		if cur, _ := readSysctl(s.key); cur == v {
			continue
		}
		if err := writeSysctl(s.key, v); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("realnode: restore %w", err)
			continue
		}
		done = append(done, s.key+"="+v)
	}
	if !saved.NetnsMounted && isMountPoint("/run/netns") {
		if ents, err := os.ReadDir("/run/netns"); err == nil && len(ents) == 0 {
			if _, err := run(ctx, "umount", "/run/netns"); err != nil && firstErr == nil {
				firstErr = fmt.Errorf("realnode: unmount /run/netns: %w", err)
			} else {
				done = append(done, "umount /run/netns")
			}
		}
	}
	if firstErr == nil {
		os.Remove(savedPath)
	}
	return done, firstErr
}

// liveLabs counts the registered labs whose bridge exists, removing the
// registrations of the others: a lab whose bridge is gone was torn down
// by hand or died with its network (or the host rebooted) and no longer
// needs the host settings. The caller holds the host lock.
func liveLabs() int {
	ents, _ := os.ReadDir(filepath.Join(runDir, "labs"))
	n := 0
	for _, e := range ents {
		if fileExists(filepath.Join("/sys/class/net", e.Name())) || registrantAlive(e.Name()) {
			n++
		} else {
			os.Remove(filepath.Join(runDir, "labs", e.Name()))
		}
	}
	return n
}

// registeredDir is the lab dir registered for bridge, "" if none. A
// registration is RunDir/labs/<bridge>: the lab dir, then the PID and
// start time of the process that registered it.
func registeredDir(bridge string) string {
	b, err := os.ReadFile(filepath.Join(runDir, "labs", bridge))
	if err != nil {
		return ""
	}
	dir, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(dir)
}

// registrantAlive reports whether the process that registered bridge
// still runs: until its Start has made the bridge, that is what keeps the
// registration live.
func registrantAlive(bridge string) bool {
	b, err := os.ReadFile(filepath.Join(runDir, "labs", bridge))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), "\n")
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(rest, "%d %d", &pid, &start); err != nil {
		return false
	}
	return alive(pid, start)
}

// isMountPoint reports whether p is a mount point (per /proc/self/mountinfo).
func isMountPoint(p string) bool {
	for _, m := range mountPoints() {
		if m == p {
			return true
		}
	}
	return false
}

// mountPoints lists the mount points of /proc/self/mountinfo, unescaped.
func mountPoints() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// unescapeMount decodes mountinfo's octal escapes (\040 for space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
