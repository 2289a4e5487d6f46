package runner_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caretaker/caretaker/builtins"
	"github.com/caretaker/caretaker/internal/sshserver"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport/sshnode"
)

// benchNodes starts n in-process SSH servers on 127.0.0.1 with pinned host
// keys and returns a cluster whose nodes reach them.
func benchNodes(b *testing.B, n int) (*inventory.Cluster, ssh.Signer) {
	b.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	blk, _ := ssh.MarshalPrivateKey(priv, "bench")
	dir := b.TempDir()
	keyPath := filepath.Join(dir, "id")
	os.WriteFile(keyPath, pem.EncodeToMemory(blk), 0o600)
	khPath := filepath.Join(dir, "known_hosts")
	kh, _ := os.Create(khPath)
	hk, err := sshserver.GenerateHostKey()
	if err != nil {
		b.Fatal(err)
	}
	cl := &inventory.Cluster{Name: "bench"}
	for i := 0; i < n; i++ {
		srv, err := sshserver.Start(sshserver.Config{Addr: "127.0.0.1:0", HostKey: hk, AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Close() })
		kh.WriteString(knownhosts.Line([]string{knownhosts.Normalize(srv.Addr())}, srv.HostKey()) + "\n")
		host, port, _ := net.SplitHostPort(srv.Addr())
		p, _ := strconv.Atoi(port)
		cl.Nodes = append(cl.Nodes, &inventory.Node{
			Name: "n" + strconv.Itoa(i), Cluster: "bench", Address: host, Port: p, User: "bench", Role: inventory.RoleServer,
			SSH: inventory.SSHSettings{IdentityFiles: []string{keyPath}, KnownHosts: khPath, HostKeyPolicy: inventory.HostKeyStrict,
				ConnectTimeout: inventory.Duration(10 * time.Second)},
		})
	}
	kh.Close()
	return cl, signer
}

func benchPlan(b *testing.B, cl *inventory.Cluster, src string) *runner.Plan {
	b.Helper()
	pre, _ := builtins.Predeclared()
	plan, err := runner.Load(runner.LoadOptions{Path: "pb.star", FS: fstest.MapFS{"pb.star": {Data: []byte(src)}}, Predeclared: pre, Cluster: cl})
	if err != nil {
		b.Fatal(err)
	}
	return plan
}

// BenchmarkRunnerOverhead compares one playbook step running `true` on one
// node (plan → run → Starlark → executor → SSH session → events) with the
// same command on a raw x/crypto/ssh session over a kept connection. It
// reports both and the overhead per step per node (target: under 1 ms).
func BenchmarkRunnerOverhead(b *testing.B) {
	cl, signer := benchNodes(b, 1)
	n := cl.Nodes[0]
	raw, err := ssh.Dial("tcp", net.JoinHostPort(n.Address, strconv.Itoa(n.Port)), &ssh.ClientConfig{
		User: "bench", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func() ssh.HostKeyCallback { cb, _ := knownhosts.New(n.SSH.KnownHosts); return cb }(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	plan := benchPlan(b, cl, "def body(node):\n    node.run(\"true\", changes = False)\nstep(\"true\", body)\n")
	pool := runner.NewPool(sshnode.Dial)
	defer pool.Close()
	if _, err := pool.Get(context.Background(), n); err != nil {
		b.Fatal(err)
	}
	var rawTotal, runTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		s, err := raw.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Run("true"); err != nil {
			b.Fatal(err)
		}
		s.Close()
		t1 := time.Now()
		_, err = runner.NewRun(plan, runner.RunOptions{Pool: pool, NodeValue: builtins.NodeValue, Sink: runner.SinkFunc(func(runner.Event) {})}).Execute(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		rawTotal += t1.Sub(t0)
		runTotal += time.Since(t1)
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(per(rawTotal), "raw-ms/step")
	b.ReportMetric(per(runTotal), "caretaker-ms/step")
	b.ReportMetric(per(runTotal-rawTotal), "overhead-ms/step")
	b.ReportMetric(float64(runTotal)/float64(rawTotal), "ratio")
}

// BenchmarkFanOut200 runs one step (`true`) on 200 in-process SSH nodes at
// once, cold: connections are made within the timed run. It reports the
// wall time and the peak heap in use.
func BenchmarkFanOut200(b *testing.B) {
	cl, _ := benchNodes(b, 200)
	plan := benchPlan(b, cl, "def body(node):\n    node.run(\"true\", changes = False)\nstep(\"true\", body)\n")
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		done, err := runner.NewRun(plan, runner.RunOptions{Connect: sshnode.Dial, NodeValue: builtins.NodeValue}).Execute(context.Background())
		if err != nil {
			b.Fatalf("%v: %+v", err, done.Failed)
		}
	}
	wall := time.Since(start) / time.Duration(b.N)
	close(stop)
	wg.Wait()
	b.ReportMetric(wall.Seconds(), "wall-s")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
}
