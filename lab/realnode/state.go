package realnode

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// StateFile is the name of the state file in the lab dir.
const StateFile = "realnode.json"

// state is everything Open and Close need, written to Dir/realnode.json
// before each resource is created (so a failed or killed Start can be
// torn down from it).
type state struct {
	Version  int    `json:"version"`
	Dir      string `json:"dir"`
	Name     string `json:"name"`
	Subnet   string `json:"subnet"`
	Bridge   string `json:"bridge"`
	Base     string `json:"base"`      // cached base rootfs (lower layer)
	K3sLayer string `json:"k3s_layer"` // cached dir with usr/local/bin/k3s (upper lower layer)
	// CgroupRoots are the lab's cgroup dirs, one per hierarchy
	// (<hierarchy>/caretaker-realnode-X-Y).
	CgroupRoots []string `json:"cgroup_roots"`
	// HostAcquired says the lab is registered in RunDir (sysctls raised).
	HostAcquired bool `json:"host_acquired"`
	// OwnsSubnet says the subnet-derived names (bridge, netns, veths,
	// cgroups) are this lab's: set with the registration, cleared only by
	// a complete Close, so that a later Close of this dir never touches a
	// newer lab on the same subnet.
	OwnsSubnet   bool        `json:"owns_subnet"`
	Scenario     string      `json:"scenario"`
	SecureToken  bool        `json:"secure_token"`
	BootstrapBug bool        `json:"bootstrap_bug"`
	Nodes        []nodeState `json:"nodes"`
	// Ready is set once Start has finished.
	Ready bool `json:"ready"`
}

// nodeState is one node's part of the state file.
type nodeState struct {
	Name    string   `json:"name"`
	Index   int      `json:"index"`
	Address string   `json:"address"`
	Machine string   `json:"machine"` // systemd-nspawn --machine
	Netns   string   `json:"netns"`
	Veth    string   `json:"veth"`
	Dir     string   `json:"dir"`    // Dir/nodes/<name>: upper, work, root, console.log
	Root    string   `json:"root"`   // overlay mount point
	Source  string   `json:"source"` // where its `server` is set
	Cgroups []string `json:"cgroups"`
	// SupervisorPID and SupervisorStart (clock ticks after boot, from
	// /proc/<pid>/stat) name the supervisor shell without PID reuse.
	SupervisorPID   int    `json:"supervisor_pid"`
	SupervisorStart uint64 `json:"supervisor_start"`
	Mounted         bool   `json:"mounted"`
}

// stateMu serialises writes of state files within this process.
var stateMu sync.Mutex

func (s *state) path() string { return filepath.Join(s.Dir, StateFile) }

// save writes the state file atomically.
func (s *state) save() error {
	stateMu.Lock()
	defer stateMu.Unlock()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path(), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("realnode: write the state file: %w", err)
	}
	return nil
}

// loadState reads Dir/realnode.json.
func loadState(dir string) (*state, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("realnode: lab directory %q: %w", dir, err)
	}
	p := filepath.Join(abs, StateFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("realnode: no real-engine lab in %s (%w): start one with `caretaker lab up --engine real --dir %s`", abs, err, abs)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("realnode: state file %s: %w", p, err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("realnode: state file %s has version %d; this caretaker reads version 1", p, s.Version)
	}
	s.Dir = abs
	return &s, nil
}

func (s *state) node(name string) (*nodeState, error) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i], nil
		}
	}
	var have []string
	for _, n := range s.Nodes {
		have = append(have, n.Name)
	}
	return nil, fmt.Errorf("realnode: no node %q in lab %s (nodes: %v)", name, s.Dir, have)
}
