package builtins

import (
	"fmt"
	"io"
	"strings"
)

// textWidth is the width plain-text reference pages are wrapped to.
const textWidth = 80

// whenText says where an entry can be called, for the pages.
var whenText = map[string]string{
	WhenLoad: "at the playbook's top level, while it loads",
	WhenStep: "inside a step body (or a function it calls)",
	WhenAny:  "anywhere",
	WhenTest: "in playbook tests (*_test.star, `caretaker test`)",
}

// wrap breaks text into lines of at most width columns, every line
// starting with indent (words longer than a line stay whole).
func wrap(text, indent string, width int) string {
	var b strings.Builder
	for i, para := range strings.Split(text, "\n") {
		if i > 0 {
			b.WriteString("\n")
		}
		line := indent
		for _, w := range strings.Fields(para) {
			if line != indent && len(line)+1+len(w) > width {
				b.WriteString(line + "\n")
				line = indent
			}
			if line != indent {
				line += " "
			}
			line += w
		}
		b.WriteString(line)
	}
	return b.String()
}

// wrapSignature breaks a signature after ", " so that every line fits,
// continuing under the opening parenthesis.
func wrapSignature(sig string, width int) string {
	open := strings.Index(sig, "(")
	if len(sig) <= width || open < 0 {
		return sig
	}
	hang := strings.Repeat(" ", open+1)
	var lines []string
	line := ""
	for _, part := range strings.SplitAfter(sig, ", ") {
		if line != "" && len(line)+len(strings.TrimRight(part, " ")) > width {
			lines = append(lines, strings.TrimRight(line, " "))
			line = hang
		}
		line += part
	}
	return strings.Join(append(lines, line), "\n")
}

// WriteIndex writes the list of every section and entry with one-line
// summaries (`caretaker docs`).
func (r *Reference) WriteIndex(w io.Writer) error {
	var b strings.Builder
	b.WriteString("caretaker playbook builtins. `caretaker docs NAME` shows one (a builtin, a\n")
	b.WriteString("module, a struct, a playbook); `caretaker docs playbooks` the shipped\n")
	b.WriteString("playbooks' parameters.\n")
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "\n%s (caretaker docs %s)\n", s.Title, s.Name)
		for _, e := range s.Entries {
			writeIndexLine(&b, e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeIndexLine(b *strings.Builder, e RefEntry) {
	const col = 24
	name := e.Name
	if len(name) >= col-2 {
		b.WriteString("  " + name + "\n" + wrap(e.Summary, strings.Repeat(" ", col), textWidth) + "\n")
		return
	}
	line := wrap(e.Summary, strings.Repeat(" ", col), textWidth)
	b.WriteString("  " + name + line[len(name)+2:] + "\n")
}

// WriteSection writes one section: its description and its entries'
// signatures and summaries (`caretaker docs k3s`).
func (r *Reference) WriteSection(w io.Writer, s *RefSection) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n%s\n", s.Title, wrap(s.Doc, "", textWidth))
	for _, e := range s.Entries {
		fmt.Fprintf(&b, "\n%s\n%s\n", wrapSignature(e.Signature(), textWidth), wrap(e.Summary, "    ", textWidth))
	}
	fmt.Fprintf(&b, "\n`caretaker docs NAME` for one of them, e.g. caretaker docs %s.\n", s.Entries[0].Name)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteEntry writes one builtin's page: signature, description,
// parameters, result fields, check mode and an example.
func (r *Reference) WriteEntry(w io.Writer, e *RefEntry) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n%s\n", wrapSignature(e.Signature(), textWidth), wrap(e.Summary, "  ", textWidth))
	if e.Doc != "" {
		fmt.Fprintf(&b, "\n%s\n", wrap(e.Doc, "  ", textWidth))
	}
	if len(e.Params) > 0 {
		b.WriteString("\nParameters:\n")
		for _, p := range e.Params {
			fmt.Fprintf(&b, "  %s (%s)\n%s\n", p.Name, p.describe(), wrap(p.Doc, "      ", textWidth))
		}
	}
	if e.Attr {
		fmt.Fprintf(&b, "\nType: %s\n", e.Returns)
	} else {
		fmt.Fprintf(&b, "\nReturns: %s\n", e.Returns)
	}
	for _, s := range r.StructsOf(e.Returns) {
		writeStructText(&b, s)
	}
	fmt.Fprintf(&b, "\nCheck mode:\n%s\n", wrap(e.Check, "  ", textWidth))
	fmt.Fprintf(&b, "\nCalled: %s\n", whenText[e.When])
	if e.Example != "" {
		b.WriteString("\nExample:\n")
		for _, line := range strings.Split(e.Example, "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// describe is a parameter's type and default, for the pages.
func (p RefParam) describe() string {
	var parts []string
	parts = append(parts, p.Type)
	switch {
	case p.Variadic:
		parts = append(parts, "any number")
	case p.Default == "...":
		parts = append(parts, "optional")
	case p.Default != "":
		parts = append(parts, "default "+p.Default)
	default:
		parts = append(parts, "required")
	}
	if p.Positional {
		parts = append(parts, "positional only")
	}
	if p.KwOnly {
		parts = append(parts, "keyword only")
	}
	return strings.Join(parts, ", ")
}

func writeStructText(b *strings.Builder, s *RefStruct) {
	if len(s.Fields) == 0 {
		return
	}
	fmt.Fprintf(b, "\n  %s: %s\n", s.Name, s.Summary)
	for _, f := range s.Fields {
		doc := f.Doc
		if f.Omitted {
			doc += " (absent when empty)"
		}
		text := wrap(fmt.Sprintf("%s (%s): %s", f.Name, f.Type, doc), "      ", textWidth)
		fmt.Fprintf(b, "    %s\n", strings.TrimPrefix(text, "      "))
	}
}

// WritePlaybooks writes the parameters of playbooks (`caretaker docs
// playbooks`, `caretaker docs rotate-ca`).
func WritePlaybooks(w io.Writer, docs []PlaybookDoc) error {
	var b strings.Builder
	for i, d := range docs {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s\n%s\n", d.Name, wrap(d.Description, "  ", textWidth))
		if len(d.Params) == 0 {
			b.WriteString("  (no parameters)\n")
			continue
		}
		b.WriteString("\n  Parameters (-p name=value):\n")
		for _, p := range d.Params {
			fmt.Fprintf(&b, "    %s (%s, default %s)\n", p.Name, p.Type, p.Default)
			text := p.Doc
			if p.Accepts != "" {
				text += "; accepts " + p.Accepts
			}
			if p.Resumable {
				text += "; resumable"
			}
			fmt.Fprintf(&b, "%s\n", wrap(text, "        ", textWidth))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteStruct writes a result struct's page: its fields and the structs
// they hold (`caretaker docs verify`).
func (r *Reference) WriteStruct(w io.Writer, s *RefStruct) error {
	var b strings.Builder
	for _, n := range r.StructsOf(s.Name) {
		writeStructText(&b, n)
	}
	_, err := io.WriteString(w, strings.TrimPrefix(b.String(), "\n"))
	return err
}
