package lab

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
)

// Server token rotation, as K3s does it (pkg/cli/token Rotate and
// pkg/server/handlers/token.go tokenRotate, on a release with the fix for
// k3s-io/k3s#12982): the CLI validates the old token against the server and
// PUTs the new one to /v1-k3s/token; the handler of the server it reaches
// normalizes the new token, gives the passwd file's "server" user (and the
// "node" user when agents share the server token) the new password,
// rewrites that server's SD/token, re-encrypts the bootstrap data in the
// datastore under the new token's key (deleting the old key) and saves the
// bootstrap data with override. Nothing else changes on any node: the
// other servers keep their SD/token, and every running server keeps
// authenticating with the passwd file it read at its start.

// tokenRotate is `k3s token rotate [--data-dir D] [--token T] [--server
// URL] [--new-token N]`; the token also comes from K3S_TOKEN, else from
// SD/token under K3s's default data dir (the CLI resolves it without
// --data-dir), the server from K3S_URL, else https://127.0.0.1:6443.
func (inv *invocation) tokenRotate(args []string) int {
	f, err := parseCLIFlags(args,
		map[string]string{"data-dir": "data-dir", "d": "data-dir", "kubeconfig": "kubeconfig", "token": "token", "t": "token", "server": "server", "s": "server", "new-token": "new-token"},
		map[string]string{"debug": "debug", "alsologtostderr": "alsologtostderr"})
	if err != nil {
		return inv.cliFatal("%v", err)
	}
	fmt.Fprintln(inv.stdout, "\033[33mWARNING\033[0m: Recommended to keep a record of the old token. If restoring from a snapshot, you must use the token associated with that snapshot.")
	n := inv.n
	token := f.get("token")
	if token == "" {
		token = inv.env["K3S_TOKEN"]
	}
	if token == "" {
		b, err := os.ReadFile(n.host(filepath.Join(n.dataDir, "server", "token")))
		if err != nil {
			return inv.cliFatal("Error: %v", err)
		}
		token = strings.TrimRight(string(b), "\n")
	}
	server := f.get("server")
	if server == "" {
		server = inv.env["K3S_URL"]
	}
	if server == "" {
		server = "https://127.0.0.1:6443"
	}
	info, err := parseAndValidateToken(inv.ctx, n.localURL(server), token, validateOptions{
		user: "server", source: n.ip, warn: func(format string, a ...any) { inv.cliLog("warning", format, a...) },
	})
	if err != nil {
		return inv.cliFatal("Error: %v", err)
	}
	newToken := f.get("new-token")
	body, _ := json.Marshal(struct {
		NewToken *string `json:"newToken,omitempty"`
	}{&newToken})
	if err := info.put(inv.ctx, "/v1-k3s/token", body); err != nil {
		return inv.cliFatal("Error: %v", err)
	}
	fmt.Fprintln(inv.stdout, "Token rotated, restart k3s nodes with new token")
	return 0
}

// handleTokenRotate is PUT /v1-k3s/token (servers only).
func (s *supervisor) handleTokenRotate(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authorize(w, r, "k3s:server"); !ok {
		return
	}
	if r.Method != http.MethodPut {
		sendStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed")
		return
	}
	var req struct {
		NewToken *string `json:"newToken"`
	}
	b, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(b, &req)
	}
	if err != nil {
		sendStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	newToken := ""
	if req.NewToken != nil {
		newToken = *req.NewToken
	}
	if err := s.rotateToken(r.Context(), newToken); err != nil {
		id := rand.IntN(100000)
		s.n.logK3s("error", "token error ID %d: %v", id, err)
		s.n.logK3s("error", "Sending HTTP/%d.%d %d response to %s: token error ID %d", r.ProtoMajor, r.ProtoMinor, http.StatusInternalServerError, r.RemoteAddr, id)
		sendStatus(w, http.StatusInternalServerError, "InternalError", fmt.Sprintf("Internal error occurred: token error ID %d", id))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// rotateToken is the handler's tokenRotate.
func (s *supervisor) rotateToken(ctx context.Context, newToken string) error {
	pwPath := filepath.Join(s.sdHost, k3s.PathPasswd)
	pw, err := os.ReadFile(pwPath)
	if err != nil {
		return err
	}
	if newToken == "" {
		if newToken, err = randomToken(); err != nil {
			return err
		}
	}
	pass, err := k3s.NormalizeToken(newToken)
	if err != nil {
		return err
	}
	eff, err := s.n.effective()
	if err != nil {
		return err
	}
	agentToken := strings.TrimSpace(settingValue(eff, "agent-token")) != ""
	newPW, oldPass, err := k3s.RotatePasswd(pw, pass, agentToken)
	if err != nil {
		return err
	}
	if err := os.WriteFile(pwPath, newPW, 0o600); err != nil {
		return err
	}
	serverCA, err := os.ReadFile(filepath.Join(s.sdHost, k3s.PathServerCA))
	if err != nil {
		return err
	}
	hash, err := k3s.HashCA(serverCA)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.sdHost, "token"), []byte(k3s.FormatToken(hash, "server", pass)+"\n"), 0o600); err != nil {
		return err
	}
	cli := s.datastore()
	if cli == nil {
		return errors.New("etcd is not running on this server")
	}
	if err := migrateBootstrapKey(ctx, cli, oldPass, pass); err != nil {
		return err
	}
	s.setPassphrase(pass)
	s.n.logK3s("info", "Saving cluster bootstrap data to datastore")
	d, err := k3s.ReadBootstrapFromDir(s.sdHost)
	if err != nil {
		return err
	}
	_, err = saveBootstrap(ctx, cli, pass, d, true)
	return err
}

// migrateBootstrapKey is K3s's RotateBootstrapToken (migrateTokens): the
// bootstrap data under the old passphrase's key is decrypted, encrypted
// with the new one and stored under its key, and the old key deleted.
func migrateBootstrapKey(ctx context.Context, kv clientv3.KV, oldPass, newPass string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	oldKey, newKey := k3s.StorageKey(oldPass), k3s.StorageKey(newPass)
	if oldKey == newKey {
		return nil
	}
	resp, err := kv.Get(ctx, oldKey)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return nil // nothing under the old key: nothing to migrate
	}
	plain, err := k3s.Decrypt(oldPass, string(resp.Kvs[0].Value))
	if err != nil {
		return err
	}
	sealed, err := k3s.Encrypt(newPass, plain)
	if err != nil {
		return err
	}
	if _, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(newKey), "=", 0)).
		Then(clientv3.OpPut(newKey, sealed)).
		Commit(); err != nil {
		return err
	}
	_, err = kv.Delete(ctx, oldKey)
	return err
}

// randomToken is K3s's util.Random(16): 16 random bytes, hex encoded.
func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := crand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// setPassphrase and getPassphrase guard the passphrase the process runs
// with (control.Token), which a token rotation changes.
func (s *supervisor) setPassphrase(p string) {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	s.passphrase = p
}

func (s *supervisor) getPassphrase() string {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	return s.passphrase
}

// handleEncryptStatus is GET /v1-k3s/encrypt/status (servers only): the
// secrets-encryption state. The lab does not encrypt secrets; what matters
// is the authentication in front of it (401 for a wrong password, 403 for
// a user without the k3s:server role), which tells whether a server runs
// with a token.
func (s *supervisor) handleEncryptStatus(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authorize(w, r, "k3s:server"); !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"Enable":null,"Stage":"","HashMatch":false,"HashError":"","ActiveKey":"","KeyCounts":null}`)
}
