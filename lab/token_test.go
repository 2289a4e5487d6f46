package lab_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/lab"
)

// `k3s token rotate` behaves as K3s's CLI and handler (pkg/cli/token,
// pkg/server/handlers/token.go, with the fix for k3s#12982): on the server
// it reaches, the passwd file's server and shared node user get the new
// password and SD/token is rewritten with it; the bootstrap data moves to
// the new token's key; nothing changes on the other servers, which only
// start again once their token sources hold the new token. A bootstrap
// token as the new token is refused and changes nothing.
func TestTokenRotateAsK3sDoes(t *testing.T) {
	l := startLab(t, lab.Options{Servers: 2, Agents: 1, Version: "v1.32.3+k3s1", Scenario: lab.ScenarioClusterInit, SecureToken: true})
	c := connect(t, l)
	st := l.Status()
	old := c.tokenPassword("server-1")
	passwd2 := c.read("server-2", filepath.Join(c.sd("server-2"), k3s.PathPasswd))
	token2 := c.read("server-2", filepath.Join(c.sd("server-2"), "token"))

	// The #12982 trap: refused by the handler, nothing changed.
	_, errOut, code := c.run("server-1", "k3s token rotate --token "+old+" --new-token abcdef.0123456789abcdef")
	if code == 0 || !strings.Contains(errOut, "failed to normalize server token") && !strings.Contains(c.journal("server-1"), "failed to normalize server token") {
		t.Fatalf("a bootstrap token as the new token: exit %d, stderr %s; want a refusal", code, errOut)
	}
	if got := c.tokenPassword("server-1"); got != old {
		t.Fatalf("after a refused rotation server-1's SD/token changed")
	}
	keys := bootstrapKeys(t, st)
	if len(keys) != 1 || keys[0] != k3s.StorageKey(old) {
		t.Fatalf("after a refused rotation the bootstrap keys are %v", keys)
	}

	// K3S_TOKEN carries the old token, as caretaker passes it.
	const newPW = "Lab-rotated-token-0123456789"
	out := c.mustRun("server-1", "K3S_TOKEN="+old+" k3s token rotate --data-dir /var/lib/rancher/k3s --new-token "+newPW)
	if !strings.Contains(out, "Token rotated, restart k3s nodes with new token") {
		t.Errorf("k3s token rotate said:\n%s", out)
	}
	tok := strings.TrimSpace(string(c.read("server-1", filepath.Join(c.sd("server-1"), "token"))))
	if h, _ := k3s.HashCA(c.serverCA("server-1")); tok != k3s.FormatToken(h, "server", newPW) {
		t.Errorf("server-1 SD/token after the rotation is not K10<its CA hash>::server:<new>")
	}
	entries, _ := k3s.ParsePasswd(c.read("server-1", filepath.Join(c.sd("server-1"), k3s.PathPasswd)))
	for _, e := range entries {
		if (e.User == "server" || e.User == "node") && e.Password != newPW {
			t.Errorf("server-1 passwd: %s does not have the new password", e.User)
		}
	}
	if keys := bootstrapKeys(t, st); len(keys) != 1 || keys[0] != k3s.StorageKey(newPW) {
		t.Errorf("bootstrap keys after the rotation: %v, want only %s", keys, k3s.StorageKey(newPW))
	}
	if files := datastoreFiles(t, st, newPW); !strings.Contains(string(files[k3s.PathPasswd]), newPW) {
		t.Errorf("the datastore's passwd file does not hold the new password")
	}
	if !sameBytes(c.read("server-2", filepath.Join(c.sd("server-2"), k3s.PathPasswd)), passwd2) || !sameBytes(c.read("server-2", filepath.Join(c.sd("server-2"), "token")), token2) {
		t.Errorf("k3s token rotate on server-1 changed server-2's passwd or SD/token")
	}

	// server-2 restarted with the old token configured does not start.
	if _, _, code := c.run("server-2", "systemctl restart k3s"); code == 0 {
		t.Fatalf("server-2 started with the old token after the rotation")
	}
	if j := c.journal("server-2"); !strings.Contains(j, "bootstrap data already found and encrypted with different token") {
		t.Errorf("server-2's journal does not say why it failed:\n%s", j)
	}
	cfg := filepath.Join("/etc/rancher/k3s/config.yaml")
	c.write("server-2", cfg, []byte(strings.ReplaceAll(string(c.read("server-2", cfg)), "::server:"+old, "::server:"+newPW)))
	c.mustRun("server-2", "systemctl restart k3s")
	if got := c.tokenPassword("server-2"); got != newPW {
		t.Errorf("server-2's SD/token after its restart with the new token does not hold it")
	}
}

// bootstrapKeys lists the /bootstrap keys of the lab's etcd.
func bootstrapKeys(t *testing.T, st lab.Status) []string {
	t.Helper()
	resp, err := etcdClient(t, st).Get(context.Background(), "/bootstrap", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}
