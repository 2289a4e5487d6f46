package k3stest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner/inventory"
)

// handleTokenRotate answers `k3s token rotate` as the builtins send it:
// the old and the new token on stdin, read into K3S_TOKEN and a shell
// variable (`{ read -r K3S_TOKEN && read -r ...; } && ... exec k3s token
// rotate ...`).
func (c *Cluster) handleTokenRotate(sn *simNode) {
	sn.ex.OnFunc(`^\{ read -r K3S_TOKEN && read -r \w+; \} && export K3S_TOKEN && exec k3s token rotate `, func(_ string, stdin []byte, stdout, stderr io.Writer) int {
		lines := strings.Split(string(stdin), "\n")
		if len(lines) < 2 {
			fmt.Fprintln(stderr, "fake cluster: k3s token rotate wants the old and the new token on stdin")
			return 1
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.tokenRotate(sn, strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1]), stdout, stderr)
	})
}

// tokenRotate is K3s's `k3s token rotate` and its server handler
// (pkg/cli/token, pkg/server/handlers/token.go) on a fixed release: the
// CLI validates the old token against the server (CA hash, then basic
// auth with the password the server read at its start), the handler
// normalizes the new token (refusing a bootstrap token: k3s#12982), gives
// the passwd file's server (and shared node) user the new password,
// rewrites SD/token, and re-encrypts the bootstrap data under the new
// token's key, deleting the old one.
func (c *Cluster) tokenRotate(sn *simNode, old, newTok string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stdout, "WARNING: Recommended to keep a record of the old token. If restoring from a snapshot, you must use the token associated with that snapshot.")
	if sn.n.Role != inventory.RoleServer || sn.state != "active" {
		fmt.Fprintln(stderr, "level=fatal msg=\"Get \\\"https://127.0.0.1:6443/cacerts\\\": connection refused\"")
		return 1
	}
	ot, err := k3s.ParseToken(old)
	if err != nil {
		fmt.Fprintf(stderr, "level=fatal msg=\"%v\"\n", err)
		return 1
	}
	if ot.Secure() {
		if h, _ := k3s.HashCA(sn.cacerts); h != ot.CAHash {
			fmt.Fprintf(stderr, "level=fatal msg=\"token CA hash does not match the Cluster CA certificate hash: %s != %s\"\n", ot.CAHash, h)
			return 1
		}
	}
	if ot.Password != sn.auth["server"] {
		fmt.Fprintln(stderr, "level=fatal msg=\"https://127.0.0.1:6443/v1-k3s/token: 401 Unauthorized\"")
		return 1
	}
	if err := c.rotateTokenHandler(sn, newTok); err != nil {
		sn.log("level=error msg=\"token error ID 4242: %v\"", err)
		fmt.Fprintln(stderr, "level=fatal msg=\"see server log for details: Internal error occurred: token error ID 4242\"")
		return 1
	}
	fmt.Fprintln(stdout, "Token rotated, restart k3s nodes with new token")
	return 0
}

// rotateTokenHandler is the server side of the rotation.
func (c *Cluster) rotateTokenHandler(sn *simNode, newTok string) error {
	pass, err := k3s.NormalizeToken(newTok)
	if err != nil {
		return err
	}
	eff, err := k3s.Effective(sn.sources())
	if err != nil {
		return err
	}
	agentToken := strings.TrimSpace(eff["agent-token"].Value) != ""
	pw, oldPass, err := k3s.RotatePasswd(sn.file(sn.sd()+"/"+k3s.PathPasswd), pass, agentToken)
	if err != nil {
		return err
	}
	hash, err := k3s.HashCA(sn.file(sn.sd() + "/" + k3s.PathServerCA))
	if err != nil {
		return err
	}
	sn.ex.SetFile(sn.sd()+"/"+k3s.PathPasswd, pw, 0o600)
	sn.ex.SetFile(sn.sd()+"/token", []byte(k3s.FormatToken(hash, "server", pass)+"\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, err := c.Datastore(ctx)
	if err != nil {
		return err
	}
	data[k3s.KeyPasswdFile] = k3s.File{Timestamp: time.Now(), Content: pw}
	c.password = pass
	if err := c.saveBootstrap(ctx, data); err != nil {
		return err
	}
	if k3s.StorageKey(oldPass) != k3s.StorageKey(pass) {
		if _, err := c.cli.Delete(ctx, k3s.StorageKey(oldPass)); err != nil {
			return err
		}
	}
	sn.log("level=info msg=\"Saving cluster bootstrap data to datastore\"")
	return nil
}
