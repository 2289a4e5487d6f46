package main

import (
	"fmt"
	"io/fs"
	"regexp"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/playbooks"
)

var describeRe = regexp.MustCompile(`(?m)^describe\(\s*"((?:[^"\\]|\\.)*)"`)

func newPlaybooksCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "playbooks",
		Short: "List the playbooks shipped with caretaker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
}
