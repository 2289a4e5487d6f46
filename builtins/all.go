package builtins

import (
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// modules are the Starlark modules every playbook sees besides Core.
var modules = []*starlarkstruct.Module{Assert, K3s, K8s}

// Predeclared returns everything playbooks see: Core and every module
// (assert, k3s, k8s, ...).
func Predeclared() (starlark.StringDict, error) { return All(modules...) }
