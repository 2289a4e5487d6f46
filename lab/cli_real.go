package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/lab/realnode"
)

// upReal is `lab up --engine real`: it starts the machines and K3s in the
// foreground (the machines belong to their own supervisors, so no daemon
// is needed), prints the inventory path and returns.
func upReal(cmd *cobra.Command, f *upFlags) error {
	fl := cmd.Flags()
	if !fl.Changed("agents") {
		f.agents = 0
	}
	if f.agents > 0 {
		return fmt.Errorf("lab up: %w; the rows of the acceptance suite that need agents run on the simulator", realnode.ErrAgentsUnsupported)
	}
	for _, name := range []string{"version", "node-version", "ssh", "start-delay"} {
		if fl.Changed(name) {
			return fmt.Errorf("lab up: --%s is for the simulator; the real engine runs the K3s binary's own version (--k3s-binary) behind real OpenSSH", name)
		}
	}
	if !fl.Changed("subnet") {
		f.subnet = realnode.DefaultSubnet
	}
	if !fl.Changed("timeout") {
		f.timeout = 10 * time.Minute // the first run builds the root filesystem
	}
	if err := realnode.Available(); err != nil {
		return fmt.Errorf("lab up --engine real: %w", err)
	}
	o, err := f.options()
	if err != nil {
		return err
	}
	o.Logf = func(format string, a ...any) {
		fmt.Fprintf(cmd.ErrOrStderr(), "lab up: "+format+"\n", a...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	began := time.Now()
	h, err := StartEngine(ctx, o)
	if err != nil {
		return fmt.Errorf("lab up --engine real: %w", err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), h.InventoryPath())
	fmt.Fprintf(cmd.ErrOrStderr(), "lab up: %d real K3s servers in %.1fs; see caretaker lab status --dir %s, stop with caretaker lab down --dir %s\n",
		len(h.NodeNames()), time.Since(began).Seconds(), f.dir, f.dir)
	return nil
}

// statusReal is `lab status` for a real-engine lab.
func statusReal(cmd *cobra.Command, dir, output string) error {
	h, err := realnode.Open(dir)
	if err != nil {
		return fmt.Errorf("lab status: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := h.Status(ctx)
	if err != nil {
		return fmt.Errorf("lab status: %w", err)
	}
	if output == "json" {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "lab %q in %s (engine real, subnet %s)\ninventory: %s\n\n", st.Name, st.Dir, st.Subnet, st.Inventory)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tMACHINE\tSERVICE")
	for _, n := range st.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Address, n.Machine, n.ActiveState+" ("+n.SubState+")")
	}
	return tw.Flush()
}

// downReal is `lab down` for a real-engine lab.
func downReal(cmd *cobra.Command, dir string) error {
	h, err := realnode.Open(dir)
	if err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	began := time.Now()
	if err := h.Close(); err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, realnode.StateFile)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("lab down: %w", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "lab down: stopped the real-engine lab in %s (%.1fs); nothing of it runs any more\n", dir, time.Since(began).Seconds())
	return nil
}

// faultReal is `lab fault` for a real-engine lab.
func faultReal(cmd *cobra.Command, dir, node, fault string) error {
	h, err := realnode.Open(dir)
	if err != nil {
		return fmt.Errorf("lab fault: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.SetFault(ctx, node, fault); err != nil {
		return fmt.Errorf("lab fault: %w", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", node, fault)
	return nil
}
