package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/builtins/k8sops"
	"github.com/caretaker/caretaker/runner"
	inventorypkg "github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
)

func init() {
	extraCommands = append(extraCommands, newKubeconfigCommand)
}

// kubeconfigFlags are the flags of `caretaker kubeconfig`.
type kubeconfigFlags struct {
	inventory, cluster, node string
	out, user, server        string
	force, noVerify          bool
}

func newKubeconfigCommand() *cobra.Command {
	f := &kubeconfigFlags{}
	c := &cobra.Command{
		Use:   "kubeconfig -i INVENTORY [--out FILE] [--user NAME] [--server URL]",
		Short: "Write a working cluster-admin kubeconfig for the cluster (e.g. after a CA rotation)",
		Long: `Write a kubeconfig for the cluster as its admin: the server CA bundle and the
admin client certificate and key of a server (SD/tls/client-admin.*, what
K3s's own k3s.yaml holds), read over SSH and held in memory until written to
--out (0600, atomically; "-" writes to standard output). Without --out it is
printed to standard output when that is not a terminal (a pipe or a file). The server URL is
https://<the server's inventory address>:6443 unless --server says otherwise.

Before it writes, the kubeconfig is proven with a request to the API
(GET /version): directly from this machine, else through the server's SSH
connection (then it says so: the file works where the address is reachable).
A kubeconfig that works neither way is not written (--no-verify writes it
anyway). An existing file is refused unless --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runKubeconfig(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	c.Flags().StringVarP(&f.inventory, "inventory", "i", "", "inventory file (required)")
	c.Flags().StringVar(&f.cluster, "cluster", "", "cluster of the inventory (needed when it declares several)")
	c.Flags().StringVar(&f.node, "node", "", "server to read the credentials from (default: the first that answers)")
	c.Flags().StringVar(&f.out, "out", "", "file to write, 0600 (- for standard output)")
	c.Flags().StringVar(&f.user, "user", "", "user (and context) name in the kubeconfig (default: the cluster's name)")
	c.Flags().StringVar(&f.server, "server", "", "API server URL (default https://<server address>:6443)")
	c.Flags().BoolVar(&f.force, "force", false, "overwrite --out if it exists")
	c.Flags().BoolVar(&f.noVerify, "no-verify", false, "write the kubeconfig even if no request with it succeeds")
	return c
}

func runKubeconfig(ctx context.Context, stdout, stderr io.Writer, f *kubeconfigFlags) error {
	cluster, servers, err := kubeconfigTargets(f)
	if err != nil {
		return err
	}
	pool := runner.NewPool(sshnode.Dial)
	defer pool.Close()
	creds, ex, err := readAdminCredentials(ctx, pool, cluster, servers)
	if err != nil {
		return err
	}
	if f.server != "" {
		creds.Server = f.server
	}
	name := f.user
	if name == "" {
		name = cluster.Name
	}
	cfg := k8sops.AdminKubeconfig(name, creds)
	proof, verr := k8sops.ProveKubeconfig(ctx, cfg, ex, supervisorEndpoint(cluster, creds.Node))
	switch {
	case verr != nil && !f.noVerify:
		return fmt.Errorf("kubeconfig for %s (%s, credentials of %s) does not work, nothing written: %w (--no-verify writes it anyway)", cluster.Name, creds.Server, creds.Node, verr)
	case verr != nil:
		fmt.Fprintf(stderr, "caretaker: warning: no request with the kubeconfig succeeded: %v\n", verr)
	case proof.Direct != nil:
		fmt.Fprintf(stderr, "caretaker: kubeconfig for %s works %s; give --server with an address that is reachable where the file is used: API server %s (credentials of %s)\n", cluster.Name, proof.How, proof.Version, creds.Node)
	default:
		fmt.Fprintf(stderr, "caretaker: kubeconfig for %s works %s: API server %s (credentials of %s)\n", cluster.Name, proof.How, proof.Version, creds.Node)
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if f.out == "-" {
		_, err = stdout.Write(data)
		return err
	}
	if err := writeFileAtomic(f.out, data, 0o600); err != nil {
		return fmt.Errorf("kubeconfig: write %s: %w", f.out, err)
	}
	fmt.Fprintf(stderr, "caretaker: wrote %s (0600); use it with KUBECONFIG=%s kubectl get nodes\n", f.out, f.out)
	return nil
}

// kubeconfigTargets checks the flags before any node is contacted and
// returns the servers to try, in order.
func kubeconfigTargets(f *kubeconfigFlags) (*inventorypkg.Cluster, []*inventorypkg.Node, error) {
	if f.inventory == "" {
		return nil, nil, usageError{errors.New("no inventory: give one with -i FILE")}
	}
	if f.out == "" {
		if stdoutIsTerminal() {
			return nil, nil, usageError{errors.New("no --out: give the file to write (0600); the kubeconfig holds the admin key, so it is printed only when standard output is not a terminal or with --out -")}
		}
		f.out = "-"
	}
	if f.out != "-" && !f.force {
		if _, err := os.Stat(f.out); err == nil {
			return nil, nil, usageError{fmt.Errorf("--out %s exists: nothing written (--force overwrites it)", f.out)}
		}
	}
	if f.out != "-" {
		if st, err := os.Stat(filepath.Dir(f.out)); err != nil || !st.IsDir() {
			return nil, nil, usageError{fmt.Errorf("--out %s: its directory does not exist", f.out)}
		}
	}
	if f.server != "" && !strings.HasPrefix(f.server, "https://") {
		return nil, nil, usageError{fmt.Errorf("--server %q: give an https:// URL, e.g. https://k3s.example.com:6443", f.server)}
	}
	inv, err := inventorypkg.Load(f.inventory)
	if err != nil {
		return nil, nil, err
	}
	cluster, err := inv.Cluster(f.cluster)
	if err != nil {
		return nil, nil, err
	}
	var servers []*inventorypkg.Node
	for _, n := range cluster.Nodes {
		if n.Role == inventorypkg.RoleServer && (f.node == "" || n.Name == f.node) {
			servers = append(servers, n)
		}
	}
	if len(servers) == 0 && f.node != "" {
		return nil, nil, usageError{fmt.Errorf("--node %s is not a server of cluster %s (%s)", f.node, cluster.Name, nodeList(cluster.Nodes))}
	}
	if len(servers) == 0 {
		return nil, nil, usageError{fmt.Errorf("cluster %s has no server in the inventory: the admin credentials are on servers", cluster.Name)}
	}
	if err := inventorypkg.CheckControllerFiles(servers); err != nil {
		return nil, nil, err
	}
	return cluster, servers, nil
}

// readAdminCredentials reads the credentials from the first server that
// answers, through a one-step read-only run (the same transport and
// redaction as any run).
func readAdminCredentials(ctx context.Context, pool *runner.Pool, cluster *inventorypkg.Cluster, servers []*inventorypkg.Node) (*k3sops.AdminCredentials, transport.Executor, error) {
	var errs []string
	for _, n := range servers {
		var creds *k3sops.AdminCredentials
		var ex transport.Executor
		step := &runner.Step{Name: "kubeconfig", Nodes: []*inventorypkg.Node{n}, Func: func(ctx context.Context, env *runner.Env) error {
			t, err := k3sops.NewTarget(ctx, env, env.Node, env.Exec, "kubeconfig")
			if err != nil {
				return err
			}
			creds, err = k3sops.ReadAdminCredentials(ctx, t)
			ex = env.Exec
			return err
		}}
		done, err := runCheckPlan(ctx, pool, cluster, []*inventorypkg.Node{n}, step, nil)
		if err == nil && creds != nil {
			return creds, ex, nil
		}
		for _, f := range done.Failed {
			errs = append(errs, f.Node+": "+f.Error)
		}
		if err != nil && len(done.Failed) == 0 {
			errs = append(errs, n.Name+": "+err.Error())
		}
	}
	return nil, nil, fmt.Errorf("kubeconfig: no server gave its admin credentials: %s", strings.Join(errs, "; "))
}

// supervisorEndpoint is the :6443 endpoint of the named server as that
// server sees it (the inventory's supervisor_endpoint).
func supervisorEndpoint(cluster *inventorypkg.Cluster, node string) string {
	for _, n := range cluster.Nodes {
		if n.Name == node && n.K3s.SupervisorEndpoint != "" {
			return n.K3s.SupervisorEndpoint
		}
	}
	return "127.0.0.1:6443"
}

// stdoutIsTerminal reports whether standard output is a terminal.
func stdoutIsTerminal() bool { return term.IsTerminal(int(os.Stdout.Fd())) }
