package k3s

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Kinds of config source a Setting comes from (k3s-ca-rotation.md §7).
const (
	KindUnitArg = "unit-arg" // an ExecStart argument of the unit or a unit drop-in
	KindConfig  = "config"   // config.yaml
	KindDropIn  = "drop-in"  // config.yaml.d/*.yaml|*.yml
	KindEnv     = "env"      // an EnvironmentFile
	KindUnitEnv = "unit-env" // an Environment= line of the unit or a unit drop-in
)

// NamedFile is a file's path and its exact bytes.
type NamedFile struct {
	Path string
	Data []byte
}

// Sources are the files K3s reads its server/agent flags from on one node
// (k3s-ca-rotation.md §7). A nil Unit or Config means the file is absent;
// only files that exist belong in the slices.
type Sources struct {
	// Unit is the systemd unit (/etc/systemd/system/k3s.service).
	Unit     []byte
	UnitPath string
	// UnitDropIns are <unit>.d/*.conf in lexical order; their ExecStart=
	// and Environment= lines count like the unit's.
	UnitDropIns []NamedFile
	// Config is config.yaml (/etc/rancher/k3s/config.yaml).
	Config     []byte
	ConfigPath string
	// DropIns are config.yaml.d/*.yaml and *.yml. Effective sorts them by
	// file name, as K3s reads the directory.
	DropIns []NamedFile
	// EnvFiles are the unit's EnvironmentFile= files in the order the unit
	// lists them (a later file overrides an earlier one).
	EnvFiles []NamedFile
}

// Setting is the effective value of one flag and where it came from.
type Setting struct {
	Key string
	// Value is the effective value: the last one given. For list flags
	// (e.g. "disable") see Values.
	Value string
	// Values are all values given by the winning layer, in order (config
	// values accumulate with `key+:`; repeated CLI args accumulate).
	Values []string
	// Source is the path of the file that set Value; Line is 1-based.
	Source string
	Line   int
	// Kind is one of KindUnitArg, KindConfig, KindDropIn, KindEnv, KindUnitEnv.
	Kind string
	// Shadowed lists lower-precedence sources that also set the key.
	Shadowed []Origin
}

// Origin is a place a key is set, with its value there.
type Origin struct {
	Source string
	Line   int
	Kind   string
	Value  string
}

// Edit is one file change: Before is the exact original content, After the
// new one. Restoring is writing Before back byte for byte.
type Edit struct {
	Path   string
	Before []byte
	After  []byte
	// What says in words what changed, e.g. "removed --server (lines 12-13)".
	What string
}

// EnvKeys maps the K3S_* environment variables K3s reads for server flags
// to the flag names (k3s-ca-rotation.md §7; pkg/cli/cmds/server.go).
var EnvKeys = map[string]string{
	"K3S_URL":                        "server",
	"K3S_TOKEN":                      "token",
	"K3S_TOKEN_FILE":                 "token-file",
	"K3S_AGENT_TOKEN":                "agent-token",
	"K3S_AGENT_TOKEN_FILE":           "agent-token-file",
	"K3S_CLUSTER_INIT":               "cluster-init",
	"K3S_CLUSTER_RESET":              "cluster-reset",
	"K3S_DATA_DIR":                   "data-dir",
	"K3S_CONFIG_FILE":                "config",
	"K3S_NODE_NAME":                  "node-name",
	"K3S_DATASTORE_ENDPOINT":         "datastore-endpoint",
	"K3S_KUBECONFIG_OUTPUT":          "write-kubeconfig",
	"K3S_KUBECONFIG_MODE":            "write-kubeconfig-mode",
	"K3S_SELINUX":                    "selinux",
	"K3S_LB_SERVER_PORT":             "lb-server-port",
	"K3S_RESOLV_CONF":                "resolv-conf",
	"K3S_DATASTORE_CAFILE":           "datastore-cafile",
	"K3S_DATASTORE_CERTFILE":         "datastore-certfile",
	"K3S_DATASTORE_KEYFILE":          "datastore-keyfile",
	"K3S_CLUSTER_RESET_RESTORE_PATH": "cluster-reset-restore-path",
}

