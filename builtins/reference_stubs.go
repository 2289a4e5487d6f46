package builtins

import (
	"fmt"
	"io"
	"strings"
)

// StubsCommand writes the editor stubs.
const StubsCommand = "caretaker docs --stubs > __builtins__.pyi"

// pyWords translate the reference's type words into Python type hints;
// other words are result structs (CamelCase classes).
var pyWords = map[string]string{
	"str": "str", "int": "int", "bool": "bool", "float": "float", "None": "None", "list": "list", "dict": "dict",
	"any": "Any", "callable": "Callable[..., Any]", "node": "Node", "struct": "Any", "kwargs": "Any",
	"selector": "str | Node | list[str | Node]", "duration": "str | int | float",
}

// pyClass is the stub class of a struct or value name: ca_set → CaSet.
func pyClass(name string) string {
	var b strings.Builder
	for _, part := range strings.Split(name, "_") {
		b.WriteString(upperFirst(part))
	}
	return b.String()
}

// pyType is a reference type as a Python type hint.
func pyType(t string) string {
	return typeWordRe.ReplaceAllStringFunc(t, func(w string) string {
		if p, ok := pyWords[w]; ok {
			return p
		}
		return pyClass(w)
	})
}

// pyDoc is a docstring body, indented.
func pyDoc(text, indent string) string {
	text = strings.ReplaceAll(text, `\`, `\\`)
	text = strings.ReplaceAll(text, `"""`, `\"\"\"`)
	if strings.HasSuffix(text, `"`) {
		text = strings.TrimSuffix(text, `"`) + `\"`
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) == 1 {
		return indent + `"""` + lines[0] + `"""` + "\n"
	}
	var b strings.Builder
	b.WriteString(indent + `"""` + lines[0] + "\n")
	for _, l := range lines[1:] {
		if l == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(indent + l + "\n")
	}
	b.WriteString(indent + `"""` + "\n")
	return b.String()
}

// entryDoc is the docstring of an entry.
func entryDoc(e *RefEntry) string {
	parts := []string{upperFirst(e.Summary) + "."}
	if e.Doc != "" {
		parts = append(parts, wrap(e.Doc, "", 76))
	}
	for _, p := range e.Params {
		parts = append(parts, wrap(fmt.Sprintf("%s: %s", p.Name, p.Doc), "", 76))
	}
	parts = append(parts, wrap("Check mode: "+e.Check, "", 76))
	if e.Example != "" {
		parts = append(parts, "Example:\n    "+strings.ReplaceAll(e.Example, "\n", "\n    "))
	}
	return strings.Join(parts, "\n\n")
}

// pyParams is the parameter list of a def.
func pyParams(params []RefParam, self bool) string {
	var out []string
	if self {
		out = append(out, "self")
	}
	positional, kwOnly := false, false
	for i, p := range params {
		if p.Positional {
			positional = true
		} else if positional {
			out = append(out, "/")
			positional = false
		}
		if p.KwOnly && !kwOnly {
			out = append(out, "*")
			kwOnly = true
		}
		s := p.Name + ": " + pyType(p.Type)
		switch {
		case p.Variadic && p.Type == "kwargs":
			s = "**" + p.Name + ": Any"
		case p.Variadic:
			s = "*" + p.Name + ": " + pyType(p.Type)
		case p.Default != "":
			s += " = " + p.Default
		}
		out = append(out, s)
		if positional && i == len(params)-1 {
			out = append(out, "/")
		}
	}
	return strings.Join(out, ", ")
}

// writeDef writes one entry as a def (a method when indent is set) or an
// annotated attribute.
func writeDef(b *strings.Builder, e *RefEntry, indent string) {
	name := e.Name[strings.LastIndex(e.Name, ".")+1:]
	if e.Attr {
		fmt.Fprintf(b, "%s%s: %s\n%s", indent, name, pyType(e.Returns), pyDoc(upperFirst(e.Summary)+".", indent))
		return
	}
	fmt.Fprintf(b, "%sdef %s(%s) -> %s:\n%s%s    ...\n\n", indent, name, pyParams(e.Params, indent != ""), pyType(e.Returns), pyDoc(entryDoc(e), indent+"    "), indent)
}

// WriteStubs writes a Python type-stub file (__builtins__.pyi) of every
// builtin, for Pyright and Pylance (see docs/builtins.md).
func (r *Reference) WriteStubs(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# caretaker playbook builtins for Pyright/Pylance: `" + StubsCommand + "`\n")
	b.WriteString("# at the root of the playbook directory; associate *.star with Python in the\n")
	b.WriteString("# editor. Generated from builtins/reference_*.go; do not edit.\n\n")
	b.WriteString("from typing import Any, Callable\n\n")
	for _, s := range r.Structs {
		if len(s.Fields) == 0 {
			continue
		}
		fmt.Fprintf(&b, "class %s:\n%s", pyClass(s.Name), pyDoc(upperFirst(s.Summary)+".", "    "))
		for _, f := range s.Fields {
			fmt.Fprintf(&b, "    %s: %s\n%s", f.Name, pyType(f.Type), pyDoc(f.Doc, "    "))
		}
		b.WriteString("\n")
	}
	for i := range r.Sections {
		writeSectionStubs(&b, &r.Sections[i])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSectionStubs(b *strings.Builder, s *RefSection) {
	if s.Module == "" && s.Class == "" {
		for i := range s.Entries {
			writeDef(b, &s.Entries[i], "")
		}
		return
	}
	var module, value []*RefEntry
	for i := range s.Entries {
		e := &s.Entries[i]
		if s.Module != "" && strings.HasPrefix(e.Name, s.Module+".") {
			module = append(module, e)
		} else {
			value = append(value, e)
		}
	}
	if len(value) > 0 {
		fmt.Fprintf(b, "class %s:\n%s", s.Class, pyDoc(s.Doc, "    "))
		for _, e := range value {
			writeDef(b, e, "    ")
		}
		b.WriteString("\n")
	}
	if len(module) == 0 {
		return
	}
	class := "_" + pyClass(s.Module)
	fmt.Fprintf(b, "class %s:\n%s", class, pyDoc(s.Doc, "    "))
	for _, e := range module {
		writeDef(b, e, "    ")
	}
	if s.Module == "assert" {
		b.WriteString("# `assert` is a Python keyword: no Python tool resolves assert.eq(...); the\n# members above document it.\n\n")
		return
	}
	fmt.Fprintf(b, "%s: %s\n%s\n", s.Module, class, pyDoc(s.Title+".", ""))
}
