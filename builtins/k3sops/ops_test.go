package k3sops

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport/fake"
)

// cluster is a server and an agent on fake executors, with a CA set on
// the server's disk, the leaf certificates K3s issues and the agent's
// server-ca.crt.
type cluster struct {
	run            *testRun
	server, agent  *inventory.Node
	srvEx, agentEx *fake.Executor
	cas, leaves    map[string][]byte
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	now := time.Now()
	cas := must(k3s.GenerateClusterCAs(now, ""))
	leaves := must(k3s.IssueLeafCerts(cas, k3s.LeafOptions{NodeName: "server-1", Now: now}))
	c := &cluster{cas: cas, leaves: leaves, server: testNode("server-1", inventory.RoleServer), agent: testNode("agent-1", inventory.RoleAgent),
		srvEx: fake.New("server-1"), agentEx: fake.New("agent-1")}
	for p, data := range cas {
		c.srvEx.SetFile(ServerDir(c.server)+"/"+p, data, 0o600)
	}
	for p, data := range leaves {
		c.srvEx.SetFile(c.server.K3s.DataDir+"/"+p, data, 0o600)
	}
	c.agentEx.SetFile(c.agent.K3s.DataDir+"/agent/server-ca.crt", cas[k3s.PathServerCA], 0o600)
	c.srvEx.SetFile(ServerDir(c.server)+"/"+k3s.PathToken, []byte("K10"+strings.Repeat("ab", 32)+"::server:"+testPassword+"\n"), 0o600)
	answerFetch(c.srvEx)
	answerFetch(c.agentEx)
	c.srvEx.On(`^systemctl show`, fake.Reply{Stdout: "ActiveState=active\nSubState=running\n"})
	c.run = &testRun{nodes: []*inventory.Node{c.server, c.agent}, execs: map[string]transportExecutor{"server-1": c.srvEx, "agent-1": c.agentEx}}
	return c
}

// serveSupervisor makes the server's executor answer dials of its
// supervisor with TLS: the serving certificate given, and GET /cacerts
// with cacerts.
func (c *cluster) serveSupervisor(t *testing.T, certPEM, keyPEM, cacerts []byte) {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c.srvEx.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		client, server := net.Pipe()
		go func() {
			defer server.Close()
			tc := tls.Server(server, &tls.Config{Certificates: []tls.Certificate{pair}})
			req, err := http.ReadRequest(bufio.NewReader(tc))
			if err != nil {
				return
			}
			resp := &http.Response{StatusCode: http.StatusNotFound, ProtoMajor: 1, ProtoMinor: 1, Request: req, Header: http.Header{}}
			if req.URL.Path == "/cacerts" {
				resp.StatusCode = http.StatusOK
				resp.Body = ioNopCloser(string(cacerts))
				resp.ContentLength = int64(len(cacerts))
			}
			_ = resp.Write(tc)
		}()
		return client, nil
	}
}

// datastore is the bootstrap data holding cas.
// testPassword is the password of the test servers' token.
const testPassword = "0123456789abcdef"

func datastoreOf(t *testing.T, cas map[string][]byte, via string) *Datastore {
	t.Helper()
	d := &Datastore{Key: k3s.StorageKey(testPassword), Revision: 7, Via: via, data: k3s.BootstrapData{}}
	for _, bf := range k3s.BootstrapFiles {
		if data, ok := cas[bf.Path]; ok {
			d.data[bf.Key] = k3s.File{Content: data, Timestamp: time.Now()}
		}
	}
	if err := d.describe(); err != nil {
		t.Fatal(err)
	}
	return d
}

func (c *cluster) target(t *testing.T, n *inventory.Node, ex *fake.Executor) *Target {
	t.Helper()
	return must(NewTarget(context.Background(), c.run, n, ex, "k3s.verify"))
}

