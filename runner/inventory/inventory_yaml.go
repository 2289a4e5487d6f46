package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// invParser walks an inventory file's YAML: mappings with known keys,
// and typed scalars whose errors name the file, line and field.
type invParser struct {
	file string
	dir  string
}

func (p *invParser) errf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Field: field, Problem: fmt.Sprintf(format, args...)}
}

// mapping walks a YAML mapping, refusing keys outside allowed.
func (p *invParser) mapping(n *yaml.Node, field string, allowed []string, fn func(key string, val *yaml.Node, kn *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, field, "must be a mapping with keys: %s", strings.Join(allowed, ", "))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		sub := key
		if field != "" {
			sub = field + "." + key
		}
		ok := false
		for _, a := range allowed {
			if a == key {
				ok = true
			}
		}
		if !ok {
			return p.errf(k, sub, "unknown key %q; allowed here: %s", key, strings.Join(allowed, ", "))
		}
		if seen[key] {
			return p.errf(k, sub, "key %q given twice", key)
		}
		seen[key] = true
		if err := fn(key, v, k); err != nil {
			return err
		}
	}
	return nil
}

// at names a field's place for messages: "FILE:LINE: FIELD".
func (p *invParser) at(n *yaml.Node, field string) string {
	return fmt.Sprintf("%s:%d: %s", p.file, n.Line, field)
}

func (p *invParser) str(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!map" || n.Tag == "!!seq" {
		return "", p.errf(n, field, "must be a string")
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func (p *invParser) boolean(n *yaml.Node, field string) (bool, error) {
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on":
			return true, nil
		case "false", "no", "off":
			return false, nil
		}
	}
	return false, p.errf(n, field, "must be yes or no (true/false), got %q", n.Value)
}

func (p *invParser) port(n *yaml.Node, field string) (int, error) {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 1 || v > 65535 {
		return 0, p.errf(n, field, "must be a port number from 1 to 65535, got %q", n.Value)
	}
	return v, nil
}

func (p *invParser) duration(n *yaml.Node, field string) (Duration, error) {
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || d < 0 {
		return 0, p.errf(n, field, "must be a duration such as 10s, 2m or 1h, got %q", n.Value)
	}
	return Duration(d), nil
}

func (p *invParser) strList(n *yaml.Node, field string) ([]string, error) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, field, "must be a list of strings")
	}
	var out []string
	for i, c := range n.Content {
		s, err := p.str(c, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// path resolves a file path from the inventory: ~ expands to $HOME and a
// relative path is taken from the inventory's directory.
func (p *invParser) path(s string) string {
	if s == "" {
		return ""
	}
	if strings.HasPrefix(s, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, s[2:])
		}
	}
	if filepath.IsAbs(s) {
		return s
	}
	return filepath.Join(p.dir, s)
}
