package k3stest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// The markers of the builtins' file-fetch script (fetchScript: a shell
// script starting with `IFS=` that reads path patterns on stdin, prints a
// header line per existing file, then the marker line and a base64 tar of
// the files). The fake answers that script; these must stay equal to the
// builtins' own constants.
const (
	fetchHeader = "#caretaker-file "
	fetchTar    = "#caretaker-tar"
)

// isErrorLine says whether a journal line is one of K3s's (logrus) error
// or fatal lines, as `journalctl ... | grep -E 'level=(error|fatal) '`
// selects them.
func isErrorLine(l string) bool {
	return strings.Contains(l, "level=error ") || strings.Contains(l, "level=fatal ")
}

// unquote undoes runner.ShellQuote for the simple words the builtins use.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return strings.ReplaceAll(s[1:len(s)-1], `'\''`, "'")
	}
	return s
}

// handle registers the node's commands on its fake executor.
func (c *Cluster) handle(sn *simNode) {
	ex := sn.ex
	ok := func(string, []byte, io.Writer, io.Writer) int { return 0 }
	ex.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == c.env.etcdAddr && sn.n.Role == inventory.RoleServer {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		sup, err := c.supervisorAt(addr, sn)
		if err != nil {
			return nil, err
		}
		return sup.dial(ctx)
	}
	ex.OnFunc(`^IFS=`, func(_ string, stdin []byte, stdout, _ io.Writer) int {
		sn.fetch(stdin, stdout)
		return 0
	})
	ex.OnFunc(`^(umask 077 && )?mkdir -p -- `, ok)
	ex.OnFunc(`^chmod [0-7]+ `, func(line string, _ []byte, _, _ io.Writer) int {
		for _, part := range strings.Split(line, " && ") {
			f := strings.Fields(part)
			if len(f) == 3 && f[0] == "chmod" {
				mode, _ := strconv.ParseUint(f[1], 8, 32)
				p := unquote(f[2])
				data, _ := ex.File(p)
				ex.SetFile(p, data, fs.FileMode(mode))
			}
		}
		return 0
	})
	c.handleSystemd(sn)
	c.handleSnapshots(sn)
	c.handleTokenRotate(sn)
	// The ping playbook's probe.
	ex.OnFunc(`^uname -n; k3s --version`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		c.mu.Lock()
		st := sn.state
		c.mu.Unlock()
		fmt.Fprintf(stdout, "%s\nk3s version %s (abcdef12)\n%s\n", sn.n.Name, sn.version, st)
		return 0
	})
	ex.OnFunc(`^k3s --version$`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		fmt.Fprintf(stdout, "k3s version %s (abcdef12)\ngo version go1.22.12\n", sn.version)
		return 0
	})
	ex.OnFunc(`^k3s certificate rotate-ca `, func(line string, _ []byte, stdout, stderr io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.rotateCA(sn, line, stdout, stderr)
	})
	ex.OnFunc(`^k3s certificate rotate( |$)`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		sn.rotateLeafs = true
		fmt.Fprintf(stdout, "Successfully backed up certificates to %s/tls-%d, please restart k3s server or agent to rotate certificates\n", sn.sd(), time.Now().Unix())
		return 0
	})
}

// supervisorAt is the running supervisor of the server whose supervisor
// endpoint is addr, as dialed from sn.
func (c *Cluster) supervisorAt(addr string, sn *simNode) (*supervisor, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, peer := range c.nodes {
		if peer.n.K3s.SupervisorEndpoint == addr && peer.n.Role == inventory.RoleServer {
			if peer.state != "active" || peer.sup == nil {
				return nil, fmt.Errorf("dial %s from %s: connection refused", addr, sn.n.Name)
			}
			return peer.sup, nil
		}
	}
	return nil, fmt.Errorf("dial %s from %s: no route to host", addr, sn.n.Name)
}

// fetch answers the builtins' fetch script: every file matching a pattern
// of stdin (one a line), as header lines and a base64 tar.
func (sn *simNode) fetch(stdin []byte, stdout io.Writer) {
	ex := sn.ex
	files := ex.Files()
	var found []string
	for _, pat := range strings.Split(string(stdin), "\n") {
		if pat == "" {
			continue
		}
		var matched []string
		for _, p := range files {
			if m, _ := path.Match(pat, p); m {
				matched = append(matched, p)
			}
		}
		sort.Strings(matched)
		found = append(found, matched...)
	}
	if len(found) == 0 {
		return
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range found {
		data, _ := ex.File(p)
		fi, err := ex.Stat(context.Background(), p)
		if err != nil {
			continue
		}
		fmt.Fprintf(stdout, "%s%s\n", fetchHeader, p)
		_ = tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: int64(fi.Mode.Perm()), Size: int64(len(data)), ModTime: fi.ModTime, Typeflag: tar.TypeReg})
		_, _ = tw.Write(data)
	}
	_ = tw.Close()
	fmt.Fprintln(stdout, fetchTar)
	enc := base64.StdEncoding.EncodeToString(buf.Bytes())
	for len(enc) > 76 {
		fmt.Fprintln(stdout, enc[:76])
		enc = enc[76:]
	}
	if enc != "" {
		fmt.Fprintln(stdout, enc)
	}
}

