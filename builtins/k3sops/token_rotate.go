package k3sops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
	"github.com/caretaker/caretaker/runner/transport"
)

// Server token rotation (the rotate-token playbook) with K3s's own `k3s
// token rotate`. The new token never appears in a Starlark value, a shared
// value, an event or a journal: it lives in a 0600 file on the controller,
// the run's copy in DIR = <state>/backups/<run>/datastore/ (beside the
// datastore snapshot), as new-token, with the token it replaces as
// old-token (a snapshot taken before the rotation restores only with that
// one). The operations take the path of such a file.
//
// What `k3s token rotate` does (pkg/server/handlers/token.go): on the
// server it is sent to, the "server" user of SD/cred/passwd gets the new
// password (and the "node" user too when agents share the server token,
// that is when no agent-token is configured), SD/token is rewritten as
// K10<hash of that server's CA>::server:<new>, and the bootstrap data in
// the datastore is re-encrypted under the new token's key (the old key is
// deleted). Every running server keeps accepting the old password until it
// restarts (the basic-auth file is read at start), and a server restarting
// with the old token configured fails ("bootstrap data already found and
// encrypted with different token"): every server's token sources must hold
// the new token before its next start, then the agents'.

// TokenFileName and OldTokenFileName are the names of the run's copies.
const (
	TokenFileName    = "new-token"
	OldTokenFileName = "old-token"
)

// tokenRotateTimeout bounds `k3s token rotate`.
const tokenRotateTimeout = 2 * time.Minute

// RunTokenDir is where a run keeps its token files on the controller:
// beside its datastore snapshot.
func RunTokenDir(run Run) string {
	return filepath.Join(run.StateDir(), "backups", run.RunID(), "datastore")
}

// ReadTokenFile reads a new server token from a controller file: a regular
// file that neither group nor others may read or write (like an SSH key;
// chmod 600), holding one token (surrounding whitespace is ignored) that
// k3s.ValidateNewToken accepts. The token is registered as a secret
// (run may be nil at load time). Errors never include the token and wrap
// errs.ErrBadInput.
func ReadTokenFile(run Run, path string) (string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("new token file %s: %s: %w", path, fmt.Sprintf(format, args...), errs.ErrBadInput)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", bad("does not exist")
	case err != nil:
		return "", bad("%v", err)
	case !fi.Mode().IsRegular():
		return "", bad("is not a regular file")
	case fi.Mode().Perm()&0o077 != 0:
		return "", bad("its mode is %04o: a token file must not be readable or writable by group or others; chmod 600 %s", fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", bad("%v", err)
	}
	tok := strings.TrimSpace(string(data))
	if run != nil {
		redactToken(run, tok)
	}
	if err := k3s.ValidateNewToken(tok); err != nil {
		return "", bad("%v", err)
	}
	return tok, nil
}

// NewTokenResult is the new token prepared for a rotation: File is the
// run's copy on the controller ("" under --check when it would be
// generated), OldFile the token it replaces. Source says where it came
// from: "file", "generated" or "earlier attempt" (this run's copy).
type NewTokenResult struct {
	File    string `json:"file"`
	OldFile string `json:"old_file"`
	Source  string `json:"source"`
	// Rotated says the datastore already opens with the new token.
	Rotated bool `json:"rotated"`
	Planned bool `json:"planned"`
}

