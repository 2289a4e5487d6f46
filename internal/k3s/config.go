package k3s

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
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

// StripServer removes `server` from every source that sets it to a
// non-empty value: the config.yaml/drop-in key (every other byte kept), the
// --server/-s unit args with their value (install.sh layout kept valid),
// K3S_URL lines of env files and K3S_URL words of Environment= lines. It
// returns one Edit per changed file, Before holding the exact original
// bytes (k3s-ca-rotation.md §7, §9 "Pre-fix workaround"). Restoring is
// writing every Before back.
func StripServer(src Sources) ([]Edit, error) {
	return StripKey(src, "server")
}

// flagEnvNames returns the env variables that set a flag.
func flagEnvNames(flag string) []string {
	var out []string
	for k, v := range EnvKeys {
		if v == flag {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// StripKey removes a flag from every source that sets it to a non-empty
// value, like StripServer.
func StripKey(src Sources, flag string) ([]Edit, error) {
	s, err := parseSources(src)
	if err != nil {
		return nil, err
	}
	envNames := flagEnvNames(flag)
	var edits []Edit
	for _, u := range s.units {
		data := u.data
		var what []string
		// Edit directives from the last so offsets stay valid.
		for di := len(u.dirs) - 1; di >= 0; di-- {
			d := u.dirs[di]
			if d.section != "Service" {
				continue
			}
			drop := map[int]bool{}
			switch d.key {
			case "ExecStart":
				if d.empty {
					continue
				}
				for _, f := range parseUnitFlags(d.words) {
					if f.name == flag && f.value != "" {
						for _, w := range f.words {
							drop[w] = true
						}
						what = append(what, fmt.Sprintf("removed %s from ExecStart (line %d)", d.words[f.words[0]].Value, f.line))
					}
				}
			case "Environment":
				for wi, w := range d.words {
					k, v, _ := strings.Cut(w.Value, "=")
					if slices.Contains(envNames, k) && v != "" {
						drop[wi] = true
						what = append(what, fmt.Sprintf("removed %s from Environment= (line %d)", k, w.Line))
					}
				}
			}
			if len(drop) > 0 {
				data = removeUnitWords(data, u.lines, d, drop)
				// Offsets of earlier directives are unchanged.
			}
		}
		if !bytes.Equal(data, u.data) {
			edits = append(edits, Edit{Path: u.path, Before: u.data, After: data, What: strings.Join(reverse(what), "; ")})
		}
	}
	for fi, f := range s.config {
		out, ranges, err := configRemoveKeys(f.Data, func(e configEntry) bool { return e.key == flag && e.nonEmpty() })
		if err != nil {
			return nil, fmt.Errorf("edit %s: %w; edit it by hand", f.Path, err)
		}
		if !bytes.Equal(out, f.Data) {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: out, What: fmt.Sprintf("removed %s key from %s (lines %s)", flag, s.kinds[fi], formatRanges(ranges))})
		}
	}
	for fi, f := range s.envFiles {
		var drop []envAssign
		var lines []string
		for _, a := range s.envEnts[fi] {
			if slices.Contains(envNames, a.key) && a.value != "" {
				drop = append(drop, a)
				lines = append(lines, fmt.Sprintf("%s line %d", a.key, a.line))
			}
		}
		if len(drop) > 0 {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: envRemove(f.Data, drop), What: "removed " + strings.Join(lines, ", ")})
		}
	}
	return edits, nil
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func formatRanges(r [][2]int) string {
	var parts []string
	for _, x := range r {
		if x[0] == x[1] {
			parts = append(parts, fmt.Sprint(x[0]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", x[0], x[1]))
		}
	}
	return strings.Join(parts, ", ")
}

// ReplaceToken replaces the token wherever it is set to a non-empty value:
// config key `token`, unit args --token/-t, K3S_TOKEN in env files and in
// Environment= lines (used when the cluster root CA changes and a node has
// a secure token; k3s-ca-rotation.md §3 "Tokens after rotation", §5
// "Documented procedure"). When no token is set that way but --token-file or
// K3S_TOKEN_FILE is, it fails with an error wrapping ErrTokenFromFile that
// names the file to update. With no token source at all it returns no
// edits. Error messages never contain a token.
func ReplaceToken(src Sources, newToken string) ([]Edit, error) {
	if newToken == "" {
		return nil, errors.New("replace token: the new token is empty")
	}
	s, err := parseSources(src)
	if err != nil {
		return nil, err
	}
	var edits []Edit
	found := false
	for _, u := range s.units {
		data := u.data
		var what []string
		for di := len(u.dirs) - 1; di >= 0; di-- {
			d := u.dirs[di]
			if d.section != "Service" {
				continue
			}
			type rep struct {
				w   UnitArg
				raw string
			}
			var reps []rep
			switch d.key {
			case "ExecStart":
				if d.empty {
					continue
				}
				for _, f := range parseUnitFlags(d.words) {
					if f.name != "token" || f.value == "" {
						continue
					}
					if len(f.words) == 2 {
						w := d.words[f.words[1]]
						reps = append(reps, rep{w, quoteUnitLike(w.Raw, newToken)})
					} else {
						w := d.words[f.words[0]]
						n, _, _ := strings.Cut(w.Value, "=")
						reps = append(reps, rep{w, quoteUnitLike(w.Raw, n+"="+newToken)})
					}
					what = append(what, fmt.Sprintf("replaced the --token value in ExecStart (line %d)", f.line))
				}
			case "Environment":
				for _, w := range d.words {
					k, v, _ := strings.Cut(w.Value, "=")
					if k == "K3S_TOKEN" && v != "" {
						reps = append(reps, rep{w, quoteUnitLike(w.Raw, "K3S_TOKEN="+newToken)})
						what = append(what, fmt.Sprintf("replaced K3S_TOKEN in Environment= (line %d)", w.Line))
					}
				}
			}
			for ri := len(reps) - 1; ri >= 0; ri-- {
				r := reps[ri]
				data = bytes.Join([][]byte{data[:r.w.Start], []byte(r.raw), data[r.w.End:]}, nil)
			}
		}
		if len(what) > 0 {
			found = true
		}
		if !bytes.Equal(data, u.data) {
			edits = append(edits, Edit{Path: u.path, Before: u.data, After: data, What: strings.Join(reverse(what), "; ")})
		}
	}
	for fi, f := range s.config {
		out, lines, err := configReplaceValue(f.Data, func(e configEntry) bool { return e.key == "token" && e.nonEmpty() }, newToken)
		if err != nil {
			return nil, fmt.Errorf("edit %s: %w; edit the token by hand", f.Path, err)
		}
		if len(lines) > 0 {
			found = true
		}
		if !bytes.Equal(out, f.Data) {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: out, What: fmt.Sprintf("replaced the token in %s (line %s)", s.kinds[fi], joinInts(lines))})
		}
	}
	for fi, f := range s.envFiles {
		data := f.Data
		var what []string
		ents := s.envEnts[fi]
		for ai := len(ents) - 1; ai >= 0; ai-- {
			a := ents[ai]
			if a.key == "K3S_TOKEN" && a.value != "" {
				data = envReplaceValue(data, a, newToken)
				what = append(what, fmt.Sprintf("K3S_TOKEN line %d", a.line))
			}
		}
		if len(what) > 0 {
			found = true
		}
		if !bytes.Equal(data, f.Data) {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: data, What: "replaced " + strings.Join(reverse(what), ", ")})
		}
	}
	if !found {
		eff, err := Effective(src)
		if err != nil && !errors.Is(err, ErrConfigPathMismatch) {
			return nil, err
		}
		if tf, ok := eff["token-file"]; ok && tf.Value != "" {
			return nil, fmt.Errorf("replace token: %w %s (set by %s line %d); write the new token into that file", ErrTokenFromFile, tf.Value, tf.Source, tf.Line)
		}
	}
	return edits, nil
}

func joinInts(v []int) string {
	sort.Ints(v)
	var p []string
	for _, x := range v {
		p = append(p, fmt.Sprint(x))
	}
	return strings.Join(p, ", ")
}
