package main

import (
	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/lab"
)

// runShim lets the caretaker binary act as a lab node's k3s, systemctl or
// journalctl: the lab links those commands to this binary.
func runShim(args []string) (int, bool) { return lab.RunShim(args) }

func init() {
	extraCommands = append(extraCommands, func() *cobra.Command { return lab.NewCommand() })
}
