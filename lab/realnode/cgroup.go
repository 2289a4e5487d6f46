package realnode

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// detectCgroups returns the hierarchies a node's supervisor must join so
// that systemd-nspawn --keep-unit finds its own cgroup: on a hybrid host
// (cgroup v1 with a name=systemd hierarchy and a v2 "unified" mount, as
// here) both /sys/fs/cgroup/systemd and /sys/fs/cgroup/unified; on a pure
// v2 host /sys/fs/cgroup alone; on a legacy v1 host the name=systemd
// hierarchy alone.
func detectCgroups() ([]string, error) {
	var st syscall.Statfs_t
	const cgroup2Magic = 0x63677270
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == cgroup2Magic {
		return []string{"/sys/fs/cgroup"}, nil
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("realnode: read /proc/self/mountinfo: %w", err)
	}
	var named, unified string
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		sep := indexOf(f, "-")
		if sep < 0 || sep+3 >= len(f) {
			continue
		}
		mp, fstype, opts := f[4], f[sep+1], f[sep+3]
		switch {
		case fstype == "cgroup" && strings.Contains(","+opts+",", ",name=systemd,"):
			named = mp
		case fstype == "cgroup2":
			unified = mp
		}
	}
	if named == "" {
		return nil, errors.New("realnode: no name=systemd cgroup hierarchy and /sys/fs/cgroup is not cgroup2: " +
			"mount one (mkdir /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd)")
	}
	out := []string{named}
	if unified != "" {
		out = append(out, unified)
	}
	return out, nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// cgroupProcs lists every PID in dir and its descendants.
func cgroupProcs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killCgroup SIGKILLs every process in dir (recursively) until it is
// empty or the deadline passes; it returns the PIDs still there.
func killCgroup(dir string, wait time.Duration) []int {
	deadline := time.Now().Add(wait)
	for {
		pids := cgroupProcs(dir)
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		if kill := filepath.Join(dir, "cgroup.kill"); fileExists(kill) {
			_ = os.WriteFile(kill, []byte("1"), 0o644)
		}
		for _, p := range pids {
			_ = signal(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroupTree removes dir and every cgroup below it, deepest first,
// retrying while the kernel still counts exiting tasks.
func removeCgroupTree(dir string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if len(dirs) == 0 {
			return nil
		}
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		var last error
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("rmdir %s: %w", d, err)
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
