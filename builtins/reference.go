package builtins

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.starlark.net/starlark"
)

// Reference is the playbook API's reference: every builtin playbooks and
// playbook tests can call, with its parameters, result, check-mode
// behaviour and an example, and the structs builtins return. It is the
// one source `caretaker docs`, docs/builtins.md and the editor stubs are
// rendered from; the package's tests compare it with the real modules,
// globals and node attributes so it cannot drift from them.
type Reference struct {
	// Sections are the groups of builtins in reading order: globals, the
	// node value, the k3s module, json, and the test API (assert, fake).
	Sections []RefSection
	// Structs are the result structs, by their Starlark name.
	Structs []RefStruct
}

// RefSection is a group of builtins: the globals, a module or a value's
// attributes and methods.
type RefSection struct {
	// Name is how `caretaker docs NAME` reaches the section ("globals",
	// "node", "k3s", ...).
	Name string
	// Title is the heading.
	Title string
	// Doc is a paragraph above the entries.
	Doc string
	// Module is the Starlark module's name when the section is one
	// (k3s, json, assert, fake); "" for globals and values.
	Module string
	// Class is the name of the value's type in the editor stubs (Node,
	// FakeCluster) for sections that describe a value.
	Class   string
	Entries []RefEntry
}

// RefEntry is one builtin: a function, a method or an attribute.
type RefEntry struct {
	// Name is the name as playbooks write it: "step", "k3s.verify",
	// "node.run", "node.name", "cluster.run".
	Name string
	// Attr marks an attribute (no call, no parameters).
	Attr bool
	// Summary is one line; Doc the full description.
	Summary string
	Doc     string
	// When says where it can be called: WhenLoad (the playbook's top
	// level), WhenStep (inside a step body), WhenAny or WhenTest.
	When   string
	Params []RefParam
	// Returns is the type of the value returned (or of the attribute):
	// str, bool, int, float, None, any, list[T], dict[str, T], node, or
	// the name of a RefStruct.
	Returns string
	// Check says what the builtin does under --check.
	Check   string
	Example string
}

// RefParam is one parameter of a builtin.
type RefParam struct {
	Name string
	// Type as in RefEntry.Returns; "duration" is "30s" or a number of
	// seconds, "selector" a node selector string, a node or a list.
	Type string
	// Default is the default as a Starlark literal; "" when the
	// parameter is required, "..." when leaving it out differs from any
	// value (json.decode's default).
	Default string
	Doc     string
	// Variadic marks *args (log) and **kwargs (struct).
	Variadic bool
	// Positional marks parameters that cannot be passed by keyword;
	// KwOnly those that can only be.
	Positional, KwOnly bool
}

// RefStruct is a struct builtins return (or one nested in such a result).
type RefStruct struct {
	// Name is the struct's name in the reference and the stubs' class
	// name source ("verify" → Verify).
	Name    string
	Summary string
	Fields  []RefField
	// goType, when set, is the Go type the runtime converts into this
	// struct (toStarlark); field types are derived from it and the tests
	// compare the field names with what the conversion produces.
	goType reflect.Type
}

// RefField is one field of a result struct.
type RefField struct {
	Name string
	Type string
	Doc  string
	// Omitted says the field is left out when empty (or None).
	Omitted bool
}

// Where a builtin can be called (RefEntry.When).
const (
	WhenLoad = "load" // at the playbook's top level, while it loads
	WhenStep = "step" // inside a step body (or a function it calls)
	WhenAny  = "any"  // anywhere
	WhenTest = "test" // in *_test.star files (`caretaker test`)
)

// Check-mode texts shared by many entries.
const (
	checkReadOnly = "Read-only: runs the same under --check."
	checkNoNodes  = "Touches no node: the same under --check."
)

// APIReference returns the reference of every playbook builtin, with
// struct field types filled in from the Go types the runtime converts.
func APIReference() *Reference {
	ref := &Reference{
		Sections: []RefSection{globalsSection(), nodeSection(), k3sSection(), k8sSection(), jsonSection(), assertSection(), fakeSection()},
		Structs:  append(append(coreStructs(), k3sStructs()...), append(k8sStructs(), fakeStructs()...)...),
	}
	names := map[reflect.Type]string{}
	for _, s := range ref.Structs {
		if s.goType != nil {
			names[s.goType] = s.Name
		}
	}
	for i := range ref.Structs {
		s := &ref.Structs[i]
		if s.goType == nil {
			continue
		}
		types := map[string]reflectedField{}
		for _, f := range reflectFields(s.goType, names) {
			types[f.name] = f
		}
		for j := range s.Fields {
			if f, ok := types[s.Fields[j].Name]; ok {
				s.Fields[j].Type, s.Fields[j].Omitted = f.typ, f.omitted
			}
		}
	}
	return ref
}

