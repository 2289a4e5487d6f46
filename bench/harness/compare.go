package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// jobCommand is the shell command all three runners run on every node:
// archive server/tls to a timestamped, private backup and print the sha256
// of server-ca.crt. bench/tls-backup.star builds the same line from
// node.server_dir and bench/ansible/tls-backup.yml spells it out; a test
// keeps the three identical.
const jobCommand = `umask 077 && d=` + serverDir + ` && mkdir -p "$d/tls-backups" && ` +
	`tar -czf "$d/tls-backups/tls-$(date -u +%Y%m%dT%H%M%S.%NZ).tar.gz" -C "$d" tls && ` +
	`sha256sum "$d/tls/server-ca.crt"`

// Runner names, in the order of every round.
const (
	rCaretaker      = "caretaker"
	rAnsibleDefault = "ansible-default"
	rAnsibleTuned   = "ansible-tuned"
	rPSSH           = "pssh"
	rRaw            = "raw-go"
)

var runnerNames = []string{rCaretaker, rAnsibleDefault, rAnsibleTuned, rPSSH, rRaw}

// runTimeout bounds one run of one runner.
const runTimeout = 5 * time.Minute

// jobRunner runs the job once against a lab and returns the checksums it
// collected by node name.
type jobRunner struct {
	name    string
	missing string // why it cannot run here, or ""
	run     func(ctx context.Context, cfg *config, l *runningLab, id string) (outcome, map[string]string, error)
}

// series is one runner at one node count.
type series struct {
	runner   string
	n        int
	times    []time.Duration
	rss      []int64
	failures []string
	missing  string
}

// compareResult is the comparison section.
type compareResult struct {
	skipped string // why the whole section did not run
	sizes   []int
	series  map[string]map[int]*series // runner → N → series
	labErr  map[int]string
}

func (c *compareResult) get(r string, n int) *series {
	if c.series == nil {
		return nil
	}
	return c.series[r][n]
}

func runners(cfg *config) []jobRunner {
	var out []jobRunner
	for _, name := range runnerNames {
		if len(cfg.runners) > 0 && !cfg.runners[name] {
			continue
		}
		j := jobRunner{name: name}
		switch name {
		case rCaretaker:
			j.run = runCaretaker
		case rAnsibleDefault, rAnsibleTuned:
			j.run = runAnsible
			if _, err := exec.LookPath("ansible-playbook"); err != nil {
				j.missing = "ansible-playbook is not installed (as root: apt-get install ansible)"
			}
		case rRaw:
			j.run = runRaw
		case rPSSH:
			j.run = runPSSH
			if _, err := exec.LookPath("parallel-ssh"); err != nil {
				j.missing = "parallel-ssh is not installed (as root: apt-get install pssh)"
			}
		}
		if _, err := exec.LookPath("ssh"); err != nil && name != rCaretaker && name != rRaw {
			j.missing = "the OpenSSH client is not installed (apt-get install openssh-client)"
		}
		out = append(out, j)
	}
	return out
}

// runCompare brings up an OpenSSH lab per node count and runs every runner
// cfg.runs times, interleaved (A B C D A B C D ...), verifying each run.
func runCompare(ctx context.Context, cfg *config) *compareResult {
	res := &compareResult{sizes: cfg.sizes, series: map[string]map[int]*series{}, labErr: map[int]string{}}
	if os.Geteuid() != 0 {
		res.skipped = "needs root: the lab's OpenSSH mode runs one sshd per node in its own mount namespace (run `sudo make bench`)"
		say("compare: SKIPPED: %s", res.skipped)
		return res
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		res.skipped = "openssh-server is not installed (apt-get install openssh-server)"
		say("compare: SKIPPED: %s", res.skipped)
		return res
	}
	rs := runners(cfg)
	for _, r := range rs {
		res.series[r.name] = map[int]*series{}
		if r.missing != "" {
			say("compare: %s: NOT RUN: %s", r.name, r.missing)
		}
	}
	for _, n := range cfg.sizes {
		if ctx.Err() != nil {
			break
		}
		for _, r := range rs {
			res.series[r.name][n] = &series{runner: r.name, n: n, missing: r.missing}
		}
		l, err := startLab(ctx, cfg, "openssh-"+strconv.Itoa(n), "--ssh", "openssh", "--servers", strconv.Itoa(n), "--agents", "0")
		if err != nil {
			res.labErr[n] = err.Error()
			say("compare N=%d: lab did not come up: %v", n, err)
			continue
		}
		compareOn(ctx, cfg, l, rs, res, n)
		l.stop(ctx)
	}
	return res
}

