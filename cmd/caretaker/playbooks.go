package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/playbooks"
)

var describeRe = regexp.MustCompile(`(?m)^describe\(\s*"((?:[^"\\]|\\.)*)"`)

func newPlaybooksCommand() *cobra.Command {
	var export string
	var force bool
	c := &cobra.Command{
		Use:   "playbooks [--export DIR]",
		Short: "List the playbooks shipped with caretaker (show one, or export them all)",
		Long: `List the playbooks shipped inside caretaker with their descriptions.
--export DIR writes every shipped .star file (playbooks, their tests and the
modules they load) into DIR, as a starting point for your own; files that
already exist there are refused unless --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if export != "" {
				return exportPlaybooks(cmd.OutOrStdout(), export, force)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, name := range playbooks.Names() {
				src, _ := fs.ReadFile(playbooks.FS, name+".star")
				desc := ""
				if m := describeRe.FindSubmatch(src); m != nil {
					desc = string(m[1])
				}
				fmt.Fprintf(w, "%s\t%s\n", name, desc)
			}
			return w.Flush()
		},
	}
	c.Flags().StringVar(&export, "export", "", "write every shipped .star file into this directory")
	c.Flags().BoolVar(&force, "force", false, "with --export: overwrite files that exist")
	c.AddCommand(newPlaybooksShowCommand())
	return c
}

func newPlaybooksShowCommand() *cobra.Command {
	var test bool
	c := &cobra.Command{
		Use:   "show NAME",
		Short: "Print the source of a shipped playbook (or module, or with --test its test)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := strings.TrimSuffix(args[0], ".star")
			if test {
				name = strings.TrimSuffix(name, "_test") + "_test"
			}
			src, err := fs.ReadFile(playbooks.FS, name+".star")
			if err != nil {
				return usageError{fmt.Errorf("no shipped playbook or module %q; shipped: %s", args[0], strings.Join(shippedFiles(), ", "))}
			}
			_, err = cmd.OutOrStdout().Write(src)
			return err
		},
	}
	c.Flags().BoolVar(&test, "test", false, "print the playbook's test (NAME_test.star)")
	return c
}

// shippedFiles lists the embedded .star files without their suffix.
func shippedFiles() []string {
	entries, _ := fs.ReadDir(playbooks.FS, ".")
	var out []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".star") {
			out = append(out, strings.TrimSuffix(n, ".star"))
		}
	}
	sort.Strings(out)
	return out
}

// exportPlaybooks writes every embedded .star file into dir. Before it
// writes anything it refuses (exit 2) files that exist with other content,
// unless force.
func exportPlaybooks(w io.Writer, dir string, force bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	names := shippedFiles()
	var clash []string
	for _, n := range names {
		old, err := os.ReadFile(filepath.Join(dir, n+".star"))
		if err == nil && !force {
			if src, _ := fs.ReadFile(playbooks.FS, n+".star"); !bytes.Equal(old, src) {
				clash = append(clash, n+".star")
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("export: %w", err)
		}
	}
	if len(clash) > 0 {
		return usageError{fmt.Errorf("export: %s already exist(s) in %s with other content; nothing written (use --force to overwrite, or another directory)", strings.Join(clash, ", "), dir)}
	}
	for _, n := range names {
		src, _ := fs.ReadFile(playbooks.FS, n+".star")
		if err := os.WriteFile(filepath.Join(dir, n+".star"), src, 0o644); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	fmt.Fprintf(w, "wrote %d files to %s; run one with `caretaker run %s/NAME.star`, test them with `caretaker test %s`\n", len(names), dir, dir, dir)
	return nil
}
