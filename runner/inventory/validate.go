package inventory

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/errs"
)

// validHost reports whether s is an IP address or a host name as DNS
// spells one (letters, digits, '-' and '_' in dot-separated labels of at
// most 63 characters): "10.0.0.1 " or "not an address" would otherwise
// only fail once a run dials them.
func validHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// checkEndpoint refuses an etcd or supervisor endpoint that is not
// host:port.
func checkEndpoint(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port as dialed from the node (for example 127.0.0.1:2379), got %q", s)
	}
	if !validHost(host) {
		return fmt.Errorf("must be host:port with an IP address or host name, got host %q in %q", host, s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("must be host:port with a port from 1 to 65535, got %q", s)
	}
	return nil
}

// Vocabulary says what a selector can name in the cluster: its node
// names, groups and labels (key=value), for messages about a selector
// that matches nothing.
func (c *Cluster) Vocabulary() string {
	groups := map[string]bool{}
	labels := map[string]bool{}
	for _, n := range c.Nodes {
		for _, g := range n.Groups {
			groups["group:"+g] = true
		}
		for k, v := range n.Labels {
			labels["label:"+k+"="+v] = true
		}
	}
	list := func(m map[string]bool) string {
		if len(m) == 0 {
			return "none"
		}
		out := make([]string, 0, len(m))
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return strings.Join(out, ", ")
	}
	return fmt.Sprintf("nodes: %s; groups: %s; labels: %s", strings.Join(c.nodeNames(), ", "), list(groups), list(labels))
}

// NoMatch is the bad-input error for a selector (what says where it came
// from: "--limit", `nodes="…"`) that selects no node of the cluster.
func (c *Cluster) NoMatch(what, selector string) error {
	return fmt.Errorf("%s %q selects no node of cluster %s (%s); use all, servers, agents, a node name, group:NAME or label:KEY=VALUE with one of these: %w",
		what, selector, c.Name, c.Vocabulary(), errs.ErrBadInput)
}

// CheckControllerFiles checks the files on this machine that reaching the
// nodes needs, before any node is dialed: every identity file the
// inventory names must be a readable private key, and under
// host_key_policy strict the known_hosts file the inventory names must
// exist (no host key could be verified otherwise). Errors name the
// inventory line.
func CheckControllerFiles(nodes []*Node) error {
	seen := map[string]bool{}
	for _, n := range nodes {
		s := n.SSH
		for _, f := range s.IdentityFiles {
			if seen["id "+f] {
				continue
			}
			seen["id "+f] = true
			if err := checkIdentityFile(f); err != nil {
				return fmt.Errorf("%s: identity file %s %w; fix identity_files (or leave it out to use ~/.ssh/id_* and the SSH agent): %w", s.IdentityFilesAt, f, err, errs.ErrBadInput)
			}
		}
		// Only a file the inventory names: without known_hosts the default
		// (~/.ssh/known_hosts) is this machine's, and a connection says
		// when it is missing.
		kh := s.KnownHosts
		if s.HostKeyPolicy != HostKeyStrict || s.KnownHostsAt == "" || seen["kh "+kh] {
			continue
		}
		seen["kh "+kh] = true
		if _, err := os.Stat(kh); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: the known_hosts file %s does not exist, and under host_key_policy strict no host key can be verified without it; "+
				"create it with the nodes' keys, verified out of band (ssh-keyscan -p PORT ADDRESS >> %s), point known_hosts at the right file, or set host_key_policy: accept-new: %w",
				s.KnownHostsAt, kh, kh, errs.ErrBadInput)
		}
	}
	return nil
}

// checkIdentityFile says what is wrong with a private key file ("does not
// exist", "is not a private key"); an encrypted key is fine (the agent or
// a passphrase prompt deals with it).
func checkIdentityFile(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("does not exist")
	case err != nil:
		return fmt.Errorf("cannot be read (%w)", err)
	case fi.IsDir():
		return errors.New("is a directory")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot be read (%w)", err)
	}
	if _, err := ssh.ParseRawPrivateKey(data); err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil
		}
		return errors.New("is not a private key (OpenSSH or PEM format)")
	}
	return nil
}