// ErrTokenFromFile says the token comes from --token-file/K3S_TOKEN_FILE,
// whose target file ReplaceToken does not edit.
var ErrTokenFromFile = errors.New("the token is read from a token file")

// ErrConfigPathMismatch says the sources name another config file than the
// one given in Sources.ConfigPath (--config or K3S_CONFIG_FILE).
var ErrConfigPathMismatch = errors.New("the node reads another config file")

// flagAliases maps the short names of K3s server/agent flags to their long
// names (pkg/cli/cmds).
var flagAliases = map[string]string{
	"s": "server",
	"t": "token",
	"d": "data-dir",
	"c": "config",
	"o": "write-kubeconfig",
}

// valueFlags always take a value, even one starting with '-'.
var valueFlags = map[string]bool{
	"server": true, "token": true, "token-file": true, "agent-token": true, "agent-token-file": true,
	"data-dir": true, "config": true, "node-name": true, "node-ip": true, "node-external-ip": true,
	"datastore-endpoint": true, "write-kubeconfig": true, "write-kubeconfig-mode": true, "tls-san": true,
	"advertise-address": true, "bind-address": true, "cluster-cidr": true, "service-cidr": true,
	"cluster-domain": true, "flannel-backend": true, "disable": true, "node-label": true, "node-taint": true,
	"kube-apiserver-arg": true, "kubelet-arg": true, "etcd-arg": true, "kube-controller-manager-arg": true,
	"kube-scheduler-arg": true, "kube-proxy-arg": true, "https-listen-port": true, "log": true, "v": true,
	"cluster-reset-restore-path": true, "default-local-storage-path": true, "resolv-conf": true,
}

// boolFlags never take a separate value (Go flag syntax: --flag or --flag=false).
var boolFlags = map[string]bool{
	"cluster-init": true, "cluster-reset": true, "disable-agent": true, "disable-etcd": true,
	"disable-apiserver": true, "disable-controller-manager": true, "disable-scheduler": true,
	"disable-cloud-controller": true, "disable-kube-proxy": true, "disable-network-policy": true,
	"disable-helm-controller": true, "disable-apiserver-lb": true, "secrets-encryption": true,
	"embedded-registry": true, "supervisor-metrics": true, "etcd-expose-metrics": true,
	"etcd-disable-snapshots": true, "etcd-snapshot-compress": true, "etcd-s3": true,
	"etcd-s3-insecure": true, "etcd-s3-skip-ssl-verify": true, "debug": true, "rootless": true,
	"prefer-bundled-bin": true, "selinux": true, "protect-kernel-defaults": true,
	"flannel-ipv6-masq": true, "flannel-external-ip": true, "enable-pprof": true, "docker": true,
	"with-node-id": true, "kine-tls": true, "tls-san-security": true, "nonroot-devices": true,
	"disable-default-registry-endpoint": true, "help": true, "h": true, "alsologtostderr": true,
}

// unitFlag is one flag occurrence in a unit's ExecStart.
type unitFlag struct {
	name  string // long name
	value string
	words []int // word indexes: the flag, and its value word if separate
	line  int
}

// parseUnitFlags reads the flags after the subcommand of an ExecStart argv
// with Go flag syntax (-f, --f, -f=v, --f=v, "--" ends flags).
func parseUnitFlags(words []UnitArg) []unitFlag {
	var out []unitFlag
	i := 1
	// Skip global flags before the subcommand ("k3s --debug server ...").
	for i < len(words) && strings.HasPrefix(words[i].Value, "-") && words[i].Value != "--" {
		i++
	}
	i++ // the subcommand
	for ; i < len(words); i++ {
		v := words[i].Value
		if v == "--" {
			break
		}
		if !strings.HasPrefix(v, "-") || v == "-" {
			continue
		}
		name := strings.TrimLeft(v, "-")
		f := unitFlag{words: []int{i}, line: words[i].Line}
		if n, val, ok := strings.Cut(name, "="); ok {
			f.name, f.value = n, val
		} else {
			f.name = name
			long := name
			if a, ok := flagAliases[name]; ok {
				long = a
			}
			takes := valueFlags[long] || (!boolFlags[long] && i+1 < len(words) && !strings.HasPrefix(words[i+1].Value, "-"))
			if boolFlags[long] {
				takes = false
			}
			if takes && i+1 < len(words) {
				f.value = words[i+1].Value
				f.words = append(f.words, i+1)
				i++
			} else if boolFlags[long] {
				f.value = "true"
			}
		}
		if a, ok := flagAliases[f.name]; ok {
			f.name = a
		}
		out = append(out, f)
	}
	return out
}

