package runner

import (
	"fmt"
	"sort"
	"strings"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// checkModuleAttrs refuses, before anything runs, a reference to a member
// a builtin module does not have (k3s.rotate_cert, json.dump): Starlark
// resolves names when a file loads but attributes only when the line runs,
// which for a step body is after earlier steps changed the cluster. Only
// predeclared modules are checked (a name the file binds itself may be
// anything); values whose attributes depend on the value (a node, a
// result) are not modules and are left alone.
func checkModuleAttrs(f *syntax.File, predeclared starlark.StringDict) error {
	var bad *PlaybookError
	syntax.Walk(f, func(n syntax.Node) bool {
		if bad != nil {
			return false
		}
		dot, ok := n.(*syntax.DotExpr)
		if !ok {
			return true
		}
		id, ok := dot.X.(*syntax.Ident)
		if !ok {
			return true
		}
		if b, ok := id.Binding.(*resolve.Binding); !ok || b.Scope != resolve.Predeclared {
			return true
		}
		mod, ok := predeclared[id.Name].(starlark.HasAttrs)
		if !ok {
			return true
		}
		names := mod.AttrNames()
		for _, a := range names {
			if a == dot.Name.Name {
				return true
			}
		}
		sorted := append([]string(nil), names...)
		sort.Strings(sorted)
		bad = &PlaybookError{
			Pos: dot.Name.NamePos.String(),
			Msg: fmt.Sprintf("%s has no member %q (it has: %s); see `caretaker docs %s`", id.Name, dot.Name.Name, strings.Join(sorted, ", "), id.Name),
		}
		return false
	})
	if bad != nil {
		return bad
	}
	return nil
}
