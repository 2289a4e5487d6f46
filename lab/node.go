package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/internal/k3s"
)

// Service states as systemctl is-active prints them.
const (
	stateInactive     = "inactive"
	stateActivating   = "activating"
	stateActive       = "active"
	stateDeactivating = "deactivating"
	stateFailed       = "failed"
)

// Default K3s paths on a node (install.sh layout, k3s-ca-rotation.md §7).
const (
	viewDataDir    = "/var/lib/rancher/k3s"
	viewConfigFile = "/etc/rancher/k3s/config.yaml"
	viewKubeconfig = "/etc/rancher/k3s/k3s.yaml"
	viewUnitDir    = "/etc/systemd/system"
)

// node is one simulated K3s node.
type node struct {
	lab     *Lab
	name    string
	role    string // "server" or "agent"
	index   int    // N of <subnet>.N
	ip      string
	version k3s.Version
	commit  string // fake git commit printed with the version
	root    string // DIR/<name>: the node's root as a host path

	// Paths as the node sees them (openssh mode: the real paths; inprocess
	// mode: host paths under root).
	dataDir, configFile, unitFile, envFile, kubeconfig string
	service                                            string // k3s or k3s-agent

	journal *journal
	sshPort int
	hostKey ssh.PublicKey

	// opMu serialises service transitions (start, stop, restart).
	opMu sync.Mutex

	mu           sync.Mutex // guards the fields below
	u            unitStatus // systemd's view of the unit
	proc         *k3sProc   // the current start attempt / running K3s
	gen          uint64     // bumped by every start and stop (stale restart timers)
	restartTimer *time.Timer
	initMember   *etcdMember   // etcd member started at lab up, until the first start
	gate         chan struct{} // see memberGate
	fault        string
	loadedUnit   []byte // the unit as systemd loaded it (daemon-reload)
	loadedDrops  []k3s.NamedFile
}

func (n *node) isServer() bool { return n.role == "server" }

// runDir is DIR/run/<node>: the lab's own files about the node (journal,
// sshd config and logs), kept out of the node's root tree so that the tree
// changes only as a real node's would.
func (n *node) runDir() string { return filepath.Join(n.lab.opts.Dir, "run", n.name) }

// unitName is the systemd unit name, "k3s.service".
func (n *node) unitName() string { return n.service + ".service" }

// host maps a path as the node sees it to the host path the daemon uses:
// the node's tree DIR/<node> is its root.
func (n *node) host(p string) string {
	if !filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(n.root, p)
}

// view maps one of the default K3s paths (e.g. /var/lib/rancher/k3s) to
// the path the node sees: the same, since every command runs chrooted
// into the node's tree.
func (n *node) view(p string) string { return p }

func (n *node) getState() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.u.active
}

// logK3s appends a K3s (logrus) line to the node's journal.
func (n *node) logK3s(level, format string, args ...any) {
	n.mu.Lock()
	pid := n.u.mainPID
	n.mu.Unlock()
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	now := time.Now()
	n.journal.add(entry{At: now, Unit: n.unitName(), Ident: "k3s", PID: pid, Msg: logrusLine(now, level, msg)})
}

// logSystemd appends a systemd line about the node's unit.
func (n *node) logSystemd(format string, args ...any) {
	n.journal.add(entry{At: time.Now(), Unit: n.unitName(), Ident: "systemd", PID: 1, Msg: fmt.Sprintf(format, args...)})
}

// fakeCommit is the commit hash printed with a version, stable per version.
func fakeCommit(version string) string {
	sum := sha256.Sum256([]byte(version))
	return hex.EncodeToString(sum[:4])
}

// serverURL is the supervisor URL of a server node.
func (n *node) serverURL() string { return "https://" + n.ip + ":6443" }

// writeFile writes a host file, creating parent dirs 0755.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}

// readSources reads the node's K3s config sources (§7): the unit as systemd
// loaded it and its drop-ins, config.yaml, config.yaml.d/*.yaml|*.yml and the
// unit's environment files.
func (n *node) readSources() (k3s.Sources, error) {
	n.mu.Lock()
	unit, drops := n.loadedUnit, n.loadedDrops
	n.mu.Unlock()
	src := k3s.Sources{Unit: unit, UnitPath: n.unitFile, UnitDropIns: drops, ConfigPath: n.configFile}
	b, err := os.ReadFile(n.host(n.configFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return src, fmt.Errorf("read %s: %w", n.configFile, err)
	}
	src.Config = b
	dropDir := n.configFile + ".d"
	ents, err := os.ReadDir(n.host(dropDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return src, fmt.Errorf("read %s: %w", dropDir, err)
	}
	for _, e := range ents {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		p := filepath.Join(dropDir, e.Name())
		b, err := os.ReadFile(n.host(p))
		if err != nil {
			return src, fmt.Errorf("read %s: %w", p, err)
		}
		src.DropIns = append(src.DropIns, k3s.NamedFile{Path: p, Data: b})
	}
	envPaths := k3s.UnitEnvironmentFiles(unit, n.service)
	for _, d := range drops {
		envPaths = append(envPaths, k3s.UnitEnvironmentFiles(d.Data, n.service)...)
	}
	for _, p := range envPaths {
		b, err := os.ReadFile(n.host(p))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("read %s: %w", p, err)
		}
		src.EnvFiles = append(src.EnvFiles, k3s.NamedFile{Path: p, Data: b})
	}
	return src, nil
}

// readUnitFromDisk reads the unit and its <unit>.d/*.conf drop-ins as
// they are on disk now.
func (n *node) readUnitFromDisk() ([]byte, []k3s.NamedFile, error) {
	unit, err := os.ReadFile(n.host(n.unitFile))
	if err != nil {
		return nil, nil, err
	}
	var drops []k3s.NamedFile
	dir := n.unitFile + ".d"
	ents, err := os.ReadDir(n.host(dir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	names := []string{}
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(n.host(p))
		if err != nil {
			return nil, nil, err
		}
		drops = append(drops, k3s.NamedFile{Path: p, Data: b})
	}
	return unit, drops, nil
}

// daemonReload makes systemd load the unit files again.
func (n *node) daemonReload() error {
	unit, drops, err := n.readUnitFromDisk()
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.loadedUnit, n.loadedDrops = unit, drops
	n.mu.Unlock()
	return nil
}

// unitChangedOnDisk reports whether the unit files differ from what
// systemd loaded (systemctl then warns to run daemon-reload).
func (n *node) unitChangedOnDisk() bool {
	unit, drops, err := n.readUnitFromDisk()
	if err != nil {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if string(unit) != string(n.loadedUnit) || len(drops) != len(n.loadedDrops) {
		return true
	}
	for i := range drops {
		if drops[i].Path != n.loadedDrops[i].Path || string(drops[i].Data) != string(n.loadedDrops[i].Data) {
			return true
		}
	}
	return false
}

// effective merges the node's config sources (§7 precedence).
func (n *node) effective() (map[string]k3s.Setting, error) {
	src, err := n.readSources()
	if err != nil {
		return nil, err
	}
	eff, err := k3s.Effective(src)
	if err != nil {
		return nil, err
	}
	return eff, nil
}

func settingValue(eff map[string]k3s.Setting, key string) string {
	if s, ok := eff[key]; ok {
		return s.Value
	}
	return ""
}

func settingBool(eff map[string]k3s.Setting, key string) bool {
	switch strings.ToLower(settingValue(eff, key)) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}
