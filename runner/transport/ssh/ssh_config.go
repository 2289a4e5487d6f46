package ssh

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kevinburke/ssh_config"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/transport/internal/proc"
)

// sshHop is one SSH endpoint on the way to a node: a jump host or the node.
type sshHop struct {
	label         string // for messages: "node server-1", "jump host bastion for node server-1"
	host          string
	port          int
	user          string
	identityFiles []string
}

func (h sshHop) addr() string { return net.JoinHostPort(h.host, strconv.Itoa(h.port)) }

// sshTarget is where and how a node is reached, after ~/.ssh/config.
type sshTarget struct {
	node  sshHop
	jumps []sshHop
}

// resolveTarget combines n with the Host entry of ssh_config that
// n.SSHHost names: HostName, Port, User, IdentityFile and ProxyJump from
// the file apply where n leaves them unset.
func resolveTarget(n Config) (sshTarget, error) {
	t := sshTarget{node: sshHop{
		label:         "node " + n.Name,
		host:          n.Address,
		port:          n.Port,
		user:          n.User,
		identityFiles: n.IdentityFiles,
	}}
	jump := n.JumpHost
	var cfg *ssh_config.Config
	if n.SSHHost != "" {
		var err error
		cfg, err = loadSSHConfig(n)
		if err != nil {
			return t, err
		}
		alias := n.SSHHost
		if cfg != nil {
			applySSHConfig(cfg, alias, &t.node)
			if jump == "" {
				jump = configValue(cfg, alias, "ProxyJump")
			}
		}
		if t.node.host == "" {
			t.node.host = alias
		}
	}
	if t.node.host == "" {
		return t, fmt.Errorf("node %s: %w: no address (set address, or ssh_host naming a Host entry of ~/.ssh/config)", n.Name, errs.ErrBadInput)
	}
	if t.node.port == 0 {
		t.node.port = 22
	}
	if t.node.user == "" {
		t.node.user = proc.LocalUser()
	}
	if len(t.node.identityFiles) == 0 {
		t.node.identityFiles = defaultIdentityFiles()
	}
	if jump != "" && !strings.EqualFold(jump, "none") {
		for _, spec := range strings.Split(jump, ",") {
			hop, err := parseJump(strings.TrimSpace(spec), n, cfg, t.node)
			if err != nil {
				return t, err
			}
			t.jumps = append(t.jumps, hop)
		}
	}
	return t, nil
}

// parseJump reads one "[user@]host[:port]" jump specification. A host that
// names a Host entry of the ssh_config gets its settings from there. Jump
// hosts use the node's user and keys unless told otherwise.
func parseJump(spec string, n Config, cfg *ssh_config.Config, node sshHop) (sshHop, error) {
	bad := func(why string) error {
		return fmt.Errorf("node %s: %w: jump_host %q: %s (want user@host:port)", n.Name, errs.ErrBadInput, spec, why)
	}
	if spec == "" {
		return sshHop{}, bad("empty")
	}
	spec = strings.TrimPrefix(spec, "ssh://")
	hop := sshHop{}
	if i := strings.LastIndexByte(spec, '@'); i >= 0 {
		hop.user, spec = spec[:i], spec[i+1:]
	}
	host, port := spec, ""
	if h, p, err := net.SplitHostPort(spec); err == nil {
		host, port = h, p
	} else if strings.Count(spec, ":") == 1 {
		return sshHop{}, bad(err.Error())
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			return sshHop{}, bad("port " + port + " is not a number from 1 to 65535")
		}
		hop.port = p
	}
	alias := host
	hop.host = host
	hop.label = "jump host " + alias + " for node " + n.Name
	if cfg != nil {
		h := sshHop{}
		applySSHConfig(cfg, alias, &h)
		if h.host != "" {
			hop.host = h.host
		}
		if hop.port == 0 {
			hop.port = h.port
		}
		if hop.user == "" {
			hop.user = h.user
		}
		hop.identityFiles = h.identityFiles
	}
	if hop.host == "" {
		return sshHop{}, bad("no host")
	}
	if hop.port == 0 {
		hop.port = 22
	}
	if hop.user == "" {
		hop.user = node.user
	}
	if len(hop.identityFiles) == 0 {
		hop.identityFiles = node.identityFiles
	}
	return hop, nil
}

// loadSSHConfig reads n.ConfigFile (default ~/.ssh/config). A missing
// default file is no error; a missing file named in the inventory is.
func loadSSHConfig(n Config) (*ssh_config.Config, error) {
	file := n.ConfigFile
	explicit := file != ""
	if !explicit {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, nil
		}
		file = filepath.Join(home, ".ssh", "config")
	}
	file = expandHome(file)
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return nil, nil
		}
		return nil, fmt.Errorf("node %s: %w: ssh_host %q: read ssh config: %w", n.Name, errs.ErrBadInput, n.SSHHost, err)
	}
	defer f.Close()
	cfg, err := ssh_config.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w: ssh config %s: %w", n.Name, errs.ErrBadInput, file, err)
	}
	return cfg, nil
}