func compareOn(ctx context.Context, cfg *config, l *runningLab, rs []jobRunner, res *compareResult, n int) {
	want, err := l.expectedSums()
	if err != nil {
		res.labErr[n] = err.Error()
		return
	}
	for round := 1; round <= cfg.runs && ctx.Err() == nil; round++ {
		for _, r := range rs {
			if r.missing != "" || ctx.Err() != nil {
				continue
			}
			s := res.series[r.name][n]
			before := l.backups()
			id := fmt.Sprintf("%s-n%d-r%d", r.name, n, round)
			o, got, err := r.run(ctx, cfg, l, id)
			if err == nil {
				err = verifySums(got, want)
			}
			if err == nil {
				err = l.checkBackups(before)
			}
			if err != nil {
				s.failures = append(s.failures, fmt.Sprintf("run %d: %v", round, err))
				say("N=%-3d run %d/%d %-16s FAILED after %.2fs: %v", n, round, cfg.runs, r.name, o.wall.Seconds(), err)
				continue
			}
			s.times = append(s.times, o.wall)
			s.rss = append(s.rss, o.maxRSS)
			say("N=%-3d run %d/%d %-16s %7.2fs  ok: %d checksums = sha256(server-ca.crt), %d new backups", n, round, cfg.runs, r.name, o.wall.Seconds(), len(got), len(want))
		}
	}
}

// runCaretaker: a fresh caretaker process runs bench/tls-backup.star; the
// checksums come back as notes in the JSON events.
func runCaretaker(ctx context.Context, cfg *config, l *runningLab, id string) (outcome, map[string]string, error) {
	state := filepath.Join(cfg.work, "caretaker-state")
	o, err := execTimed(ctx, runTimeout, cfg.work, nil, cfg.caretaker, "run", filepath.Join(cfg.repo, "bench", "tls-backup.star"),
		"-i", l.inventory, "-o", "json", "--yes", "--state-dir", state)
	if err != nil {
		return o, nil, err
	}
	sums, status, perr := parseCaretakerJSON(o.stdout)
	if o.code != 0 || status != "ok" {
		return o, sums, fmt.Errorf("caretaker exit %d, run status %q: %s", o.code, status, tailOf(append(o.stderr, o.stdout...), 8))
	}
	return o, sums, perr
}

// parseCaretakerJSON reads `note` events "sha256 NODE HEX" and the run's
// final status from caretaker's JSON event lines.
func parseCaretakerJSON(out []byte) (map[string]string, string, error) {
	sums := map[string]string{}
	status := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var ev struct {
			Type   string `json:"type"`
			Node   string `json:"node"`
			Text   string `json:"text"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return sums, status, fmt.Errorf("caretaker printed a line that is not JSON: %.80q", line)
		}
		switch ev.Type {
		case "note":
			f := strings.Fields(ev.Text)
			if len(f) == 3 && f[0] == "sha256" {
				if f[1] != ev.Node {
					return sums, status, fmt.Errorf("note from %s names %s", ev.Node, f[1])
				}
				if _, dup := sums[f[1]]; dup {
					return sums, status, fmt.Errorf("two checksums from %s", f[1])
				}
				sums[f[1]] = f[2]
			}
		case "run_done":
			status = ev.Status
		}
	}
	return sums, status, nil
}

// sshOptions are the OpenSSH client options Ansible and parallel-ssh use:
// the lab's key and known_hosts, strict host key checking, no user config.
func sshOptions(l *runningLab) []string {
	return []string{"-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + l.knownHost,
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"}
}

// ansibleInventory writes the lab's nodes as an Ansible YAML inventory.
func ansibleInventory(cfg *config, l *runningLab) (string, error) {
	p := filepath.Join(l.dir, "ansible-inventory.yml")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	var b strings.Builder
	b.WriteString("# Generated by bench/harness from " + l.inventory + "\nall:\n  vars:\n")
	fmt.Fprintf(&b, "    ansible_user: %s\n", l.user)
	fmt.Fprintf(&b, "    ansible_ssh_private_key_file: %s\n", l.key)
	q, _ := json.Marshal(strings.Join(sshOptions(l), " "))
	fmt.Fprintf(&b, "    ansible_ssh_common_args: %s\n  hosts:\n", q)
	for _, n := range l.nodes {
		fmt.Fprintf(&b, "    %s: {ansible_host: %s, ansible_port: %d}\n", n.name, n.address, n.port)
	}
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// runAnsible: ansible-playbook with bench/ansible/{default,tuned}.cfg.
// Every run gets its own ControlMaster directory; the masters Ansible
// leaves behind (ControlPersist) are closed after the run, outside the
// timing, so no run inherits a connection.
func runAnsible(ctx context.Context, cfg *config, l *runningLab, id string) (outcome, map[string]string, error) {
	inv, err := ansibleInventory(cfg, l)
	if err != nil {
		return outcome{}, nil, err
	}
	conf := "default.cfg"
	if strings.HasPrefix(id, rAnsibleTuned) {
		conf = "tuned.cfg"
	}
	cp := filepath.Join(cfg.work, "ansible-cp", id)
	if err := os.MkdirAll(cp, 0o700); err != nil {
		return outcome{}, nil, err
	}
	defer closeMasters(ctx, cp)
	env := []string{
		"ANSIBLE_CONFIG=" + filepath.Join(cfg.repo, "bench", "ansible", conf),
		"ANSIBLE_SSH_CONTROL_PATH_DIR=" + cp,
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(cfg.work, "ansible-tmp"),
		"ANSIBLE_NOCOLOR=1",
	}
	o, err := execTimed(ctx, runTimeout, cfg.work, env, "ansible-playbook", "-i", inv, filepath.Join(cfg.repo, "bench", "ansible", "tls-backup.yml"))
	if err != nil {
		return o, nil, err
	}
	sums, perr := parseAnsibleJSON(o.stdout)
	if o.code != 0 {
		return o, sums, fmt.Errorf("ansible-playbook exit %d: %s", o.code, tailOf(append(o.stderr, o.stdout...), 8))
	}
	return o, sums, perr
}

// closeMasters ends the ControlPersist masters whose sockets are in dir.
func closeMasters(ctx context.Context, dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		_, _ = execTimed(context.WithoutCancel(ctx), 10*time.Second, "", nil, "ssh", "-F", "/dev/null", "-o", "ControlPath="+filepath.Join(dir, e.Name()), "-O", "exit", "bench-master")
	}
}

// parseAnsibleJSON reads the ansible.posix.json callback's document: the
// first word of each host's stdout in the task's results.
func parseAnsibleJSON(out []byte) (map[string]string, error) {
	var doc struct {
		Plays []struct {
			Tasks []struct {
				Hosts map[string]struct {
					Stdout string `json:"stdout"`
					Failed bool   `json:"failed"`
					RC     int    `json:"rc"`
				} `json:"hosts"`
			} `json:"tasks"`
		} `json:"plays"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("ansible-playbook output is not the json callback's document: %w (%s)", err, tailOf(out, 3))
	}
	if len(doc.Plays) != 1 || len(doc.Plays[0].Tasks) != 1 {
		return nil, errors.New("ansible-playbook: want one play with one task in the json output")
	}
	sums := map[string]string{}
	for host, r := range doc.Plays[0].Tasks[0].Hosts {
		if r.Failed || r.RC != 0 {
			return sums, fmt.Errorf("ansible: %s failed (rc %d)", host, r.RC)
		}
		if f := strings.Fields(r.Stdout); len(f) > 0 {
			sums[host] = f[0]
		}
	}
	return sums, nil
}

