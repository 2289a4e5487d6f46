package builtins

import (
	"fmt"
	"io/fs"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// PlaybookDoc is a playbook's description and parameters as loading it
// declares them (the same runner.Load `caretaker plan` uses).
type PlaybookDoc struct {
	Name        string
	Description string
	Params      []PlaybookParamDoc
}

// PlaybookParamDoc is one param() of a playbook.
type PlaybookParamDoc struct {
	Name string
	// Type is the declared type, or the default's Starlark type.
	Type string
	// Default is the default as a Starlark literal.
	Default string
	Doc     string
	// Accepts says what -p accepts (choices, bounds), as plan shows it.
	Accepts   string
	Resumable bool
}

// docsInventory is the cluster playbooks are loaded against for their
// documentation: servers and agents, so every role selector matches.
const docsInventory = `
clusters:
  - name: docs
    nodes:
      - {name: server-1, address: 10.0.0.1, role: server}
      - {name: server-2, address: 10.0.0.2, role: server}
      - {name: agent-1, address: 10.0.0.11, role: agent}
`

// PlaybookDocs loads each named playbook (NAME.star in fsys, with the
// builtins of Predeclared) and returns what it declares. A top-level
// fail() does not stop it: playbooks refuse to load without a required
// parameter (exec without cmd), and their parameters are what is wanted.
func PlaybookDocs(fsys fs.FS, names []string) ([]PlaybookDoc, error) {
	inv, err := inventory.Parse("docs.yaml", []byte(docsInventory))
	if err != nil {
		return nil, fmt.Errorf("playbook docs: %w", err)
	}
	pre, err := Predeclared()
	if err != nil {
		return nil, fmt.Errorf("playbook docs: %w", err)
	}
	pre["fail"] = NewBuiltin("fail", WhenAny, func(*Call) (any, error) { return nil, nil })
	out := make([]PlaybookDoc, 0, len(names))
	for _, name := range names {
		plan, err := runner.Load(runner.LoadOptions{Name: name, Path: name + ".star", FS: fsys, FSPrefix: "playbooks",
			Predeclared: pre, Cluster: inv.Clusters[0]})
		if err != nil {
			return nil, fmt.Errorf("playbook docs: load %s: %w", name, err)
		}
		doc := PlaybookDoc{Name: name, Description: plan.Description}
		for _, p := range plan.Params {
			typ := p.Type
			if typ == "" {
				typ = p.Default.Type()
			}
			doc.Params = append(doc.Params, PlaybookParamDoc{Name: p.Name, Type: typ, Default: p.Default.String(), Doc: p.Doc, Accepts: p.Want(), Resumable: p.Resumable})
		}
		out = append(out, doc)
	}
	return out, nil
}
