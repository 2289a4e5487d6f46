package lab

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caretaker/caretaker/internal/k3s"
)

// cliLog writes a logrus line of the k3s CLI to stderr.
func (inv *invocation) cliLog(level, format string, args ...any) {
	fmt.Fprintln(inv.stderr, logrusLine(time.Now(), level, fmt.Sprintf(format, args...)))
}

// cliFatal is logrus.Fatal in the CLI: the line, exit code 1.
func (inv *invocation) cliFatal(format string, args ...any) int {
	inv.cliLog("fatal", format, args...)
	return 1
}

// k3s simulates the k3s CLI commands caretaker uses: --version,
// certificate rotate-ca|rotate|check (k3s-ca-rotation.md §5, §6),
// etcd-snapshot save and token rotate.
func (inv *invocation) k3s() int {
	args := inv.args
	for len(args) > 0 && (args[0] == "--debug" || args[0] == "--alsologtostderr") {
		args = args[1:]
	}
	if len(args) == 0 {
		inv.errf("usage: k3s [--version] certificate rotate-ca|rotate|check ...")
		return 1
	}
	n := inv.n
	switch args[0] {
	case "--version", "-v", "version":
		fmt.Fprintf(inv.stdout, "k3s version %s (%s)\ngo version %s\n", n.version, n.commit, goVersionOf(n.version))
		return 0
	case "certificate", "cert":
		if len(args) < 2 {
			inv.errf("usage: k3s certificate rotate-ca|rotate|check [flags]")
			return 1
		}
		rest := args[2:]
		switch args[1] {
		case "rotate-ca":
			return inv.rotateCA(rest)
		case "rotate":
			return inv.certRotate(rest)
		case "check":
			return inv.certCheck(rest)
		}
		return inv.cliFatal("lab: k3s certificate %s is not simulated (rotate-ca, rotate and check are)", args[1])
	case "etcd-snapshot":
		return inv.etcdSnapshot(args[1:])
	case "token":
		if len(args) < 2 || args[1] != "rotate" {
			return inv.cliFatal("lab: k3s token %s is not simulated (rotate is)", strings.Join(args[1:], " "))
		}
		return inv.tokenRotate(args[2:])
	case "server", "agent":
		for _, a := range args[1:] {
			if a == "--cluster-reset" || strings.HasPrefix(a, "--cluster-reset=") {
				return inv.cliFatal("lab: k3s server --cluster-reset (a datastore restore) is not simulated: the simulator's etcd members cannot be reset; rehearse a restore on the real engine (caretaker lab up --engine real)")
			}
		}
		return inv.cliFatal("lab: the K3s %s of this node runs as a service; use systemctl start|stop|restart %s", args[0], n.service)
	}
	return inv.cliFatal("lab: k3s %s is not simulated on lab nodes (--version, certificate rotate-ca|rotate|check, etcd-snapshot save and token rotate are)", args[0])
}

// goVersionOf is a plausible Go version for a K3s release line.
func goVersionOf(v k3s.Version) string {
	switch {
	case v.Major == 1 && v.Minor <= 29:
		return "go1.22.12"
	case v.Major == 1 && v.Minor <= 32:
		return "go1.23.6"
	}
	return "go1.24.4"
}

// cliFlags is a tiny urfave/cli-like flag parser: --name value,
// --name=value, -n value; bool flags take no value.
type cliFlags struct {
	values map[string][]string
	bools  map[string]bool
}

func parseCLIFlags(args []string, valued map[string]string, boolean map[string]string) (cliFlags, error) {
	f := cliFlags{values: map[string][]string{}, bools: map[string]bool{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return f, fmt.Errorf("unexpected argument %q", a)
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if canon, ok := boolean[name]; ok {
			b := true
			if hasVal {
				b, _ = strconv.ParseBool(val)
			}
			f.bools[canon] = b
			continue
		}
		canon, ok := valued[name]
		if !ok {
			return f, fmt.Errorf("flag provided but not defined: -%s", name)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return f, fmt.Errorf("flag needs an argument: -%s", name)
			}
			i++
			val = args[i]
		}
		f.values[canon] = append(f.values[canon], val)
	}
	return f, nil
}

