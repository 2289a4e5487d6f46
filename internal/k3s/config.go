package k3s

import (
	"errors"
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
// (k3s-ca-rotation.md §7). Empty Data with a Path means "absent".
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

// Effective merges the sources in K3s's precedence: CLI args in the unit >
// config.yaml and its drop-ins (lexical order, last value wins, `key+:`
// appends) > environment (EnvironmentFile over Environment=, later file over
// earlier) (k3s-ca-rotation.md §7 "Precedence"). Every key present in any
// source is returned, including empty values (an empty `server: ""` still
// overrides K3S_URL).
func Effective(src Sources) (map[string]Setting, error) {
	return nil, errors.New("not implemented yet")
}

// StripServer removes `server` from every source that sets it to a
// non-empty value: the config.yaml/drop-in key (other bytes kept), the
// --server/-s unit args with their value (install.sh layout kept valid), and
// K3S_URL lines of env files and Environment= lines. It returns one Edit per
// changed file (k3s-ca-rotation.md §7, §9 "Pre-fix workaround").
func StripServer(src Sources) ([]Edit, error) {
	return nil, errors.New("not implemented yet")
}

// ReplaceToken replaces the token wherever it is set to a non-empty value:
// config key `token`, unit args --token/-t, K3S_TOKEN in env files and
// Environment= lines. When the only token source is --token-file or
// K3S_TOKEN_FILE it returns an error wrapping ErrTokenFromFile that names
// the file to update. With no token source at all it returns no edits.
func ReplaceToken(src Sources, newToken string) ([]Edit, error) {
	return nil, errors.New("not implemented yet")
}
