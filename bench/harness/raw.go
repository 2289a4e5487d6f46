package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caretaker/caretaker/runner/inventory"
)

// rawMain is `harness raw-ssh INVENTORY`: the floor the comparison is
// measured against. One goroutine per node dials with plain
// golang.org/x/crypto/ssh (the lab's key, known_hosts strictly checked),
// runs jobCommand in one session and prints "NODE SHA256"; no playbook,
// no events, no journal.
func rawMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: harness raw-ssh INVENTORY")
		return 2
	}
	inv, err := inventory.Load(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw-ssh:", err)
		return 2
	}
	cl, err := inv.Cluster("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw-ssh:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	for _, n := range cl.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sum, err := rawRun(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", n.Name, err)
				failed++
				return
			}
			fmt.Printf("%s %s\n", n.Name, sum)
		}()
	}
	wg.Wait()
	if failed > 0 {
		return 1
	}
	return 0
}

func rawRun(ctx context.Context, n *inventory.Node) (string, error) {
	if len(n.SSH.IdentityFiles) == 0 {
		return "", fmt.Errorf("no identity file in the inventory")
	}
	pem, err := os.ReadFile(n.SSH.IdentityFiles[0])
	if err != nil {
		return "", err
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return "", err
	}
	hk, err := knownhosts.New(n.SSH.KnownHosts)
	if err != nil {
		return "", err
	}
	port := n.Port
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(n.Address, strconv.Itoa(port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	user := n.User
	if user == "" {
		user = "root"
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hk, HostKeyAlgorithms: []string{ssh.KeyAlgoED25519}})
	if err != nil {
		conn.Close()
		return "", err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var out bytes.Buffer
	s.Stdout = &out
	if err := s.Run(jobCommand); err != nil {
		return "", err
	}
	f := strings.Fields(out.String())
	if len(f) == 0 {
		return "", fmt.Errorf("no output")
	}
	return f[0], nil
}