// TestCheckListsEveryCertificate: Check reads the server's certificates
// as `k3s certificate check` lists them, judges them against the warning
// window, and fails only when asked to.
func TestCheckListsEveryCertificate(t *testing.T) {
	c := newCluster(t)
	c.run.execs = map[string]transportExecutor{"server-1": c.srvEx}
	res := must(Check(context.Background(), c.run, "k3s.check", CheckOptions{Nodes: []*inventory.Node{c.server}, WarnDays: 30}))
	if !res.OK || len(res.Rows) < 10 {
		t.Fatalf("ok=%v with %d rows, want ok with the server's certificates:\n%s", res.OK, len(res.Rows), res.Table)
	}
	for _, r := range res.Rows {
		if r.Node != "server-1" || r.Status != k3s.StatusOK || r.ResidualDays < 300 {
			t.Errorf("row %+v: want server-1, OK, about a year left", r)
		}
	}
	if res.Counts[k3s.StatusOK] != len(res.Rows) {
		t.Errorf("counts %v, want every row OK", res.Counts)
	}
	if !strings.Contains(c.run.output(), "serving-kube-apiserver.crt") {
		t.Errorf("the table was not printed:\n%s", c.run.output())
	}
	// A window longer than the leaves' year makes them all WARNING.
	res = must(Check(context.Background(), c.run, "k3s.check", CheckOptions{Nodes: []*inventory.Node{c.server}, WarnDays: 400, Quiet: true}))
	if res.OK || res.Counts[k3s.StatusWarning] == 0 {
		t.Errorf("warn_days=400: ok=%v counts=%v, want warnings", res.OK, res.Counts)
	}
	_, err := Check(context.Background(), c.run, "k3s.check", CheckOptions{Nodes: []*inventory.Node{c.server}, WarnDays: 400, Quiet: true, Fail: true})
	if err == nil || !strings.Contains(err.Error(), "need attention") {
		t.Errorf("fail=True: got %v, want a failure naming the certificates", err)
	}
}

// TestVerifyNodes: a server whose disk, live chain and /cacerts match the
// datastore and an agent that trusts it are ok; an agent with an old
// server-ca.crt and a server serving a certificate of another CA are not,
// and the rows say why.
func TestVerifyNodes(t *testing.T) {
	c := newCluster(t)
	ds := datastoreOf(t, c.cas, "server-1")
	c.serveSupervisor(t, c.leaves["server/tls/serving-kube-apiserver.crt"], c.leaves["server/tls/serving-kube-apiserver.key"], c.cas[k3s.PathServerCA])
	srv := c.target(t, c.server, c.srvEx).verifyNode(context.Background(), ds, true)
	if !srv.OK || srv.Disk != "ok" || srv.Live != "ok" || srv.Cacerts != "ok" {
		t.Fatalf("server row %+v, want ok everywhere", srv)
	}
	agent := c.target(t, c.agent, c.agentEx).verifyNode(context.Background(), ds, true)
	if !agent.OK || agent.Agent != "ok" {
		t.Fatalf("agent row %+v, want ok", agent)
	}

	// Another cluster's CA on the agent and behind the supervisor.
	other := must(k3s.GenerateClusterCAs(time.Now(), ""))
	otherLeaves := must(k3s.IssueLeafCerts(other, k3s.LeafOptions{NodeName: "server-1", Now: time.Now()}))
	c.agentEx.SetFile(c.agent.K3s.DataDir+"/agent/server-ca.crt", other[k3s.PathServerCA], 0o600)
	agent = c.target(t, c.agent, c.agentEx).verifyNode(context.Background(), ds, true)
	if agent.OK || !strings.HasPrefix(agent.Agent, "OLD ") || len(agent.Problems) != 1 {
		t.Errorf("agent with another CA: row %+v, want OLD and one problem", agent)
	}
	c.serveSupervisor(t, otherLeaves["server/tls/serving-kube-apiserver.crt"], otherLeaves["server/tls/serving-kube-apiserver.key"], other[k3s.PathServerCA])
	srv = c.target(t, c.server, c.srvEx).verifyNode(context.Background(), ds, true)
	if srv.OK || srv.Disk != "ok" || !strings.HasPrefix(srv.Live, "OLD ") || !strings.HasPrefix(srv.Cacerts, "OLD ") {
		t.Errorf("server serving another CA: row %+v, want disk ok, live and /cacerts OLD", srv)
	}

	// The disk differs from the datastore: a rotation the datastore's set
	// is valid for (previous) is told apart from drift.
	rotated := must(k3s.GenerateRotation(c.cas, time.Now()))
	dsNew := datastoreOf(t, k3s.StagedFiles(rotated), "server-1")
	srv = c.target(t, c.server, c.srvEx).verifyNode(context.Background(), dsNew, false)
	if srv.OK || !strings.HasPrefix(srv.Disk, "OLD ") || !srv.Previous {
		t.Errorf("server before its restart into a rotation: row %+v, want OLD and previous", srv)
	}
	srv = c.target(t, c.server, c.srvEx).verifyNode(context.Background(), datastoreOf(t, other, "server-1"), false)
	if srv.OK || srv.Previous {
		t.Errorf("server with an unrelated datastore CA: row %+v, want drift (not previous)", srv)
	}
}