func (f cliFlags) get(name string) string {
	if v := f.values[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// abs resolves a path the user typed against the command's cwd.
func (inv *invocation) abs(p string) string {
	if filepath.IsAbs(p) || inv.cwd == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(inv.cwd, p)
}

// dataDir is --data-dir, else K3S_DATA_DIR, else the node's data dir.
func (inv *invocation) dataDir(f cliFlags) string {
	if d := f.get("data-dir"); d != "" {
		return inv.abs(d)
	}
	if d := inv.env["K3S_DATA_DIR"]; d != "" {
		return inv.abs(d)
	}
	return inv.n.dataDir
}

// rotateCA is `k3s certificate rotate-ca` (§5 "CLI flow"): the token comes
// from DD/server/token (there is no --token flag, config.yaml is not read),
// the request goes to --server / K3S_URL / https://127.0.0.1:6443.
func (inv *invocation) rotateCA(args []string) int {
	f, err := parseCLIFlags(args,
		map[string]string{"path": "path", "data-dir": "data-dir", "d": "data-dir", "server": "server", "s": "server", "config": "config", "c": "config", "log": "log", "l": "log"},
		map[string]string{"force": "force", "debug": "debug", "alsologtostderr": "alsologtostderr"})
	if err != nil {
		return inv.cliFatal("%v", err)
	}
	if f.get("path") == "" {
		return inv.cliFatal("Required flag \"path\" not set")
	}
	n := inv.n
	sd := filepath.Join(inv.dataDir(f), "server")
	tok, err := os.ReadFile(n.host(filepath.Join(sd, "token")))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return inv.cliFatal("Error: %v", err)
	}
	server := f.get("server")
	if server == "" {
		server = inv.env["K3S_URL"]
	}
	if server == "" {
		server = "https://127.0.0.1:6443"
	}
	info, err := parseAndValidateToken(inv.ctx, n.localURL(server), strings.TrimRight(string(tok), "\n"), validateOptions{
		user: "server", source: n.ip, warn: func(format string, a ...any) { inv.cliLog("warning", format, a...) },
	})
	if err != nil {
		return inv.cliFatal("Error: %v", err)
	}
	staged, err := k3s.ReadStagedBootstrap(n.host(inv.abs(f.get("path"))))
	if err != nil {
		return inv.cliFatal("Error: %v", err)
	}
	body, err := k3s.MarshalBootstrap(staged)
	if err != nil {
		return inv.cliFatal("Error: %v", err)
	}
	if err := info.put(inv.ctx, fmt.Sprintf("/v1-k3s/cert/cacerts?force=%t", f.bools["force"]), body); err != nil {
		return inv.cliFatal("Error: see server log for details: %v", err)
	}
	fmt.Fprintln(inv.stdout, "certificates saved to datastore")
	return 0
}

// Certificate services of `k3s certificate rotate|check` (§6;
// pkg/util/services).
var (
	agentServices  = []string{"kube-proxy", "kubelet", "k3s-controller"}
	serverServices = []string{"api-server", "admin", "auth-proxy", "cloud-controller", "controller-manager", "etcd", "scheduler", "supervisor", "k3s-server"}
)

// serviceFiles lists the cert and key files of a service, as host paths
// (services.FilesForServices). sd and agentDir are host paths.
func serviceFiles(service, sd, agentDir string) ([]string, error) {
	t := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, filepath.Join(sd, "tls", n))
		}
		return out
	}
	a := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, filepath.Join(agentDir, n))
		}
		return out
	}
	switch service {
	case "admin":
		return t("client-admin.crt", "client-admin.key"), nil
	case "api-server":
		return t("client-kube-apiserver.crt", "client-kube-apiserver.key", "serving-kube-apiserver.crt", "serving-kube-apiserver.key"), nil
	case "controller-manager":
		return t("client-controller.crt", "client-controller.key", "kube-controller-manager/kube-controller-manager.crt", "kube-controller-manager/kube-controller-manager.key"), nil
	case "scheduler":
		return t("client-scheduler.crt", "client-scheduler.key", "kube-scheduler/kube-scheduler.crt", "kube-scheduler/kube-scheduler.key"), nil
	case "etcd":
		return t("etcd/client.crt", "etcd/client.key", "etcd/server-client.crt", "etcd/server-client.key", "etcd/peer-server-client.crt", "etcd/peer-server-client.key"), nil
	case "cloud-controller":
		return t("client-k3s-cloud-controller.crt", "client-k3s-cloud-controller.key"), nil
	case "k3s-controller":
		return append(t("client-k3s-controller.crt", "client-k3s-controller.key"), a("client-k3s-controller.crt", "client-k3s-controller.key")...), nil
	case "supervisor":
		return t("client-supervisor.crt", "client-supervisor.key"), nil
	case "auth-proxy":
		return t("client-auth-proxy.crt", "client-auth-proxy.key"), nil
	case "kubelet":
		return append(t("client-kubelet.key", "serving-kubelet.key"), a("client-kubelet.crt", "client-kubelet.key", "serving-kubelet.crt", "serving-kubelet.key")...), nil
	case "kube-proxy":
		return append(t("client-kube-proxy.crt", "client-kube-proxy.key"), a("client-kube-proxy.crt", "client-kube-proxy.key")...), nil
	case "certificate-authority":
		return t("server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key", "request-header-ca.crt", "request-header-ca.key", "etcd/peer-ca.crt", "etcd/peer-ca.key", "etcd/server-ca.crt", "etcd/server-ca.key"), nil
	case "k3s-server":
		return nil, nil
	}
	return nil, fmt.Errorf("%s is not a recognized service", service)
}

