package lab_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// Tests of issue 10: the simulator against what real K3s and systemd do.

// nodeEtcdGet reads the bootstrap key through the etcd member at endpoint
// with the etcd client certificate, key and CA bundle on node's disk.
func nodeEtcdGet(t *testing.T, l *lab.Lab, node, endpoint, password string) error {
	t.Helper()
	etls := filepath.Join(l.NodeRoot(node), "var/lib/rancher/k3s/server/tls/etcd")
	cli := etcdClientWith(t, []string{endpoint}, filepath.Join(etls, "client.crt"), filepath.Join(etls, "client.key"), filepath.Join(etls, "server-ca.crt"))
	ctx := ctxT(t)
	resp, err := cli.Get(ctx, k3s.StorageKey(password))
	if err == nil && len(resp.Kvs) != 1 {
		t.Fatalf("%d bootstrap keys through %s", len(resp.Kvs), endpoint)
	}
	cli.Close()
	return err
}

// TestEtcdMembersAcrossThreeRotations pins issue 10 #1: one member per
// server with certificates from that node's disk. Three rotations in a
// row (the second used to fail with "x509: certificate signed by unknown
// authority"); in the middle of each, a restarted member and members not
// yet restarted serve each other's clients (cross-signed roots), and
// afterwards every node's own client certificate reaches every member.
func TestEtcdMembersAcrossThreeRotations(t *testing.T) {
	t.Parallel()
	l := startLab(t, lab.Options{Servers: 3, Version: "v1.32.3+k3s1"})
	c := connect(t, l)
	st := l.Status()
	pw := c.tokenPassword("server-1")
	ep := func(i int) string { return st.Nodes[i].Address + ":2379" }
	for round := 1; round <= 3; round++ {
		_, newCA := rotateCA(t, c)
		// As caretaker restarts: with the regenerate file, so that the
		// supervisor's certificate follows the CA (without it, the cached
		// certificate of the first CA no longer verifies after the second
		// rotation, as on real K3s).
		restart := "touch " + filepath.Join(c.sd("server-1"), "tls", "dynamic-cert-regenerate") + " && systemctl restart k3s"
		c.mustRun("server-1", restart)
		// server-1 rotated, server-2/3 not yet: each side's client reaches
		// the other side's member.
		if err := nodeEtcdGet(t, l, "server-1", ep(2), pw); err != nil {
			t.Fatalf("round %d: server-1's rotated client cert against server-3's member: %v", round, err)
		}
		if err := nodeEtcdGet(t, l, "server-3", ep(0), pw); err != nil {
			t.Fatalf("round %d: server-3's old client cert against server-1's rotated member: %v", round, err)
		}
		for _, s := range []string{"server-2", "server-3"} {
			c.mustRun(s, restart)
		}
		for _, s := range c.servers() {
			if got := c.serverCA(s); !sameBytes(got, newCA) {
				t.Fatalf("round %d: %s holds %s, want the new CA %s", round, s, shortHash(got), shortHash(newCA))
			}
			for j := range c.servers() {
				if err := nodeEtcdGet(t, l, s, ep(j), pw); err != nil {
					t.Errorf("round %d: %s's client cert against member %d: %v", round, s, j+1, err)
				}
			}
			if out := c.mustRun(s, "systemctl is-active k3s"); out != "active\n" {
				t.Errorf("round %d: %s is %q", round, s, out)
			}
		}
		// The client files lab status names follow the current CAs.
		if files := datastoreFiles(t, l.Status(), pw); !sameBytes(files[k3s.PathServerCA], newCA) {
			t.Errorf("round %d: the datastore does not hold the new CA", round)
		}
	}
	// Each member's data lives in its own node's tree.
	for _, s := range c.servers() {
		if _, err := os.Stat(filepath.Join(l.NodeRoot(s), "var/lib/rancher/k3s/server/db/etcd/member/wal")); err != nil {
			t.Errorf("%s: no etcd member data in its tree: %v", s, err)
		}
	}
}

