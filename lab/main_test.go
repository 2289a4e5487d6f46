package lab_test

import (
	"os"
	"testing"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/lab"
)

// TestMain lets the test binary stand in for the caretaker binary: as a
// node command (RunShim) and as `caretaker lab ...` (the daemon that `lab
// up` starts runs this binary again with "lab daemon ...").
func TestMain(m *testing.M) {
	if code, ok := lab.RunShim(os.Args); ok {
		os.Exit(code)
	}
	if len(os.Args) > 1 && os.Args[1] == "lab" {
		os.Exit(runCaretaker(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runCaretaker runs `caretaker <args>` with the lab command mounted as the
// lead's main mounts it.
func runCaretaker(args []string) int {
	root := &cobra.Command{Use: "caretaker", SilenceUsage: true}
	root.AddCommand(lab.NewCommand())
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return 1
	}
	return 0
}
