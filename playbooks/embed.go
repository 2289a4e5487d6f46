// Package playbooks holds the playbooks shipped inside the caretaker binary.
// Each <name>.star can be run by name (`caretaker run rotate-ca`); modules
// they share live beside them and are reached with load(). Every playbook
// has a <name>_test.star run by the package's tests.
package playbooks

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.star
var files embed.FS

// FS is the embedded playbook directory.
var FS fs.FS = files

// Names lists the shipped playbooks: every .star file that is neither a
// test (_test.star) nor a shared module (lib_*.star).
func Names() []string {
	entries, _ := fs.ReadDir(files, ".")
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".star") || strings.HasSuffix(n, "_test.star") || strings.HasPrefix(n, "lib_") {
			continue
		}
		out = append(out, strings.TrimSuffix(n, ".star"))
	}
	sort.Strings(out)
	return out
}

// Has reports whether name is a shipped playbook.
func Has(name string) bool {
	for _, n := range Names() {
		if n == name {
			return true
		}
	}
	return false
}