// TestEtcdQuorum: with two of three servers down, a restarted third does
// not become ready and the datastore does not answer; once a second
// server starts, both come up.
func TestEtcdQuorum(t *testing.T) {
	t.Parallel()
	// A buggy release: its peers serve the HTTP bootstrap from disk at
	// once (a fixed one waits 10 s for the quorum-less datastore first).
	l := startLab(t, lab.Options{Servers: 3})
	c := connect(t, l)
	st := l.Status()
	pw := c.tokenPassword("server-1")
	c.mustRun("server-2", "systemctl stop k3s")
	c.mustRun("server-3", "systemctl stop k3s")
	for _, port := range []string{"2379", "2380"} {
		if conn, err := net.DialTimeout("tcp", st.Nodes[1].Address+":"+port, time.Second); err == nil {
			conn.Close()
			t.Errorf("server-2's etcd member still listens on :%s while its K3s is stopped", port)
		}
	}
	c.mustRun("server-1", "systemctl restart --no-block k3s")
	time.Sleep(time.Second)
	if out := c.mustRun("server-1", "systemctl show k3s -p ActiveState,SubState"); out != "ActiveState=activating\nSubState=start\n" {
		t.Fatalf("server-1 without quorum:\n%s", out)
	}
	etls := filepath.Join(l.NodeRoot("server-1"), "var/lib/rancher/k3s/server/tls/etcd")
	cli := etcdClientWith(t, []string{st.Nodes[0].Address + ":2379"}, filepath.Join(etls, "client.crt"), filepath.Join(etls, "client.key"), filepath.Join(etls, "server-ca.crt"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := cli.Get(ctx, k3s.StorageKey(pw))
	cancel()
	if err == nil {
		t.Fatalf("the datastore answered with one member of three")
	}
	c.mustRun("server-2", "systemctl start k3s")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := c.mustRun("server-1", "systemctl is-active k3s || true")
		if out == "active\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server-1 did not become active once quorum was back: %q\n%s", out, c.journal("server-1"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := nodeEtcdGet(t, l, "server-1", st.Nodes[0].Address+":2379", pw); err != nil {
		t.Errorf("the datastore after quorum returned: %v", err)
	}
}

// servedLeaf returns the certificate a server's supervisor serves.
func servedLeaf(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr+":6443", &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // inspecting the served certificate
	if err != nil {
		t.Fatalf("TLS to %s:6443: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestServingCertCachedAndShared pins issue 10 #4: after a rotation
// without the regenerate file, restarted servers keep serving the cached
// certificate issued by the OLD CA; with SD/tls/dynamic-cert-regenerate
// touched before each restart, each restarted server issues one from the
// new CA, and the running servers adopt the last writer's certificate.
func TestServingCertCachedAndShared(t *testing.T) {
	t.Parallel()
	const sync = 300 * time.Millisecond
	l := startLab(t, lab.Options{Servers: 3, Version: "v1.32.3+k3s1", ServingCertSyncDelay: sync})
	c := connect(t, l)
	st := l.Status()
	oldCA, newCA := rotateCA(t, c)
	oldRoot, _ := k3s.ParseCertsPEM(oldCA)
	newCerts, _ := k3s.ParseCertsPEM(newCA)
	for _, s := range c.servers() {
		c.mustRun(s, "systemctl restart k3s")
	}
	time.Sleep(3 * sync)
	for i, s := range c.servers() {
		leaf := servedLeaf(t, st.Nodes[i].Address)
		if leaf.Issuer.CommonName != oldRoot[0].Subject.CommonName {
			t.Errorf("%s serves a certificate issued by %s, want the OLD CA %s (no regenerate file)", s, leaf.Issuer.CommonName, oldRoot[0].Subject.CommonName)
		}
	}
	regen := filepath.Join(c.sd("server-1"), "tls", "dynamic-cert-regenerate")
	var last *x509.Certificate
	for i, s := range c.servers() {
		c.mustRun(s, "touch "+regen+" && systemctl restart k3s")
		if _, _, code := c.run(s, "test -e "+regen); code == 0 {
			t.Errorf("%s: the start did not consume %s", s, regen)
		}
		last = servedLeaf(t, st.Nodes[i].Address)
		if last.Issuer.CommonName != newCerts[0].Subject.CommonName {
			t.Errorf("%s after a restart with the regenerate file serves a certificate issued by %s, want the new CA %s", s, last.Issuer.CommonName, newCerts[0].Subject.CommonName)
		}
	}
	for i, s := range c.servers() {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			leaf := servedLeaf(t, st.Nodes[i].Address)
			if leaf.SerialNumber.Cmp(last.SerialNumber) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s serves serial %s, want the last writer's (server-3) %s", s, leaf.SerialNumber, last.SerialNumber)
			}
		}
	}
	// The supervisor certificate verifies with the new bundle and names
	// every server.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(newCA)
	if _, err := last.Verify(x509.VerifyOptions{Roots: pool, DNSName: "server-1"}); err != nil {
		t.Errorf("the adopted certificate does not verify for server-1: %v", err)
	}
	// `k3s certificate rotate` (with the k3s-server service) also makes the
	// next start issue a new serving certificate.
	c.mustRun("server-2", "systemctl stop k3s && k3s certificate rotate && test -e "+regen+" && systemctl start k3s")
	if leaf := servedLeaf(t, st.Nodes[1].Address); leaf.SerialNumber.Cmp(last.SerialNumber) == 0 {
		t.Errorf("server-2 serves the same certificate after k3s certificate rotate and a restart")
	}
}

// TestRestartAlwaysCrashLoop pins issue 10 #5: a start that fails makes
// the blocking systemctl fail with systemd's message; the unit then waits
// activating/auto-restart and systemd starts it again every RestartSec,
// counting NRestarts, each attempt with a new InvocationID; once the cause
// is gone it comes up by itself.
func TestRestartAlwaysCrashLoop(t *testing.T) {
	t.Parallel()
	const delay = 400 * time.Millisecond
	l := startLab(t, lab.Options{Servers: 1, RestartDelay: delay})
	c := connect(t, l)
	show := "systemctl show k3s --property=ActiveState,SubState,Result,NRestarts,InvocationID,MainPID,ActiveEnterTimestampMonotonic,ExecMainStartTimestamp"
	before := parseShow(t, c.mustRun("server-1", show))
	if err := l.SetFault("server-1", lab.FaultFailStart); err != nil {
		t.Fatal(err)
	}
	_, errs, code := c.run("server-1", "systemctl restart k3s")
	want := "Job for k3s.service failed because the control process exited with error code.\nSee \"systemctl status k3s.service\" and \"journalctl -xeu k3s.service\" for details.\n"
	if code != 1 || errs != want {
		t.Fatalf("restart with fail-start: exit %d, stderr %q", code, errs)
	}
	out := c.mustRun("server-1", show)
	keys := regexp.MustCompile(`(?m)^(\w+)=`).FindAllStringSubmatch(out, -1)
	var order []string
	for _, k := range keys {
		order = append(order, k[1])
	}
	if got := strings.Join(order, ","); got != "MainPID,Result,NRestarts,ExecMainStartTimestamp,ActiveState,SubState,ActiveEnterTimestampMonotonic,InvocationID" {
		t.Errorf("systemctl show prints %s, not in systemd's order", got)
	}
	p := parseShow(t, out)
	if p["ActiveState"] != "activating" || p["SubState"] != "auto-restart" || p["Result"] != "exit-code" || p["MainPID"] != "0" || p["NRestarts"] != "0" {
		t.Errorf("after the failed start:\n%s", out)
	}
	if out, _, code := c.run("server-1", "systemctl is-active k3s"); out != "activating\n" || code != 3 {
		t.Errorf("is-active = %q exit %d", out, code)
	}
	var p2 map[string]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p2 = parseShow(t, c.mustRun("server-1", show))
		if n, _ := strconv.Atoi(p2["NRestarts"]); n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NRestarts = %s after 10s with RestartSec %s", p2["NRestarts"], delay)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(p2["InvocationID"]) || p2["InvocationID"] == p["InvocationID"] || p["InvocationID"] == before["InvocationID"] {
		t.Errorf("InvocationIDs %q → %q → %q, want 32 hex chars, new for each attempt", before["InvocationID"], p["InvocationID"], p2["InvocationID"])
	}
	if j := c.journal("server-1"); !strings.Contains(j, "k3s.service: Scheduled restart job, restart counter is at 1.") {
		t.Errorf("journal lacks systemd's restart line:\n%s", j)
	}
	if err := l.SetFault("server-1", lab.FaultClear); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.mustRun("server-1", "systemctl is-active k3s || true") != "active\n" {
		if time.Now().After(deadline) {
			t.Fatalf("the unit did not come up by itself after the fault was cleared")
		}
		time.Sleep(50 * time.Millisecond)
	}
	p3 := parseShow(t, c.mustRun("server-1", show))
	a0, _ := strconv.ParseInt(before["ActiveEnterTimestampMonotonic"], 10, 64)
	a3, _ := strconv.ParseInt(p3["ActiveEnterTimestampMonotonic"], 10, 64)
	if a3 <= a0 || p3["Result"] != "success" || p3["MainPID"] == "0" || p3["ExecMainStartTimestamp"] == "" {
		t.Errorf("after recovery:\n%v\nbefore:\n%v", p3, before)
	}
}

func parseShow(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("systemctl show line %q", line)
		}
		m[k] = v
	}
	return m
}

// TestHangStartAndNoBlock: `systemctl restart --no-block` returns at
// once; with hang-start the unit stays activating (start), K3s logs the
// validation error every few seconds, a blocking restart waits (here cut
// by timeout), and clearing the fault lets the start complete.
func TestHangStartAndNoBlock(t *testing.T) {
	t.Parallel()
	l := startLab(t, lab.Options{Servers: 1})
	c := connect(t, l)
	if err := l.SetFault("server-1", lab.FaultHangStart); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, errs, code := c.run("server-1", "systemctl restart --no-block k3s"); code != 0 || errs != "" {
		t.Fatalf("restart --no-block: exit %d %q", code, errs)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("restart --no-block took %s", took)
	}
	time.Sleep(500 * time.Millisecond)
	if out := c.mustRun("server-1", "systemctl show k3s -p ActiveState,SubState"); out != "ActiveState=activating\nSubState=start\n" {
		t.Errorf("hanging start:\n%s", out)
	}
	if _, _, code := c.run("server-1", "timeout 1 systemctl restart k3s"); code != 124 {
		t.Errorf("a blocking restart of a hanging start returned (exit %d), want it to wait (timeout's 124)", code)
	}
	// The hang (and its error line) begins once the start-up before it
	// is done, which on a loaded machine outlasts the restart above.
	hangLogged := func(j string) bool {
		return strings.Contains(j, `level=error msg="Failed to validate connection to cluster at https://127.0.0.1:6443: `) &&
			strings.Contains(j, "x509: certificate signed by unknown authority")
	}
	j := c.journal("server-1")
	for deadline := time.Now().Add(15 * time.Second); !hangLogged(j) && time.Now().Before(deadline); j = c.journal("server-1") {
		time.Sleep(100 * time.Millisecond)
	}
	if !hangLogged(j) {
		t.Errorf("journal lacks the hang's error line:\n%s", j)
	}
	if err := l.SetFault("server-1", lab.FaultClear); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.mustRun("server-1", "systemctl is-active k3s || true") != "active\n" {
		if time.Now().After(deadline) {
			t.Fatalf("the hanging start did not complete after clear")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJournalctlSinceShortISO: `journalctl -u k3s --since @<unix.frac>
// --no-pager -o short-iso` lists only what came after, in journald's
// short-iso format.
func TestJournalctlSinceShortISO(t *testing.T) {
	t.Parallel()
	l := startLab(t, lab.Options{Servers: 1})
	c := connect(t, l)
	since := strings.TrimSpace(c.mustRun("server-1", "sleep 0.2; date +%s.%N"))
	c.mustRun("server-1", "systemctl restart k3s")
	out := c.mustRun("server-1", "journalctl -u k3s --since @"+since+" --no-pager -o short-iso")
	// +0000, as systemd 252 (Debian 12) prints it on the real engine's nodes.
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} server-1 (k3s|systemd)\[\d+\]: `)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if !strings.Contains(lines[0], "Stopping k3s.service - Lightweight Kubernetes...") {
		t.Errorf("first line after --since is %q, want the stop", lines[0])
	}
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("not journald's short-iso: %q", l)
		}
	}
	if !strings.Contains(out, "Started k3s.service - Lightweight Kubernetes.") || strings.Count(out, "Starting k3s v") != 1 {
		t.Errorf("journal since the restart:\n%s", out)
	}
}