// Entry finds a builtin by name ("k3s.verify", "step").
func (r *Reference) Entry(name string) (*RefSection, *RefEntry) {
	for i := range r.Sections {
		s := &r.Sections[i]
		for j := range s.Entries {
			if s.Entries[j].Name == name {
				return s, &s.Entries[j]
			}
		}
	}
	return nil, nil
}

// Section finds a section by name ("k3s", "node", "globals").
func (r *Reference) Section(name string) *RefSection {
	for i := range r.Sections {
		if r.Sections[i].Name == name {
			return &r.Sections[i]
		}
	}
	return nil
}

// Struct finds a result struct by name.
func (r *Reference) Struct(name string) *RefStruct {
	for i := range r.Structs {
		if r.Structs[i].Name == name {
			return &r.Structs[i]
		}
	}
	return nil
}

// Names lists every entry and section name, sorted: what `caretaker docs
// NAME` accepts besides playbooks.
func (r *Reference) Names() []string {
	var out []string
	for _, s := range r.Sections {
		out = append(out, s.Name)
		for _, e := range s.Entries {
			out = append(out, e.Name)
		}
	}
	sort.Strings(out)
	return out
}

var typeWordRe = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)

// StructsOf lists the result structs a type mentions, and the structs
// their fields mention in turn, each once, in order of appearance.
func (r *Reference) StructsOf(typ string) []*RefStruct {
	var out []*RefStruct
	seen := map[string]bool{}
	var walk func(string)
	walk = func(t string) {
		for _, w := range typeWordRe.FindAllString(t, -1) {
			s := r.Struct(w)
			if s == nil || seen[w] {
				continue
			}
			seen[w] = true
			out = append(out, s)
			for _, f := range s.Fields {
				walk(f.Type)
			}
		}
	}
	walk(typ)
	return out
}

// Signature is the entry's call form: `k3s.check(nodes=None, warn_days=120,
// fail=False, quiet=False) -> check`; an attribute's is `node.name: str`.
func (e *RefEntry) Signature() string {
	if e.Attr {
		return e.Name + ": " + e.Returns
	}
	parts := make([]string, 0, len(e.Params))
	for _, p := range e.Params {
		parts = append(parts, p.call())
	}
	return fmt.Sprintf("%s(%s) -> %s", e.Name, strings.Join(parts, ", "), e.Returns)
}

// call is the parameter as the signature shows it.
func (p RefParam) call() string {
	switch {
	case p.Variadic && p.Type == "kwargs":
		return "**" + p.Name
	case p.Variadic:
		return "*" + p.Name
	case p.Default != "":
		return p.Name + "=" + p.Default
	}
	return p.Name
}

// reflectedField is a field as toStarlark converts it.
type reflectedField struct {
	name, typ string
	omitted   bool
}

// reflectFields lists the Starlark fields toStarlark makes of struct type
// t, in order, with their types in the reference's notation (names maps
// nested struct types to their reference names).
func reflectFields(t reflect.Type, names map[reflect.Type]string) []reflectedField {
	var out []reflectedField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, reflectFields(f.Type, names)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		name, opts := fieldName(f)
		if name == "" {
			continue
		}
		out = append(out, reflectedField{name: name, typ: refTypeOf(f.Type, names), omitted: opts == "omitnil" || opts == "omitempty"})
	}
	return out
}

// refTypeOf is a Go type in the reference's type notation, as toStarlark
// converts it.
func refTypeOf(t reflect.Type, names map[reflect.Type]string) string {
	if t == reflect.TypeFor[time.Time]() {
		return "str"
	}
	if t.Implements(reflect.TypeFor[starlark.Value]()) {
		return "any"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return refTypeOf(t.Elem(), names) + " | None"
	case reflect.String:
		return "str"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Slice, reflect.Array:
		return "list[" + refTypeOf(t.Elem(), names) + "]"
	case reflect.Map:
		return "dict[str, " + refTypeOf(t.Elem(), names) + "]"
	case reflect.Struct:
		if n, ok := names[t]; ok {
			return n
		}
		return "struct"
	}
	return "any"
}
