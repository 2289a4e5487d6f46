package k3s

import (
	"bytes"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Paths of the server credentials relative to SD.
const (
	PathServerCANoChain = "tls/server-ca.nochain.crt"
	PathClientCANoChain = "tls/client-ca.nochain.crt"
	PathServiceCurrent  = "tls/service.current.key"
	PathToken           = "token"
)

// GenerateClusterCAs returns the CA set a K3s server creates at its first
// start, keyed by path relative to SD: tls/{server,client,request-header}-ca.{crt,key},
// tls/etcd/{server,peer}-ca.{crt,key} (self-signed EC P-256, CN
// "<prefix>-ca@<now.Unix()>", valid from now-1h for 3650 days),
// tls/service.key (RSA 2048), cred/passwd (server and node users, both with
// serverPassword's password part; a random one when empty) and
// cred/ipsec.psk (96 hex chars and a newline) (k3s-ca-rotation.md §4;
// golden files.txt, deps.go createSigningCertKey).
func GenerateClusterCAs(now time.Time, serverPassword string) (map[string][]byte, error) {
	out := map[string][]byte{}
	nb := now.Add(-Backdate)
	for _, t := range CATypes {
		key, keyPEM, err := newECKey()
		if err != nil {
			return nil, err
		}
		cert, err := createCA(caSpec{
			cn:        fmt.Sprintf("%s-ca@%d", t.FirstStartPrefix, now.Unix()),
			notBefore: nb,
			notAfter:  nb.Add(CAValidity),
		}, key, nil, nil)
		if err != nil {
			return nil, err
		}
		out[t.CertPath] = encodeCert(cert)
		out[t.KeyPath] = keyPEM
	}
	svc, err := newRSAKeyPEM()
	if err != nil {
		return nil, err
	}
	out[PathServiceKey] = svc

	pass := serverPassword
	if p, err := NormalizeToken(serverPassword); err == nil {
		pass = p
	}
	if pass == "" {
		if pass, err = randomHex(16); err != nil {
			return nil, err
		}
	}
	out[PathPasswd] = PasswdFile(pass, pass)
	psk, err := randomHex(48)
	if err != nil {
		return nil, err
	}
	out[PathIPSECKey] = []byte(psk + "\n")
	return out, nil
}

// randomHex is K3s's util.Random: n random bytes, hex encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// PasswdFile renders SD/cred/passwd as K3s writes it: CSV records
// "<pass>,<user>,<user>,<role>" for node (k3s:agent) and server
// (k3s:server) (k3s-ca-rotation.md §4; golden files.txt: 59 bytes for the
// password "secret"). K3s writes the two lines in map order; this writes
// node first.
func PasswdFile(serverPassword, nodePassword string) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.WriteAll([][]string{
		{nodePassword, "node", "node", "k3s:agent"},
		{serverPassword, "server", "server", "k3s:server"},
	})
	return buf.Bytes()
}

// PasswdEntry is one user of SD/cred/passwd.
type PasswdEntry struct {
	Password, User, UID, Role string
}

// ParsePasswd reads SD/cred/passwd, the CSV basic-auth file the supervisor
// checks /v1-k3s/* credentials against (k3s-ca-rotation.md §2 "Auth").
func ParsePasswd(data []byte) ([]PasswdEntry, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("parse passwd file: %w", err)
	}
	var out []PasswdEntry
	for i, rec := range recs {
		if len(rec) < 3 {
			return nil, fmt.Errorf("parse passwd file: line %d: want pass,user,uid[,groups]", i+1)
		}
		e := PasswdEntry{Password: rec[0], User: rec[1], UID: rec[2]}
		if len(rec) > 3 {
			e.Role = strings.Join(rec[3:], ",")
		}
		out = append(out, e)
	}
	return out, nil
}