// NewToken prepares the new token of a rotation on server c: this run's
// copy when an earlier attempt made one, else the token in source (a
// controller file, ReadTokenFile), else a generated one
// (k3s.GenerateToken). It writes the run's copies (0600) before anything
// uses them: the new token, and the one the datastore opens with now
// (unless that is the new one already).
func NewToken(ctx context.Context, c *Target, source string) (*NewTokenResult, error) {
	dir := RunTokenDir(c.Run)
	res := &NewTokenResult{File: filepath.Join(dir, TokenFileName), OldFile: filepath.Join(dir, OldTokenFileName)}
	tok, err := c.earlierToken(res.File, source)
	if err != nil {
		return nil, err
	}
	switch {
	case tok != "":
		res.Source = "earlier attempt"
	case source != "":
		if tok, err = ReadTokenFile(c.Run, source); err != nil {
			return nil, c.errorf("%w", err)
		}
		res.Source = "file"
	default:
		if tok, err = k3s.GenerateToken(); err != nil {
			return nil, c.errorf("%w", err)
		}
		c.Run.Redact(tok)
		res.Source = "generated"
	}
	cur, key, err := c.currentPassphrase(ctx)
	if err != nil {
		return nil, err
	}
	// The datastore opens with it already: a rotation to it happened (or
	// it is the token the cluster runs with); the playbook's preflight
	// tells which nodes still need it.
	res.Rotated = key == k3s.StorageKey(tok)
	if res.Source == "earlier attempt" {
		c.Run.Output(runner.StreamLog, "the new token of an earlier attempt of this run is in "+res.File)
		return res, nil
	}
	what := fmt.Sprintf("save the new token (%s) to %s and the current one to %s (0600)", res.Source, res.File, res.OldFile)
	wrote := false
	err = c.Run.Wet(what, func() error {
		wrote = true
		if cur != "" && !res.Rotated {
			if err := writeLocalPrivate(res.OldFile, []byte(cur+"\n")); err != nil {
				return c.errorf("write %s: %w", res.OldFile, err)
			}
		}
		if err := writeLocalPrivate(res.File, []byte(tok+"\n")); err != nil {
			return c.errorf("write %s: %w", res.File, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !wrote {
		res.Planned = true
		if res.Source == "generated" {
			res.File = ""
		} else {
			res.File = source
		}
	}
	return res, nil
}

// earlierToken returns the token of this run's copy when it exists (a
// resumed run), after checking that source, if given, holds the same.
func (c *Target) earlierToken(copyPath, source string) (string, error) {
	if _, err := os.Stat(copyPath); err != nil {
		return "", nil
	}
	tok, err := readRunToken(c.Run, copyPath)
	if err != nil {
		return "", c.errorf("%w", err)
	}
	if source != "" {
		given, err := ReadTokenFile(c.Run, source)
		if err != nil {
			return "", c.errorf("%w", err)
		}
		if given != tok {
			return "", c.errorf("%s holds another token than the one this run started rotating to (%s): resume with the same -p new_token_file: %w", source, copyPath, errs.ErrBadInput)
		}
	}
	return tok, nil
}

// readRunToken reads a token file caretaker wrote (the run's copy).
func readRunToken(run Run, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the run's token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	redactToken(run, tok)
	if err := k3s.ValidateNewToken(tok); err != nil {
		return "", fmt.Errorf("the run's token file %s: %w", path, err)
	}
	return tok, nil
}

// tokenFromFile is the token of an operation's token_file argument; ""
// (nil error) under --check when the token would be generated.
func (c *Target) tokenFromFile(path string) (string, error) {
	if path == "" {
		if checkMode(c.Run) {
			return "", nil
		}
		return "", c.errorf("no token file given (k3s.new_token's file): %w", errs.ErrBadInput)
	}
	tok, err := readRunToken(c.Run, path)
	if err != nil {
		return "", c.errorf("%w", err)
	}
	return tok, nil
}

// bootstrapKeys lists the datastore's /bootstrap keys through server c.
func (c *Target) bootstrapKeys(ctx context.Context) ([]string, error) {
	cli, err := c.etcdClient(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/bootstrap", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, c.errorf("list the bootstrap keys in etcd at %s: %w", c.Node.K3s.EtcdEndpoint, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys, nil
}

// datastoreKey is the one /bootstrap key of the datastore.
func (c *Target) datastoreKey(ctx context.Context) (string, error) {
	keys, err := c.bootstrapKeys(ctx)
	if err != nil {
		return "", err
	}
	switch len(keys) {
	case 0:
		return "", c.errorf("etcd holds no bootstrap data (no /bootstrap key): is this a K3s datastore?")
	case 1:
		return keys[0], nil
	}
	return "", c.errorf("etcd holds %d bootstrap keys (%s), K3s expects one: a token rotation left the datastore inconsistent; see journalctl -u %s", len(keys), strings.Join(keys, ", "), c.Node.K3s.Service)
}

// currentPassphrase is the passphrase of server c's SD/token when it opens
// the datastore ("" when it does not), and the datastore's key.
func (c *Target) currentPassphrase(ctx context.Context) (string, string, error) {
	key, err := c.datastoreKey(ctx)
	if err != nil {
		return "", "", err
	}
	tok, err := c.serverToken(ctx)
	if err != nil {
		return "", "", err
	}
	pass, err := k3s.NormalizeToken(tok)
	if err != nil || k3s.StorageKey(pass) != key {
		return "", key, nil
	}
	c.Run.Redact(pass)
	return pass, key, nil
}

// RotateTokenResult is what RotateToken did.
type RotateTokenResult struct {
	Changed bool `json:"changed"`
	// Key is the datastore's bootstrap key afterwards (the new token's).
	Key     string `json:"key"`
	Planned bool   `json:"planned"`
}

// RotateToken runs `k3s token rotate` on server c to the token in
// tokenFile, unless the datastore already opens with it. The old token
// (c's SD/token) and the new one reach K3s on stdin, through the shell's
// variables: neither is in the command line caretaker sends; the new one
// is on k3s's own command line (K3s has no other way to take it) until
// K3s hides its arguments (proctitle) right after it starts. Afterwards
// the datastore must hold the bootstrap data under the new token's key
// only. The way back is another rotation (to the old token, kept in the
// run's old-token file): the undo record says so.
func RotateToken(ctx context.Context, c *Target, tokenFile string) (*RotateTokenResult, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; k3s token rotate runs on a server")
	}
	tok, err := c.tokenFromFile(tokenFile)
	if err != nil {
		return nil, err
	}
	key, err := c.datastoreKey(ctx)
	if err != nil {
		return nil, err
	}
	if tok != "" && key == k3s.StorageKey(tok) {
		c.Run.Output(runner.StreamLog, "the datastore already opens with the new token: nothing to rotate")
		return &RotateTokenResult{Key: key}, nil
	}
	old, err := c.serverToken(ctx)
	if err != nil {
		return nil, err
	}
	if pass, err := k3s.NormalizeToken(old); err != nil || k3s.StorageKey(pass) != key {
		return nil, c.errorf("%s/token does not open the datastore (key %s): K3s would refuse the rotation; run rotate-token's preflight or k3s.verify", c.sd(), key)
	}
	line := fmt.Sprintf(`{ read -r K3S_TOKEN && read -r CARETAKER_NEW_TOKEN; } && export K3S_TOKEN && exec k3s token rotate --data-dir %s --server %s --new-token "$CARETAKER_NEW_TOKEN"`,
		transport.ShellQuote(c.dd()), transport.ShellQuote("https://"+c.Node.K3s.SupervisorEndpoint))
	res := &RotateTokenResult{Planned: true}
	undo, _ := json.Marshal(map[string]string{"node": c.Node.Name, "previous_key": key,
		"how": "the datastore is encrypted with the new token now; to go back, rotate again to the old token (caretaker run rotate-token -p new_token_file=" + filepath.Join(RunTokenDir(c.Run), OldTokenFileName) + ")"})
	err = c.Run.Wet("run on "+c.Node.Name+": k3s token rotate to the new token (tokens on stdin)", func() error {
		res.Planned = false
		if err := c.Run.Undo("k3s.rotate_token", undo); err != nil {
			return c.errorf("record the undo action before rotating (nothing was changed): %w", err)
		}
		cmd := transport.Command{Line: line, Stdin: strings.NewReader(old + "\n" + tok + "\n"), Timeout: tokenRotateTimeout}
		_, _, stderr, err := c.Run.RunCommand(ctx, c.Exec, c.Node, cmd, true, false)
		if err != nil {
			return c.errorf("k3s token rotate: %w%s", err, tail(stderr))
		}
		return c.checkRotated(ctx, tok, res)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// checkRotated checks that the datastore holds the bootstrap data under
// the new token's key only, and opens with it.
func (c *Target) checkRotated(ctx context.Context, tok string, res *RotateTokenResult) error {
	want := k3s.StorageKey(tok)
	var keys []string
	// K3s's CLI waits a second for the datastore to settle; the keys are
	// read until they do, for a few seconds more.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := pollEvery(wctx, 500*time.Millisecond, func() (bool, error) {
		var err error
		keys, err = c.bootstrapKeys(wctx)
		return err == nil && len(keys) == 1 && keys[0] == want, err
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if len(keys) != 1 || keys[0] != want {
		return c.errorf("k3s token rotate reported success but the datastore's bootstrap keys are %s, not only %s (the new token's); see journalctl -u %s on %s", strings.Join(keys, ", "), want, c.Node.K3s.Service, c.Node.Name)
	}
	ds, err := c.readDatastore(ctx)
	if err != nil {
		return c.errorf("after k3s token rotate: %w", err)
	}
	res.Changed, res.Key = true, ds.Key
	c.Run.Output(runner.StreamLog, fmt.Sprintf("the datastore is encrypted with the new token now (%s); %s/token holds it", ds.Key, c.sd()))
	return nil
}
