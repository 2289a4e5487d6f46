package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/playbooks"
)

func init() {
	extraCommands = append(extraCommands, newDocsCommand)
}

func newDocsCommand() *cobra.Command {
	var markdown, stubs bool
	c := &cobra.Command{
		Use:   "docs [NAME]",
		Short: "Show the reference of the playbook builtins (step, node.run, k3s.verify, ...)",
		Long: `Show the reference of the builtins playbooks and playbook tests call.

Without NAME it lists every builtin with a one-line summary. NAME is a
builtin (k3s.verify, node.run, step), a module or value (k3s, node, json,
assert, fake, globals), a result struct (verify, row, facts), "playbooks"
(every shipped playbook's parameters) or a shipped playbook (rotate-ca).

--markdown prints docs/builtins.md; --stubs prints Python type stubs for
editors (caretaker docs --stubs > __builtins__.pyi; see docs/builtins.md).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDocs(cmd.OutOrStdout(), args, markdown, stubs)
		},
	}
	c.Flags().BoolVar(&markdown, "markdown", false, "print the whole reference as Markdown (docs/builtins.md)")
	c.Flags().BoolVar(&stubs, "stubs", false, "print Python type stubs (__builtins__.pyi) for Pyright/Pylance")
	return c
}

func runDocs(w io.Writer, args []string, markdown, stubs bool) error {
	ref := builtins.APIReference()
	switch {
	case (markdown || stubs) && len(args) > 0:
		return usageError{fmt.Errorf("docs: --markdown and --stubs print everything; they take no NAME")}
	case markdown && stubs:
		return usageError{fmt.Errorf("docs: give --markdown or --stubs, not both")}
	case markdown:
		docs, err := shippedPlaybookDocs(playbooks.Names())
		if err != nil {
			return err
		}
		return ref.WriteMarkdown(w, docs)
	case stubs:
		return ref.WriteStubs(w)
	case len(args) == 0:
		return ref.WriteIndex(w)
	}
	return docsFor(w, ref, args[0])
}

// docsFor writes the page of one name.
func docsFor(w io.Writer, ref *builtins.Reference, name string) error {
	if s := ref.Section(name); s != nil {
		return ref.WriteSection(w, s)
	}
	if _, e := ref.Entry(name); e != nil {
		return ref.WriteEntry(w, e)
	}
	if name == "playbooks" || playbooks.Has(name) {
		names := playbooks.Names()
		if name != "playbooks" {
			names = []string{name}
		}
		docs, err := shippedPlaybookDocs(names)
		if err != nil {
			return err
		}
		return builtins.WritePlaybooks(w, docs)
	}
	if s := ref.Struct(name); s != nil {
		return ref.WriteStruct(w, s)
	}
	msg := fmt.Sprintf("docs: no builtin, module, struct or playbook %q", name)
	if near := suggest(name, docsNames(ref)); len(near) > 0 {
		msg += "; did you mean " + strings.Join(near, ", ") + "?"
	}
	return usageError{fmt.Errorf("%s (caretaker docs lists them)", msg)}
}

// shippedPlaybookDocs loads shipped playbooks for their parameters.
func shippedPlaybookDocs(names []string) ([]builtins.PlaybookDoc, error) {
	docs, err := builtins.PlaybookDocs(playbooks.FS, names)
	if err != nil {
		return nil, fmt.Errorf("docs: %w", err)
	}
	return docs, nil
}

// docsNames are every name `caretaker docs NAME` accepts.
func docsNames(ref *builtins.Reference) []string {
	names := append(ref.Names(), "playbooks")
	names = append(names, playbooks.Names()...)
	for _, s := range ref.Structs {
		names = append(names, s.Name)
	}
	return names
}

// suggest returns up to three names close to name: a few edits away from
// it or from their part after the last dot (verfy → k3s.verify).
func suggest(name string, names []string) []string {
	type scored struct {
		name string
		d    int
	}
	var out []scored
	seen := map[string]bool{}
	limit := max(1, len(name)/3)
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		low := strings.ToLower(n)
		d := min(editDistance(strings.ToLower(name), low), editDistance(strings.ToLower(name), low[strings.LastIndex(low, ".")+1:]))
		if d <= limit {
			out = append(out, scored{n, d})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].d != out[j].d {
			return out[i].d < out[j].d
		}
		return out[i].name < out[j].name
	})
	var names3 []string
	for i := 0; i < len(out) && i < 3; i++ {
		names3 = append(names3, out[i].name)
	}
	return names3
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