// runPSSH: parallel-ssh -p 50 runs jobCommand on every node with plain
// OpenSSH (no ControlMaster), one output file per host.
func runPSSH(ctx context.Context, cfg *config, l *runningLab, id string) (outcome, map[string]string, error) {
	hosts := filepath.Join(l.dir, "pssh-hosts")
	byHost := map[string]string{}
	var b strings.Builder
	for _, n := range l.nodes {
		h := n.address
		if n.port != 22 {
			h += ":" + strconv.Itoa(n.port)
		}
		fmt.Fprintf(&b, "%s\n", h)
		byHost[n.address] = n.name
	}
	if err := os.WriteFile(hosts, []byte(b.String()), 0o644); err != nil {
		return outcome{}, nil, err
	}
	outDir := filepath.Join(cfg.work, "pssh-out", id)
	errDir := filepath.Join(cfg.work, "pssh-err", id)
	args := append([]string{"-p", "50", "-t", "300", "-h", hosts, "-l", l.user, "-o", outDir, "-e", errDir,
		"-x", strings.Join(append([]string{"-i", l.key}, sshOptions(l)...), " ")}, jobCommand)
	o, err := execTimed(ctx, runTimeout, cfg.work, nil, "parallel-ssh", args...)
	if err != nil {
		return o, nil, err
	}
	if o.code != 0 {
		return o, nil, fmt.Errorf("parallel-ssh exit %d: %s", o.code, tailOf(append(o.stdout, o.stderr...), 8))
	}
	sums := map[string]string{}
	ents, err := os.ReadDir(outDir)
	if err != nil {
		return o, nil, err
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(outDir, e.Name()))
		if err != nil {
			return o, sums, err
		}
		name, ok := byHost[strings.Split(e.Name(), ":")[0]]
		if !ok {
			return o, sums, fmt.Errorf("parallel-ssh wrote output for unknown host %s", e.Name())
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			sums[name] = f[0]
		}
	}
	return o, sums, nil
}

// runRaw: a fresh process of this binary (`harness raw-ssh`) does the job
// with plain x/crypto/ssh, one goroutine per node: the floor caretaker is
// measured against (connections, the command itself, process start).
func runRaw(ctx context.Context, cfg *config, l *runningLab, id string) (outcome, map[string]string, error) {
	self, err := os.Executable()
	if err != nil {
		return outcome{}, nil, err
	}
	o, err := execTimed(ctx, runTimeout, cfg.work, nil, self, "raw-ssh", l.inventory)
	if err != nil {
		return o, nil, err
	}
	if o.code != 0 {
		return o, nil, fmt.Errorf("raw-ssh exit %d: %s", o.code, tailOf(o.stderr, 8))
	}
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(o.stdout)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			sums[f[0]] = f[1]
		}
	}
	return o, sums, nil
}