// certServices resolves -s or detects server vs agent as K3s does.
func (inv *invocation) certServices(f cliFlags, sdHost, action string) ([]string, int) {
	var list []string
	for _, v := range f.values["service"] {
		list = append(list, strings.Split(v, ",")...)
	}
	for _, s := range list {
		if !contains(append(append([]string{}, serverServices...), agentServices...), s) {
			return nil, inv.cliFatal("Error: service %s is not recognized", s)
		}
	}
	if len(list) == 0 {
		if _, err := os.Stat(sdHost); err != nil {
			inv.cliLog("info", "Agent detected, %s agent certificates", action)
			list = agentServices
		} else {
			inv.cliLog("info", "Server detected, %s agent and server certificates", action)
			list = append(append([]string{}, serverServices...), agentServices...)
		}
	}
	return list, 0
}

// certCheck is `k3s certificate check --output text|table|json|yaml` (§6).
func (inv *invocation) certCheck(args []string) int {
	f, err := parseCLIFlags(args,
		map[string]string{"output": "output", "o": "output", "data-dir": "data-dir", "d": "data-dir", "service": "service", "s": "service", "config": "config", "c": "config", "log": "log", "l": "log"},
		map[string]string{"debug": "debug", "alsologtostderr": "alsologtostderr"})
	if err != nil {
		return inv.cliFatal("%v", err)
	}
	n := inv.n
	dd := n.host(inv.dataDir(f))
	sd := filepath.Join(dd, "server")
	list, code := inv.certServices(f, sd, "checking")
	if code != 0 {
		return code
	}
	out := f.get("output")
	if out == "" {
		out = "text"
	}
	switch out {
	case "text", "table", "json", "yaml":
	default:
		return inv.cliFatal("Error: invalid output format %s", out)
	}
	files := map[string][]byte{}
	for _, svc := range list {
		paths, err := serviceFiles(svc, sd, filepath.Join(dd, "agent"))
		if err != nil {
			return inv.cliFatal("Error: %v", err)
		}
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				files[p] = b
			}
		}
	}
	now := time.Now()
	window := k3s.RenewDays(n.version) // the release's CertificateRenewDays
	certs := k3s.CheckCertificates(files, now, time.Duration(window)*24*time.Hour)
	switch out {
	case "table":
		_, _ = io.WriteString(inv.stdout, k3s.FormatCheckTable(certs, now))
	case "json":
		b, err := k3s.FormatCheckJSON(certs)
		if err != nil {
			return inv.cliFatal("Error: %v", err)
		}
		inv.stdout.Write(b)
	case "yaml":
		type cert struct {
			Filename     string        `yaml:"filename"`
			Subject      string        `yaml:"subject"`
			Issuer       string        `yaml:"issuer"`
			Usages       []string      `yaml:"usages"`
			ExpiryTime   time.Time     `yaml:"expirytime"`
			ResidualTime time.Duration `yaml:"residualtime"`
			Status       string        `yaml:"status"`
		}
		var doc struct {
			Certificates []cert `yaml:"certificates"`
		}
		for _, c := range certs {
			doc.Certificates = append(doc.Certificates, cert{c.Filename, c.Subject, c.Issuer, c.Usages, c.ExpiryTime, c.ResidualTime, c.Status})
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return inv.cliFatal("Error: %v", err)
		}
		inv.stdout.Write(b)
	default:
		for _, c := range certs {
			u := strings.Join(c.Usages, ",")
			at := c.ExpiryTime.Format(time.RFC3339)
			switch c.Status {
			case k3s.StatusNotYetValid:
				inv.cliLog("error", "%s: certificate %s (%s) is not valid before %s", c.Filename, c.Subject, u, at)
			case k3s.StatusExpired:
				inv.cliLog("error", "%s: certificate %s (%s) expired at %s", c.Filename, c.Subject, u, at)
			case k3s.StatusWarning:
				inv.cliLog("warning", "%s: certificate %s (%s) will expire within %d days at %s", c.Filename, c.Subject, u, window, at)
			default:
				inv.cliLog("info", "%s: certificate %s (%s) is ok, expires at %s", c.Filename, c.Subject, u, at)
			}
		}
	}
	return 0
}

