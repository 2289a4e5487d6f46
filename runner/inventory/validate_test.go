package inventory

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/caretaker/caretaker/runner/errs"
)

// TestAddressesAndEndpoints: an address that is neither an IP address nor
// a host name, and an endpoint that is not host:port, are refused where
// they are written.
func TestAddressesAndEndpoints(t *testing.T) {
	for _, tc := range []struct{ field, value, want string }{
		{"address", `"not an address"`, `inv.yaml:5: clusters[0].nodes[0].address: must be an IP address or a host name, got "not an address"`},
		{"address", `"-bad.example"`, "must be an IP address or a host name"},
		{"address", `"10.0.0.1:22"`, "must be an IP address or a host name"},
		{"k3s", `{etcd_endpoint: "127.0.0.1"}`, `inv.yaml:5: clusters[0].nodes[0].k3s.etcd_endpoint: must be host:port`},
		{"k3s", `{supervisor_endpoint: "127.0.0.1:99999"}`, "a port from 1 to 65535"},
		{"k3s", `{etcd_endpoint: "no such:2379"}`, `got host "no such"`},
	} {
		src := "clusters:\n  - name: c\n    nodes:\n      - name: s1\n        " + tc.field + ": " + tc.value + "\n        role: server\n"
		if tc.field != "address" {
			src = "clusters:\n  - name: c\n    nodes:\n      - name: s1\n        " + tc.field + ": " + tc.value + "\n        address: 10.0.0.1\n        role: server\n"
		}
		_, err := Parse("inv.yaml", []byte(src))
		if err == nil || !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %s: err = %v; want bad input with %q", tc.field, tc.value, err, tc.want)
		}
	}
	for _, ok := range []string{"10.0.0.1", "::1", "k3s-1.example.com", "node_2", "fe80::1"} {
		if !validHost(ok) {
			t.Errorf("validHost(%q) = false", ok)
		}
	}
}

// TestCheckControllerFiles: identity files must be private keys (an
// encrypted one is fine), and strict host key checking needs its
// known_hosts file; the errors name the inventory line.
func TestCheckControllerFiles(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("id", pem.EncodeToMemory(block))
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	write("id_enc", pem.EncodeToMemory(enc))
	write("notakey", []byte("hello\n"))
	write("known_hosts", nil)
	load := func(ssh string) ([]*Node, error) {
		p := filepath.Join(dir, "inv.yaml")
		write("inv.yaml", []byte("clusters:\n  - name: c\n    ssh:\n"+ssh+"    nodes:\n      - {name: s1, address: 10.0.0.1, role: server}\n"))
		inv, err := Load(p)
		if err != nil {
			return nil, err
		}
		return inv.Clusters[0].Nodes, nil
	}
	for _, tc := range []struct{ ssh, want string }{
		{"      identity_files: [id, id_enc]\n      known_hosts: known_hosts\n", ""},
		{"      identity_files: [nosuch]\n      known_hosts: known_hosts\n", "inv.yaml:4: clusters[0].ssh.identity_files: identity file " + filepath.Join(dir, "nosuch") + " does not exist"},
		{"      identity_files: [notakey]\n      known_hosts: known_hosts\n", "is not a private key"},
		{"      identity_files: [id]\n      known_hosts: absent\n", "inv.yaml:5: clusters[0].ssh.known_hosts: the known_hosts file " + filepath.Join(dir, "absent") + " does not exist"},
		{"      identity_files: [id]\n      known_hosts: absent\n      host_key_policy: accept-new\n", ""},
	} {
		nodes, err := load(tc.ssh)
		if err != nil {
			t.Fatalf("%q: %v", tc.ssh, err)
		}
		err = CheckControllerFiles(nodes)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v; want no error", tc.ssh, err)
		case tc.want != "" && (err == nil || !errors.Is(err, errs.ErrBadInput) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: err = %v; want bad input with %q", tc.ssh, err, tc.want)
		}
	}
}

// TestNoMatchNamesGroupsAndLabels: a selector that selects nothing is
// refused with what the cluster has.
func TestNoMatchNamesGroupsAndLabels(t *testing.T) {
	inv, err := Parse("inv.yaml", []byte(goodInventory))
	if err != nil {
		t.Fatal(err)
	}
	err = inv.Clusters[0].NoMatch("--limit", "label:zone=x")
	for _, want := range []string{`--limit "label:zone=x" selects no node of cluster prod`, "nodes: s1, a1, s2", "groups: group:etcd", "labels: label:zone=a"} {
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("NoMatch: %v; want %q", err, want)
		}
	}
}