func configValue(cfg *ssh_config.Config, alias, key string) string {
	v, err := cfg.Get(alias, key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(v)
}

// applySSHConfig fills the unset fields of h from the Host entry alias.
func applySSHConfig(cfg *ssh_config.Config, alias string, h *sshHop) {
	if h.host == "" {
		if v := configValue(cfg, alias, "HostName"); v != "" {
			h.host = strings.ReplaceAll(v, "%h", alias)
		}
	}
	if h.port == 0 {
		if p, err := strconv.Atoi(configValue(cfg, alias, "Port")); err == nil {
			h.port = p
		}
	}
	if h.user == "" {
		h.user = configValue(cfg, alias, "User")
	}
	if len(h.identityFiles) == 0 {
		files, _ := cfg.GetAll(alias, "IdentityFile")
		for _, f := range files {
			f = strings.TrimSpace(f)
			if f == "" || strings.EqualFold(f, "none") {
				continue
			}
			r := strings.NewReplacer("%d", homeDir(), "%u", proc.LocalUser(), "%h", alias, "%r", h.user, "%%", "%")
			h.identityFiles = append(h.identityFiles, expandHome(r.Replace(f)))
		}
	}
}

func homeDir() string {
	h, _ := os.UserHomeDir()
	return h
}

// expandHome replaces a leading ~/ with the home directory.
func expandHome(p string) string {
	if p == "~" {
		return homeDir()
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(homeDir(), p[2:])
	}
	return p
}

// defaultIdentityFiles are the keys OpenSSH tries when none are configured
// and that exist.
func defaultIdentityFiles() []string {
	home := homeDir()
	if home == "" {
		return nil
	}
	var out []string
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		p := filepath.Join(home, ".ssh", name)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// sshAuth holds the private keys of one node (read once) and whether to ask
// the agent too.
type sshAuth struct {
	signers  []ssh.Signer
	files    []string // the key files that were read, for messages
	useAgent bool
}

// loadAuth reads the identity files of hop. An encrypted key is skipped
// when the agent is in use (it may hold the key); otherwise it is an error,
// since caretaker never asks for passphrases.
func loadAuth(nodeName string, files []string, useAgent bool) (*sshAuth, error) {
	a := &sshAuth{useAgent: useAgent}
	for _, f := range files {
		f = expandHome(f)
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w: identity file: %w; fix identity_files", nodeName, errs.ErrAuth, err)
		}
		s, err := ssh.ParsePrivateKey(pem)
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			if useAgent {
				continue
			}
			return nil, fmt.Errorf("node %s: %w: identity file %s is protected by a passphrase and caretaker does not ask for one; "+
				"add it to ssh-agent (ssh-add %s) and set agent: true", nodeName, errs.ErrAuth, f, f)
		}
		if err != nil {
			return nil, fmt.Errorf("node %s: %w: identity file %s: %w", nodeName, errs.ErrAuth, f, err)
		}
		a.signers = append(a.signers, s)
		a.files = append(a.files, f)
	}
	if useAgent && os.Getenv("SSH_AUTH_SOCK") == "" && len(a.signers) == 0 {
		return nil, fmt.Errorf("node %s: %w: agent: true but SSH_AUTH_SOCK is not set and no identity file is usable; start ssh-agent or list identity_files", nodeName, errs.ErrAuth)
	}
	if !useAgent && len(a.signers) == 0 {
		return nil, fmt.Errorf("node %s: %w: no private key to offer: set identity_files or agent: true", nodeName, errs.ErrAuth)
	}
	return a, nil
}

// methods returns the auth methods for one handshake and a func that
// releases the agent connection once the handshake is over.
func (a *sshAuth) methods() ([]ssh.AuthMethod, func()) {
	if !a.useAgent {
		return []ssh.AuthMethod{ssh.PublicKeys(a.signers...)}, func() {}
	}
	var conn net.Conn
	var cached []ssh.Signer
	cb := func() ([]ssh.Signer, error) {
		if cached != nil {
			return cached, nil
		}
		cached = append([]ssh.Signer(nil), a.signers...)
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return cached, nil
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return cached, nil // the keys from files still count
		}
		conn = c
		if as, err := agent.NewClient(c).Signers(); err == nil {
			cached = append(cached, as...)
		}
		return cached, nil
	}
	return []ssh.AuthMethod{ssh.PublicKeysCallback(cb)}, func() {
		if conn != nil {
			conn.Close()
		}
	}
}

// describe lists what was offered, for authentication errors.
func (a *sshAuth) describe() string {
	parts := append([]string(nil), a.files...)
	if a.useAgent {
		parts = append(parts, "ssh-agent")
	}
	if len(parts) == 0 {
		return "no keys"
	}
	return strings.Join(parts, ", ")
}