// certRotate is `k3s certificate rotate` (§6): back up SD/tls, mark the
// dynamic listener cert for regeneration, delete the selected certs.
func (inv *invocation) certRotate(args []string) int {
	f, err := parseCLIFlags(args,
		map[string]string{"data-dir": "data-dir", "d": "data-dir", "service": "service", "s": "service", "config": "config", "c": "config", "log": "log", "l": "log"},
		map[string]string{"debug": "debug", "alsologtostderr": "alsologtostderr"})
	if err != nil {
		return inv.cliFatal("%v", err)
	}
	n := inv.n
	ddView := inv.dataDir(f)
	dd := n.host(ddView)
	sd := filepath.Join(dd, "server")
	agentDir := filepath.Join(dd, "agent")
	list, code := inv.certServices(f, sd, "rotating")
	if code != 0 {
		return code
	}
	stamp := strconv.FormatInt(time.Now().Unix(), 10)
	backup := filepath.Join(agentDir, "tls-"+stamp)
	backupView := filepath.Join(ddView, "agent", "tls-"+stamp)
	if _, err := os.Stat(filepath.Join(sd, "tls")); err == nil {
		backup = filepath.Join(sd, "tls-"+stamp)
		backupView = filepath.Join(ddView, "server", "tls-"+stamp)
		if err := copyTree(filepath.Join(sd, "tls"), backup); err != nil {
			return inv.cliFatal("Error: %v", err)
		}
	}
	fileMap := map[string][]string{}
	for _, svc := range list {
		paths, err := serviceFiles(svc, sd, agentDir)
		if err != nil {
			return inv.cliFatal("Error: %v", err)
		}
		fileMap[svc] = paths
		for _, p := range paths {
			if strings.HasPrefix(p, agentDir+"/") {
				if b, err := os.ReadFile(p); err == nil {
					if err := writeFile(filepath.Join(backup, filepath.Base(p)), b, 0o600); err != nil {
						return inv.cliFatal("Error: %v", err)
					}
				}
			}
		}
	}
	if contains(list, "k3s-server") {
		if err := os.WriteFile(filepath.Join(sd, "tls", "dynamic-cert-regenerate"), nil, 0o600); err != nil {
			return inv.cliFatal("Error: %v", err)
		}
		inv.cliLog("info", "Rotating dynamic listener certificate")
	}
	for _, svc := range list {
		inv.cliLog("info", "Rotating certificates for %s", svc)
		for _, p := range fileMap[svc] {
			_ = os.Remove(p)
		}
	}
	inv.cliLog("info", "Successfully backed up certificates to %s, please restart k3s server or agent to rotate certificates", backupView)
	return 0
}

// copyTree copies a directory recursively, keeping modes and mtimes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, b, info.Mode().Perm()); err != nil {
			return err
		}
		return os.Chtimes(target, info.ModTime(), info.ModTime())
	})
}
