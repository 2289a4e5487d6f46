// Command shimmain is a test-only stand-in for the caretaker binary as the
// lab's node commands (k3s, systemctl, journalctl): lab tests build it once
// and link the nodes' commands to it, which keeps every node command a small,
// fast-starting process.
package main

import (
	"fmt"
	"os"

	"github.com/caretaker/caretaker/lab/shim"
)

func main() {
	if code, ok := shim.Run(os.Args); ok {
		os.Exit(code)
	}
	fmt.Fprintln(os.Stderr, "shimmain: run as k3s, systemctl or journalctl (or shimmain lab-shim CMD ...)")
	os.Exit(2)
}