// TestVerifyDownServerIsAnOutage: a server whose unit is not active is
// reported with its service state, not as drift.
func TestVerifyDownServerIsAnOutage(t *testing.T) {
	c := newCluster(t)
	ds := datastoreOf(t, c.cas, "server-1")
	c.srvEx.On(`^systemctl show`, fake.Reply{Stdout: "ActiveState=activating\nSubState=auto-restart\n"})
	row := c.target(t, c.server, c.srvEx).verifyNode(context.Background(), ds, true)
	if row.OK || row.Service != "activating (auto-restart)" || row.Disk != "ok" || row.Cacerts != "down" {
		t.Errorf("row %+v, want service activating (auto-restart), disk ok, /cacerts down", row)
	}
}

// TestVerdict: focus decides the result, the table and problems are
// printed unless quiet, fail turns a stale focus node into an error
// naming it, and an expected CA the datastore lacks is a failure.
func TestVerdict(t *testing.T) {
	c := newCluster(t)
	ds := datastoreOf(t, c.cas, "server-1")
	rows := []Row{
		{Node: "server-1", Role: "server", OK: true, Disk: "ok", Live: "ok", Cacerts: "ok", Agent: "-"},
		{Node: "agent-1", Role: "agent", OK: false, Disk: "-", Live: "-", Cacerts: "-", Agent: "OLD x", Problems: []string{"agent server-ca.crt holds x"}},
	}
	res := must(verdict(c.run, "k3s.verify", VerifyOptions{}, ds, rows, []*inventory.Node{c.server}))
	if !res.OK || len(res.Stale) != 1 || res.Stale[0] != "agent-1" {
		t.Errorf("focus on server-1: ok=%v stale=%v, want ok with agent-1 stale", res.OK, res.Stale)
	}
	if out := c.run.output(); !strings.Contains(out, "agent-1: agent server-ca.crt holds x") || !strings.Contains(out, "STALE") {
		t.Errorf("output lacks the table or the problem:\n%s", out)
	}
	_, err := verdict(c.run, "k3s.verify", VerifyOptions{Fail: true, Quiet: true}, ds, rows, []*inventory.Node{c.server, c.agent})
	if err == nil || !strings.Contains(err.Error(), "1 node(s) do not hold the datastore's CA") || !strings.Contains(err.Error(), "agent-1") {
		t.Errorf("fail with agent-1 in focus: got %v", err)
	}
	res = must(verdict(c.run, "k3s.verify", VerifyOptions{Expect: "feed", Quiet: true}, ds, rows[:1], []*inventory.Node{c.server}))
	if res.OK {
		t.Errorf("expect=feed with another datastore CA: ok, want not ok")
	}
}

