package builtins

import (
	"fmt"
	"io"
	"strings"
)

// MarkdownCommand regenerates docs/builtins.md.
const MarkdownCommand = "go run ./cmd/caretaker docs --markdown > docs/builtins.md"

// markdownHeader opens docs/builtins.md: where it comes from and the
// editor setup.
const markdownHeader = `# Playbook builtins

<!-- Generated from builtins/reference_*.go by ` + "`" + MarkdownCommand + "`" + `; do not edit. -->

Every builtin a playbook (or a playbook test) can call: signature,
parameters, result fields, what it does under ` + "`--check`" + `, and an example.
The same text is at the terminal: ` + "`caretaker docs`" + ` lists everything,
` + "`caretaker docs k3s.verify`" + ` shows one builtin, ` + "`caretaker docs k3s`" + ` a
module, ` + "`caretaker docs playbooks`" + ` the shipped playbooks' parameters.

## Editor setup

Starlark is close enough to Python for Python tooling to complete and
check playbooks. Generate type stubs of these builtins at the root of
your playbook directory:

` + "```sh" + `
caretaker docs --stubs > __builtins__.pyi
` + "```" + `

Pyright and Pylance add the symbols of a ` + "`__builtins__.pyi`" + ` at the root of
the project (or of its ` + "`stubPath`" + `, ` + "`typings/`" + ` by default) to every file's
builtins. In VS Code with the Pylance extension, associate ` + "`*.star`" + ` with
Python in ` + "`.vscode/settings.json`" + `:

` + "```json" + `
{ "files.associations": { "*.star": "python" } }
` + "```" + `

and playbooks get completion, hover documentation and signature help for
` + "`step`, `param`, `k3s.*`" + ` and the result structs. A step body's argument is
untyped until a type comment says what it is (Starlark ignores comments):
` + "`def restart(node):  # type: (Node) -> None`" + ` completes ` + "`node.*`" + `. Any editor
running ` + "`pyright-langserver`" + ` with that file association works the same;
the ` + "`pyright`" + ` command line itself only checks ` + "`*.py`" + ` files. Limits:
` + "`assert`" + ` is a Python keyword, so ` + "`assert.eq(...)`" + ` in tests stays a
syntax error for Python tools (its members are in the stubs' ` + "`_Assert`" + `
class), and Starlark-only syntax (` + "`load()`" + ` of modules beside the playbook)
is not resolved.
`

// mdEscape makes text safe in a table cell.
func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// mdAnchor is GitHub's anchor for a heading.
func mdAnchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// WriteMarkdown writes docs/builtins.md: every section and entry, the
// result structs and the shipped playbooks' parameters.
func (r *Reference) WriteMarkdown(w io.Writer, playbooks []PlaybookDoc) error {
	var b strings.Builder
	b.WriteString(markdownHeader)
	b.WriteString("\n## Contents\n\n")
	for _, s := range r.Sections {
		names := make([]string, 0, len(s.Entries))
		for _, e := range s.Entries {
			names = append(names, "`"+e.Name+"`")
		}
		fmt.Fprintf(&b, "* [%s](#%s): %s\n", s.Title, mdAnchor(s.Title), strings.Join(names, ", "))
	}
	b.WriteString("* [Result structs](#result-structs)\n* [Shipped playbooks](#shipped-playbooks)\n")
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n", s.Title, s.Doc)
		for i := range s.Entries {
			writeEntryMarkdown(&b, &s.Entries[i])
		}
	}
	b.WriteString("\n## Result structs\n\nThe structs builtins return, by the name the entries above use.\n")
	for _, s := range r.Structs {
		writeStructMarkdown(&b, &s)
	}
	b.WriteString("\n## Shipped playbooks\n\nTheir parameters as loading them declares them (`caretaker run NAME -p name=value`).\n")
	for _, d := range playbooks {
		writePlaybookMarkdown(&b, d)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeEntryMarkdown(b *strings.Builder, e *RefEntry) {
	fmt.Fprintf(b, "\n### `%s`\n\n```python\n%s\n```\n\n%s.", e.Name, wrapSignature(e.Signature(), textWidth), upperFirst(e.Summary))
	if e.Doc != "" {
		b.WriteString(" " + e.Doc)
	}
	b.WriteString("\n")
	if len(e.Params) > 0 {
		b.WriteString("\n| parameter | type | default | |\n|---|---|---|---|\n")
		for _, p := range e.Params {
			def := "required"
			switch {
			case p.Variadic:
				def = "any number"
			case p.Default == "...":
				def = "optional"
			case p.Default != "":
				def = "`" + p.Default + "`"
			}
			name := p.call()
			if p.Default != "" {
				name = p.Name
			}
			fmt.Fprintf(b, "| `%s` | `%s` | %s | %s |\n", name, mdEscape(p.Type), mdEscape(def), mdEscape(p.Doc))
		}
	}
	kind := "Returns"
	if e.Attr {
		kind = "Type"
	}
	fmt.Fprintf(b, "\n**%s:** `%s`", kind, mdEscape(e.Returns))
	fmt.Fprintf(b, " · **Called:** %s\n\n**Check mode:** %s\n", whenText[e.When], e.Check)
	if e.Example != "" {
		fmt.Fprintf(b, "\n```python\n%s\n```\n", e.Example)
	}
}

func writeStructMarkdown(b *strings.Builder, s *RefStruct) {
	fmt.Fprintf(b, "\n### `%s`\n\n%s.\n", s.Name, upperFirst(s.Summary))
	if len(s.Fields) == 0 {
		return
	}
	b.WriteString("\n| field | type | |\n|---|---|---|\n")
	for _, f := range s.Fields {
		doc := f.Doc
		if f.Omitted {
			doc += " (absent when empty)"
		}
		fmt.Fprintf(b, "| `%s` | `%s` | %s |\n", f.Name, mdEscape(f.Type), mdEscape(doc))
	}
}

func writePlaybookMarkdown(b *strings.Builder, d PlaybookDoc) {
	fmt.Fprintf(b, "\n### %s\n\n%s\n", d.Name, d.Description)
	if len(d.Params) == 0 {
		b.WriteString("\nNo parameters.\n")
		return
	}
	b.WriteString("\n| parameter | type | default | accepts | |\n|---|---|---|---|---|\n")
	for _, p := range d.Params {
		doc := p.Doc
		if p.Resumable {
			doc += " (resumable)"
		}
		fmt.Fprintf(b, "| `%s` | %s | `%s` | %s | %s |\n", p.Name, p.Type, mdEscape(p.Default), mdEscape(p.Accepts), mdEscape(doc))
	}
}

// upperFirst capitalises the first letter of a summary used as a
// sentence.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
