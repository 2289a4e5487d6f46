package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/caretaker/caretaker/runner/errs"
)

// Error reports a problem in an inventory file: which file, line
// and field, and what is allowed there.
type Error struct {
	File    string
	Line    int
	Field   string // dotted path, e.g. clusters[0].nodes[2].role
	Problem string // what is wrong and what is allowed
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Problem)
	}
	return fmt.Sprintf("%s: %s", loc, e.Problem)
}

// Is makes errors.Is(err, ErrBadInput) true.
func (e *Error) Is(target error) bool { return target == errs.ErrBadInput }

// Load reads and validates an inventory file. Relative paths in it
// (identity files, known_hosts) are resolved against the file's directory.
// Unknown keys are errors.
func Load(path string) (*Inventory, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("inventory %s is a directory; give the inventory file with -i FILE (for a lab: DIR/inventory.yaml): %w", path, errs.ErrBadInput)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w; give the inventory file with -i FILE: %w", err, errs.ErrBadInput)
	}
	return Parse(path, data)
}

// Parse parses inventory YAML; path is used for messages and to
// resolve relative paths.
func Parse(path string, data []byte) (*Inventory, error) {
	p := &invParser{file: path, dir: filepath.Dir(path)}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: path, Problem: "the inventory is empty; it needs a top-level 'clusters:' list (see README.md, Inventory)"}
		}
		return nil, yamlError(path, data, err)
	}
	// "---" alone is a document holding null (FuzzParse found its error
	// pointing at line 2 of a one-line file): as empty as no document.
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
		return nil, &Error{File: path, Problem: "the inventory is empty; it needs a top-level 'clusters:' list (see README.md, Inventory)"}
	}
	inv := &Inventory{Path: path}
	if err := p.inventory(doc.Content[0], inv); err != nil {
		return nil, err
	}
	return inv, nil
}

// hasServer says whether nodes include a server.
func hasServer(nodes []*Node) bool {
	for _, n := range nodes {
		if n.Role == RoleServer {
			return true
		}
	}
	return false
}

// yamlError turns a YAML syntax error into an Error on the line where
// the problem is. yaml.v3 reports the line of the enclosing block for many
// errors ("did not find expected key" on the line before the block), so
// the line is found again: a tab in indentation directly, otherwise as the
// first line whose prefix of the file no longer parses.
func yamlError(path string, data []byte, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	line := 0
	if strings.HasPrefix(msg, "yaml: line ") {
		rest := strings.TrimPrefix(msg, "yaml: line ")
		if i := strings.Index(rest, ":"); i > 0 {
			line, _ = strconv.Atoi(rest[:i])
			msg = strings.TrimSpace(rest[i+1:])
		}
	}
	lines := strings.SplitAfter(string(data), "\n")
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(msg, "tab") && strings.Contains(indent, "\t") {
			return &Error{File: path, Line: i + 1, Problem: fmt.Sprintf("not valid YAML: a tab in the indentation (column %d); YAML indents with spaces only", strings.Index(indent, "\t")+1)}
		}
	}
	if first := firstFailingLine(lines); first > 0 {
		line = first
	}
	return &Error{File: path, Line: line, Problem: "not valid YAML: " + msg}
}

// firstFailingLine is the smallest n such that the first n lines do not
// parse (0 when every prefix parses), by bisection: a YAML prefix that
// fails keeps failing as lines are added.
func firstFailingLine(lines []string) int {
	fails := func(n int) bool {
		var doc yaml.Node
		err := yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &doc)
		return err != nil
	}
	if !fails(len(lines)) {
		return 0
	}
	lo, hi := 0, len(lines) // fails(hi); !fails(lo) (the empty prefix parses)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

func (p *invParser) inventory(n *yaml.Node, inv *Inventory) error {
	var clusters *yaml.Node
	err := p.mapping(n, "", []string{"clusters"}, func(key string, v, _ *yaml.Node) error {
		clusters = v
		return nil
	})
	if err != nil {
		return err
	}
	if clusters == nil || clusters.Kind != yaml.SequenceNode || len(clusters.Content) == 0 {
		return p.errf(n, "clusters", "must be a non-empty list of clusters, each with name, ssh and nodes")
	}
	names := map[string]int{}
	for i, c := range clusters.Content {
		field := fmt.Sprintf("clusters[%d]", i)
		cl, err := p.cluster(c, field)
		if err != nil {
			return err
		}
		if prev, dup := names[cl.Name]; dup {
			return p.errf(c, field+".name", "cluster %q is declared twice (first on line %d); names must be unique", cl.Name, prev)
		}
		names[cl.Name] = c.Line
		inv.Clusters = append(inv.Clusters, cl)
	}
	return nil
}

func (p *invParser) cluster(n *yaml.Node, field string) (*Cluster, error) {
	cl := &Cluster{Line: n.Line}
	var nodes *yaml.Node
	err := p.mapping(n, field, []string{"name", "ssh", "k3s", "kubeconfigs", "nodes"}, func(key string, v, _ *yaml.Node) error {
		var err error
		switch key {
		case "name":
			cl.Name, err = p.str(v, field+".name")
		case "kubeconfigs":
			cl.Kubeconfigs, err = p.kubeconfigs(v, field+".kubeconfigs")
		case "ssh":
			err = p.ssh(v, field+".ssh", &cl.SSH)
		case "k3s":
			err = p.k3s(v, field+".k3s", &cl.K3s)
		case "nodes":
			nodes = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if cl.Name == "" {
		return nil, p.errf(n, field+".name", "is required: give the cluster a name")
	}
	if nodes == nil || nodes.Kind != yaml.SequenceNode || len(nodes.Content) == 0 {
		return nil, p.errf(n, field+".nodes", "must be a non-empty list of nodes")
	}
	seen := map[string]int{}
	for i, nn := range nodes.Content {
		nf := fmt.Sprintf("%s.nodes[%d]", field, i)
		node, err := p.node(nn, nf, cl)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[node.Name]; dup {
			return nil, p.errf(nn, nf+".name", "node %q is declared twice (first on line %d); names must be unique in a cluster", node.Name, prev)
		}
		seen[node.Name] = nn.Line
		cl.Nodes = append(cl.Nodes, node)
	}
	if !hasServer(cl.Nodes) {
		return nil, p.errf(nodes, field+".nodes", "cluster %q has no server (every node has role: agent); a K3s cluster has at least one server, and caretaker reaches the datastore and the cluster lock through one: mark the server nodes with role: server", cl.Name)
	}
	return cl, nil
}

// kubeconfigs reads the cluster's kubeconfig files on the controller:
// each must exist and be a regular file.
func (p *invParser) kubeconfigs(n *yaml.Node, field string) ([]string, error) {
	l, err := p.strList(n, field)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, x := range l {
		f := fmt.Sprintf("%s[%d]", field, i)
		path := p.path(x)
		st, err := os.Stat(path)
		switch {
		case err != nil:
			return nil, p.errf(n, f, "%s: %v (list the kubeconfig files on this machine that caretaker refreshes after a CA rotation)", path, errors.Unwrap(err))
		case !st.Mode().IsRegular():
			return nil, p.errf(n, f, "%s is not a regular file", path)
		}
		out = append(out, path)
	}
	return out, nil
}