// unitFile is a parsed unit or unit drop-in.
type unitFile struct {
	path  string
	data  []byte
	dirs  []unitDirective
	lines []unitLine
}

// envWord is one KEY=VALUE word of an Environment= directive.
type envWord struct {
	file, dir, word int
	key, value      string
	line            int
}

// sourceSet is Sources parsed once.
type sourceSet struct {
	units    []unitFile
	config   []NamedFile // config.yaml then drop-ins in K3s order
	kinds    []string
	cfgEnts  [][]configEntry
	envFiles []NamedFile
	envEnts  [][]envAssign
}

func parseSources(src Sources) (*sourceSet, error) {
	s := &sourceSet{}
	if len(src.Unit) > 0 {
		s.units = append(s.units, unitFile{path: src.UnitPath, data: src.Unit})
	}
	dropins := append([]NamedFile{}, src.UnitDropIns...)
	sort.SliceStable(dropins, func(i, j int) bool { return path.Base(dropins[i].Path) < path.Base(dropins[j].Path) })
	for _, d := range dropins {
		s.units = append(s.units, unitFile{path: d.Path, data: d.Data})
	}
	for i := range s.units {
		dirs, lines, err := parseUnit(s.units[i].data)
		if err != nil {
			return nil, fmt.Errorf("read unit %s: %w; fix the unit file", s.units[i].path, err)
		}
		s.units[i].dirs, s.units[i].lines = dirs, lines
	}
	if src.Config != nil {
		s.config = append(s.config, NamedFile{Path: src.ConfigPath, Data: src.Config})
		s.kinds = append(s.kinds, KindConfig)
	}
	cd := append([]NamedFile{}, src.DropIns...)
	sort.SliceStable(cd, func(i, j int) bool { return path.Base(cd[i].Path) < path.Base(cd[j].Path) })
	for _, d := range cd {
		if !IsConfigDropIn(d.Path) {
			continue
		}
		s.config = append(s.config, d)
		s.kinds = append(s.kinds, KindDropIn)
	}
	for _, f := range s.config {
		ents, _, err := parseConfig(f.Data)
		if err != nil {
			return nil, fmt.Errorf("read config %s: %w; fix the YAML", f.Path, err)
		}
		s.cfgEnts = append(s.cfgEnts, ents)
	}
	for _, f := range src.EnvFiles {
		ents, err := parseEnvFile(f.Data)
		if err != nil {
			return nil, fmt.Errorf("read env file %s: %w; fix the file", f.Path, err)
		}
		s.envFiles = append(s.envFiles, f)
		s.envEnts = append(s.envEnts, ents)
	}
	return s, nil
}

// IsConfigDropIn reports whether a file in config.yaml.d is read by K3s
// (*.yaml or *.yml, case-insensitive; pkg/configfilearg dotDFiles).
func IsConfigDropIn(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")
}

// ConfigDropInDir is the drop-in directory K3s reads for a config file.
func ConfigDropInDir(configPath string) string { return configPath + ".d" }

// unitEnv returns the effective Environment= words across unit files: an
// empty Environment= resets; later assignments of a key win.
func (s *sourceSet) unitEnv() []envWord {
	var out []envWord
	for fi, u := range s.units {
		for di, d := range u.dirs {
			if d.section != "Service" || d.key != "Environment" {
				continue
			}
			if d.empty {
				out = nil
				continue
			}
			for wi, w := range d.words {
				k, v, ok := strings.Cut(w.Value, "=")
				if !ok {
					continue
				}
				out = append(out, envWord{file: fi, dir: di, word: wi, key: k, value: v, line: w.Line})
			}
		}
	}
	return out
}