// handleSystemd registers systemctl and journalctl for the node's unit.
func (c *Cluster) handleSystemd(sn *simNode) {
	ex := sn.ex
	svc := regexp.QuoteMeta(sn.n.K3s.Service)
	ex.OnFunc(`^systemctl daemon-reload$`, func(string, []byte, io.Writer, io.Writer) int {
		c.mu.Lock()
		sn.reloads++
		c.mu.Unlock()
		return 0
	})
	ex.OnFunc(`^systemctl is-active '?`+svc+`'?$`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		c.mu.Lock()
		st := sn.state
		c.mu.Unlock()
		fmt.Fprintln(stdout, st)
		if st == "active" {
			return 0
		}
		return 3
	})
	ex.OnFunc(`^systemctl (re)?start '?`+svc+`'?$`, func(_ string, _ []byte, _, stderr io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.start(sn); err != nil {
			fmt.Fprintf(stderr, "Job for %s.service failed because the control process exited with error code.\n", sn.n.K3s.Service)
			return 1
		}
		return 0
	})
	ex.OnFunc(`^systemctl stop '?`+svc+`'?$`, func(string, []byte, io.Writer, io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stopSupervisor(sn)
		sn.state = "inactive"
		return 0
	})
	show := func(stdout io.Writer) {
		active, sub, result := sn.state, "running", "success"
		switch sn.state {
		case "failed":
			sub, result = "failed", "exit-code"
		case "inactive":
			sub = "dead"
		}
		fmt.Fprintf(stdout, "Result=%s\nNRestarts=0\nActiveState=%s\nSubState=%s\nInvocationID=%032x\n", result, active, sub, sn.restarts)
	}
	ex.OnFunc(`^date \+%s\.%N && systemctl show '?`+svc+`'? --property=`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		now := time.Now()
		fmt.Fprintf(stdout, "%d.%09d\n", now.Unix(), now.Nanosecond())
		show(stdout)
		return 0
	})
	ex.OnFunc(`^systemctl show '?`+svc+`'? --property=`, func(_ string, _ []byte, stdout, _ io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		show(stdout)
		return 0
	})
	ex.OnFunc(`^(touch \S+ && )?systemctl restart --no-block '?`+svc+`'?$`, func(line string, _ []byte, _, _ io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		regenerate := false
		if f := strings.Fields(line); f[0] == "touch" {
			ex.SetFile(unquote(f[1]), nil, 0o644)
			regenerate = true
		}
		_ = c.start(sn) // the failure shows in systemctl show and the journal
		if regenerate && sn.state == "active" {
			// A new serving certificate is synced with kube-system/k3s-serving.
			sn.log(`level=info msg="Active TLS secret kube-system/k3s-serving (ver=%d) (count 3)"`, 300+sn.restarts)
		}
		return 0
	})
	ex.OnFunc(`^journalctl -u '?`+svc+`'? (-n \d+|--since @\S+) --no-pager`, func(line string, _ []byte, stdout, _ io.Writer) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, l := range sn.journal {
			if strings.Contains(line, "grep -E") && !isErrorLine(l) {
				continue
			}
			fmt.Fprintln(stdout, l)
		}
		return 0
	})
}

// rotateCA is `k3s certificate rotate-ca` with the handler's validation
// (k3s-ca-rotation.md §5).
func (c *Cluster) rotateCA(sn *simNode, line string, stdout, stderr io.Writer) int {
	var dir string
	force := false
	for _, w := range strings.Fields(line)[3:] {
		switch {
		case strings.HasPrefix(w, "--path="):
			dir = unquote(strings.TrimPrefix(w, "--path="))
		case w == "--force":
			force = true
		}
	}
	if sn.n.Role != inventory.RoleServer || sn.state != "active" {
		fmt.Fprintln(stderr, "Error: see server log for details: connection refused")
		return 1
	}
	staged := map[string][]byte{}
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := sn.ex.File(dir + "/" + bf.Path); ok && bf.Rotate {
			staged[bf.Path] = b
		}
	}
	if len(staged) == 0 {
		fmt.Fprintf(stderr, "Error: no CA files in %s\n", dir)
		return 1
	}
	if errs := k3s.ValidateCARotation(sn.caSet(), staged); len(errs) > 0 && !force {
		sn.log("level=error msg=\"certificate error: failed to validate new CA certificates and keys: %v\"", errors.Join(errs...))
		fmt.Fprintln(stderr, "Error: see server log for details")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := c.Datastore(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	now := time.Now()
	for _, bf := range k3s.BootstrapFiles {
		if b, ok := staged[bf.Path]; ok && len(b) > 0 {
			cur[bf.Key] = k3s.File{Timestamp: now, Content: b}
		}
	}
	if err := c.saveBootstrap(ctx, cur); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	sn.log("level=info msg=\"certificate: Cluster Certificate Authority data has been updated, k3s must be restarted.\"")
	fmt.Fprintln(stdout, "certificates saved to datastore")
	return 0
}
