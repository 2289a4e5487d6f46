package ssh

import (
	"context"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/transport"
	"github.com/caretaker/caretaker/runner/transport/transporttest"
)

// BenchmarkRawSSHSession is the floor for one command over SSH: a raw
// x/crypto/ssh session running `true` on the in-process server, on one
// reused connection. Compare the executor and runner benchmarks with it.
func BenchmarkRawSSHSession(b *testing.B) {
	srv := transporttest.StartServer(b, nil)
	priv, err := transporttest.ClientKey()
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	client, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User:            "caretaker",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey()),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	b.ResetTimer()
	for b.Loop() {
		s, err := client.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Run("true"); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.StopTimer()
	if srv.Connections() != 1 {
		b.Fatalf("connections = %d, want 1", srv.Connections())
	}
}

// BenchmarkSSHExecutorRun is Executor.Run of `true` on the same server:
// the difference to BenchmarkRawSSHSession is the executor's own cost
// (timeouts, session slot, sudo/PID wrapping, output gates).
func BenchmarkSSHExecutorRun(b *testing.B) {
	n, srv := transporttest.StartNode(b, "bench-1")
	e, err := Dial(context.Background(), n)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	var sink transporttest.LineFunc = func(string) {}
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Run(ctx, transport.Command{Line: "true", Stdout: sink, Stderr: sink}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if srv.Connections() != 1 {
		b.Fatalf("connections = %d, want 1", srv.Connections())
	}
}
