package k3s

import "errors"

// UnitArg is one word of a unit's ExecStart command line.
type UnitArg struct {
	// Value is the word after unquoting.
	Value string
	// Raw is the word as written in the file.
	Raw string
	// Line is the 1-based line the word is on.
	Line int
	// Start and End are byte offsets of Raw in the file.
	Start, End int
}

// ParseUnitArgs returns the words of the effective ExecStart= of a systemd
// unit (the last non-empty one after the last reset), argv[0] included,
// following systemd quoting (single and double quotes, backslash
// continuation lines, %% for %). It handles the install.sh layout
// (k3s-ca-rotation.md §7): `ExecStart=/usr/local/bin/k3s \`, `    server \`,
// then one tab-indented single-quoted arg per line ending in ` \`, then a
// blank line. With no ExecStart it returns no words and no error.
func ParseUnitArgs(unit []byte) ([]UnitArg, error) {
	return nil, errors.New("not implemented yet")
}

// WriteUnit renders a systemd unit exactly as install.sh writes it for
// `k3s <subcommand> <args...>`, with EnvironmentFile=-/etc/default/%N,
// -/etc/sysconfig/%N and -<envFile> (envFile is usually
// /etc/systemd/system/k3s.service.env).
func WriteUnit(subcommand string, args []string, envFile string) []byte {
	return nil
}

// UnitEnvironmentFiles returns the EnvironmentFile= paths of a unit in order,
// with the leading "-" removed and %N expanded to service.
func UnitEnvironmentFiles(unit []byte, service string) []string {
	return nil
}
