package realnode

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// newEd25519 returns an OpenSSH private key file and its authorized_keys
// line.
func newEd25519(comment string) (priv, pub []byte, key ssh.PublicKey, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(sk, comment)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err = ssh.NewPublicKey(pk)
	if err != nil {
		return nil, nil, nil, err
	}
	line := bytes.TrimSpace(ssh.MarshalAuthorizedKey(key))
	if comment != "" {
		line = append(line, ' ')
		line = append(line, comment...)
	}
	return pem.EncodeToMemory(block), append(line, '\n'), key, nil
}

// clientKey returns Dir/id_ed25519 (created with mode 0600 when missing)
// as a signer, and its public authorized_keys line.
func clientKey(dir string) (ssh.Signer, []byte, error) {
	p := filepath.Join(dir, "id_ed25519")
	if b, err := os.ReadFile(p); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, nil, fmt.Errorf("realnode: client key %s: %w (remove it to get a new one)", p, err)
		}
		return s, ssh.MarshalAuthorizedKey(s.PublicKey()), nil
	}
	priv, pub, _, err := newEd25519("caretaker-lab")
	if err != nil {
		return nil, nil, fmt.Errorf("realnode: generate the client key: %w", err)
	}
	if err := writeFileAtomic(p, priv, 0o600); err != nil {
		return nil, nil, fmt.Errorf("realnode: write the client key: %w", err)
	}
	if err := writeFileAtomic(p+".pub", pub, 0o644); err != nil {
		return nil, nil, fmt.Errorf("realnode: write the client key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(priv)
	return s, pub, err
}

// sshConfig is a strict client config for user: Dir/id_ed25519 and host
// keys checked against Dir/known_hosts only.
func sshConfig(dir, user string) (*ssh.ClientConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, "id_ed25519"))
	if err != nil {
		return nil, fmt.Errorf("realnode: client key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("realnode: client key: %w", err)
	}
	hk, err := knownhosts.New(filepath.Join(dir, "known_hosts"))
	if err != nil {
		return nil, fmt.Errorf("realnode: known_hosts: %w", err)
	}
	return &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hk,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           5 * time.Second,
	}, nil
}

// sshRun runs cmd on addr:22 as user over real SSH with strict host key
// checking. code is the remote exit status (-1 when none).
func sshRun(ctx context.Context, dir, addr, user, cmd string) (stdout, stderr string, code int, err error) {
	cfg, err := sshConfig(dir, user)
	if err != nil {
		return "", "", -1, err
	}
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addr, "22"))
	if err != nil {
		return "", "", -1, fmt.Errorf("ssh %s@%s: %w", user, addr, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr+":22", cfg)
	if err != nil {
		conn.Close()
		return "", "", -1, fmt.Errorf("ssh %s@%s: %w", user, addr, err)
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	sess, err := client.NewSession()
	if err != nil {
		return "", "", -1, fmt.Errorf("ssh %s@%s: session: %w", user, addr, err)
	}
	defer sess.Close()
	var o, e bytes.Buffer
	sess.Stdout, sess.Stderr = &o, &e
	err = sess.Run(cmd)
	var exit *ssh.ExitError
	switch {
	case err == nil:
		return o.String(), e.String(), 0, nil
	case errors.As(err, &exit):
		return o.String(), e.String(), exit.ExitStatus(), nil
	case errors.Is(err, io.EOF) && ctx.Err() != nil:
		err = ctx.Err()
	}
	return o.String(), e.String(), -1, fmt.Errorf("ssh %s@%s: %s: %w", user, addr, cmd, err)
}

// knownHostsLine is "<ip> ssh-ed25519 AAAA..." for a node's host key.
func knownHostsLine(addr string, pubLine []byte) string {
	f := strings.Fields(string(pubLine))
	if len(f) < 2 {
		return ""
	}
	return addr + " " + f[0] + " " + f[1]
}