// Effective merges the sources in K3s's precedence: CLI args in the unit >
// config.yaml and its drop-ins (lexical order, last value wins, `key+:`
// appends) > environment (EnvironmentFile over Environment=, a later file
// over an earlier one) (k3s-ca-rotation.md §7 "Precedence"). Every key
// present in any source is returned, including empty values (an empty
// `server: ""` still overrides K3S_URL). When the unit or the environment
// names another config file than src.ConfigPath it fails with
// ErrConfigPathMismatch, since the result would describe the wrong file.
func Effective(src Sources) (map[string]Setting, error) {
	s, err := parseSources(src)
	if err != nil {
		return nil, err
	}
	out := map[string]Setting{}
	// Environment layer (lowest).
	envLayer := map[string]Setting{}
	for _, w := range s.unitEnv() {
		if flag, ok := EnvKeys[w.key]; ok {
			envLayer[flag] = shadowKeep(envLayer[flag], Setting{Key: flag, Value: w.value, Values: []string{w.value}, Source: s.units[w.file].path, Line: w.line, Kind: KindUnitEnv})
		}
	}
	for fi, ents := range s.envEnts {
		for _, a := range ents {
			if flag, ok := EnvKeys[a.key]; ok {
				envLayer[flag] = shadowKeep(envLayer[flag], Setting{Key: flag, Value: a.value, Values: []string{a.value}, Source: s.envFiles[fi].Path, Line: a.line, Kind: KindEnv})
			}
		}
	}
	// Config layer.
	cfgLayer := map[string]Setting{}
	for fi, ents := range s.cfgEnts {
		for _, e := range ents {
			prev, had := cfgLayer[e.key]
			st := Setting{Key: e.key, Source: s.config[fi].Path, Line: e.line, Kind: s.kinds[fi]}
			if had && e.append {
				st.Values = append(append([]string{}, prev.Values...), e.values...)
			} else {
				st.Values = append([]string{}, e.values...)
			}
			if len(st.Values) > 0 {
				st.Value = st.Values[len(st.Values)-1]
			}
			cfgLayer[e.key] = shadowKeep(prev, st)
		}
	}
	// CLI layer.
	cliLayer := map[string]Setting{}
	if es, ok := effectiveExecStart(s.unitDirs()); ok {
		for _, f := range parseUnitFlags(es.dir.words) {
			prev := cliLayer[f.name]
			st := Setting{Key: f.name, Value: f.value, Values: append(append([]string{}, prev.Values...), f.value), Source: s.units[es.file].path, Line: f.line, Kind: KindUnitArg}
			cliLayer[f.name] = shadowKeep(prev, st)
		}
	}
	for k, v := range envLayer {
		out[k] = v
	}
	for k, v := range cfgLayer {
		if e, ok := out[k]; ok {
			v = shadow(v, e)
		}
		out[k] = v
	}
	for k, v := range cliLayer {
		if c, ok := out[k]; ok {
			if c.Kind == KindConfig || c.Kind == KindDropIn {
				// urfave/cli accumulates list flags from config and CLI.
				v.Values = append(append([]string{}, c.Values...), v.Values...)
			}
			v = shadow(v, c)
		}
		out[k] = v
	}
	if c, ok := out["config"]; ok && c.Value != "" && src.ConfigPath != "" && path.Clean(c.Value) != path.Clean(src.ConfigPath) {
		return out, fmt.Errorf("%w: %s (%s line %d) names %s but %s was read; read that file instead", ErrConfigPathMismatch, c.Kind, c.Source, c.Line, c.Value, src.ConfigPath)
	}
	return out, nil
}

func (s *sourceSet) unitDirs() [][]unitDirective {
	var out [][]unitDirective
	for _, u := range s.units {
		out = append(out, u.dirs)
	}
	return out
}

// shadowKeep makes next the winner over prev (if prev is set).
func shadowKeep(prev, next Setting) Setting {
	if prev.Key == "" {
		return next
	}
	return shadow(next, prev)
}

// shadow records lower (and what it shadowed) under winner.
func shadow(winner, lower Setting) Setting {
	sh := append([]Origin{}, winner.Shadowed...)
	sh = append(sh, Origin{Source: lower.Source, Line: lower.Line, Kind: lower.Kind, Value: lower.Value})
	sh = append(sh, lower.Shadowed...)
	winner.Shadowed = sh
	return winner
}

// SettingValue returns the effective value of key, "" when unset.
func SettingValue(m map[string]Setting, key string) string { return m[key].Value }