// TestVerifyPlannedInCheckMode: in check mode a CA the datastore does not
// hold yet is what the run would rotate to: "would verify", planned, ok.
func TestVerifyPlannedInCheckMode(t *testing.T) {
	c := newCluster(t)
	c.run.check = true
	c.run.nodes, c.run.execs = nil, map[string]transportExecutor{}
	// No server is reachable: the datastore cannot be read, which a
	// planned verify must still report (it reads before it plans).
	_, err := Verify(context.Background(), c.run, "k3s.verify", VerifyOptions{Nodes: []*inventory.Node{c.server}, Expect: "feed"})
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("unreachable datastore in check mode: %v, want the error", err)
	}
}

// TestVerifyServerTokenMustOpenTheDatastore: a server whose own token does
// not open the datastore (K3s fails at its next start), or through which
// the datastore could not be read, is not ok even though another server
// read the datastore and its CA files are right.
func TestVerifyServerTokenMustOpenTheDatastore(t *testing.T) {
	c := newCluster(t)
	c.serveSupervisor(t, c.leaves["server/tls/serving-kube-apiserver.crt"], c.leaves["server/tls/serving-kube-apiserver.key"], c.cas[k3s.PathServerCA])
	tokenPath := ServerDir(c.server) + "/" + k3s.PathToken
	c.srvEx.SetFile(tokenPath, []byte("K10dead::server:x\n"), 0o600)
	row := c.target(t, c.server, c.srvEx).verifyNode(context.Background(), datastoreOf(t, c.cas, "server-2"), true)
	if row.OK || row.Datastore != "token" || len(row.Problems) != 1 || !strings.Contains(row.Problems[0], tokenPath) || !strings.Contains(row.Problems[0], "would not come back from a restart") {
		t.Errorf("garbled token: row %+v, want one problem naming %s", row, tokenPath)
	}
	for _, p := range row.Problems {
		if strings.Contains(p, "server:x") {
			t.Errorf("a problem shows the token: %q", p)
		}
	}

	c.srvEx.SetFile(tokenPath, []byte("K10"+strings.Repeat("ab", 32)+"::server:"+testPassword+"\n"), 0o600)
	ds := datastoreOf(t, c.cas, "server-2")
	ds.Failed = map[string]string{"server-1": "etcd at 10.9.9.9:2379 (reached from node server-1): connection refused"}
	row = c.target(t, c.server, c.srvEx).verifyNode(context.Background(), ds, true)
	if row.OK || row.Datastore != "unreadable" || len(row.Problems) != 1 || !strings.Contains(row.Problems[0], "cannot read the datastore itself with its own token and etcd endpoint (read via server-2 instead), so what it sees cannot be told: etcd at 10.9.9.9:2379") {
		t.Errorf("etcd unreachable through server-1: row %+v, want one problem saying so", row)
	}
}

// TestVerifyServerTokenOfAnotherCluster: a well-formed token that is not
// the one the datastore is encrypted with.
func TestVerifyServerTokenOfAnotherCluster(t *testing.T) {
	c := newCluster(t)
	c.serveSupervisor(t, c.leaves["server/tls/serving-kube-apiserver.crt"], c.leaves["server/tls/serving-kube-apiserver.key"], c.cas[k3s.PathServerCA])
	tokenPath := ServerDir(c.server) + "/" + k3s.PathToken
	c.srvEx.SetFile(tokenPath, []byte("another-password\n"), 0o600)
	row := c.target(t, c.server, c.srvEx).verifyNode(context.Background(), datastoreOf(t, c.cas, "server-2"), true)
	if row.OK || len(row.Problems) != 1 || !strings.Contains(row.Problems[0], tokenPath+" is not the token the datastore is encrypted with") {
		t.Errorf("another cluster's token: row %+v, want one problem naming %s", row, tokenPath)
	}
}
