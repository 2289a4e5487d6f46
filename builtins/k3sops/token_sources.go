package k3sops

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/inventory"
)

// checkMode says whether run is a --check run (changes are only reported).
func checkMode(run Run) bool {
	switch r := run.(type) {
	case *runner.Env:
		return r.Check
	case interface{ CheckMode() bool }:
		return r.CheckMode()
	}
	return false
}

// The edit records of SetToken: kind "token-rotation" on the node, and an
// undo record that is only a note. Putting the old token back into a
// node's sources alone would stop K3s from starting (the datastore opens
// only with the new token): the way back is another rotation.
const (
	tokenRotationKind = "token-rotation"
	tokenRotationUndo = "k3s.set_token"
)

// TokenSetResult is what SetToken did on a node.
type TokenSetResult struct {
	EditResult
	TokenKind string `json:"token_kind"`
	Reason    string `json:"reason"`
	// Unaffected says the node's token is not the server token (agents
	// joined with the servers' agent-token): it needs no edit and no
	// restart.
	Unaffected bool `json:"unaffected"`
}

// SetToken puts the new server token (tokenFile, the run's copy) into
// every source node c takes its token from, byte for byte except the
// token's password: config.yaml and its drop-ins, --token/-t in the unit,
// K3S_TOKEN in env files and Environment= lines (k3s.ReplaceToken), a
// --token-file/K3S_TOKEN_FILE file, or, on a server with no token
// configured, SD/token itself (K3s falls back to it). A full token keeps
// its CA hash and user: only the password part changes. The originals are
// kept on the node first.
//
// A server's sources are changed only once the datastore opens with the
// new token (k3s token rotate ran), an agent's only once the servers
// accept it (via, a server, authenticates the "node" user with it: K3s
// reads its passwd file at start, so only after its restart). An agent of servers that set agent-token
// joins with that token, which k3s token rotate does not change: it is
// left alone (Unaffected).
func SetToken(ctx context.Context, c *Target, tokenFile string, via *Target) (*TokenSetResult, error) {
	tok, err := c.tokenFromFile(tokenFile)
	if err != nil {
		return nil, err
	}
	ns, err := c.readSources(ctx)
	if err != nil {
		return nil, err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return nil, err
	}
	res := &TokenSetResult{EditResult: editResult(nil, ""), TokenKind: tokenKind(eff)}
	if c.Node.Role == inventory.RoleAgent {
		if via == nil {
			return nil, c.errorf("an agent's token is set through a server of the run (none given)")
		}
		why, err := c.agentUnaffected(ctx, via, res.TokenKind)
		if err != nil || why != "" {
			res.Unaffected, res.Reason = why != "", why
			return res, err
		}
	}
	edits, cur, err := c.tokenEdits(ctx, ns, eff, res.TokenKind, tok)
	if err != nil {
		return nil, err
	}
	if tok != "" && cur == tok && len(edits) == 0 {
		res.Reason = "the token sources already hold the new token"
		c.Run.Output(runner.StreamLog, res.Reason)
		return res, nil
	}
	if tok != "" && !checkMode(c.Run) {
		if err := c.tokenAccepted(ctx, tok, via); err != nil {
			return nil, err
		}
	}
	if tok == "" {
		res.EditResult.Changed, res.Reason = true, "would put the new (generated) token in the token sources"
		_ = c.Run.Wet(fmt.Sprintf("put the new token in the token sources of %s (%s token)", c.Node.Name, res.TokenKind), func() error { return nil })
		return res, nil
	}
	applied, dir, err := c.applyEdits(ctx, tokenRotationKind, tokenRotationUndo, "put the new token", edits, ns, undoData{})
	if err != nil {
		return nil, err
	}
	res.EditResult, res.Reason = editResult(applied, dir), "the token sources hold the new token now"
	return res, nil
}

// agentUnaffected says (non-empty, and logs) why agent c's token is not
// the server token: it joins with a bootstrap token, or the servers (via)
// set agent-token.
func (c *Target) agentUnaffected(ctx context.Context, via *Target, kind string) (string, error) {
	why := ""
	if kind == "bootstrap" {
		why = "joins with a bootstrap token (k3s token create), which k3s token rotate does not change"
	} else if via != nil {
		var err error
		if why, err = via.agentTokenSet(ctx); err != nil {
			return "", err
		}
	}
	if why != "" {
		c.Run.Output(runner.StreamLog, why)
	}
	return why, nil
}

// agentTokenSet says (non-empty) why the agents of server c are not
// affected by a server token rotation: c sets agent-token.
func (c *Target) agentTokenSet(ctx context.Context) (string, error) {
	ns, err := c.readSources(ctx)
	if err != nil {
		return "", err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return "", err
	}
	for _, k := range []string{"agent-token", "agent-token-file"} {
		if s, ok := eff[k]; ok && strings.TrimSpace(s.Value) != "" {
			return fmt.Sprintf("the servers set %s (%s:%d on %s): agents join with that token, which k3s token rotate does not change", k, s.Source, s.Line, c.Node.Name), nil
		}
	}
	return "", nil
}

// tokenEdits computes the edits that put tok (its password; "" under
// --check for a generated token: a placeholder shows the files) into the
// node's token sources, and returns the password the node has now.
func (c *Target) tokenEdits(ctx context.Context, ns *nodeSources, eff map[string]k3s.Setting, kind, tok string) ([]k3s.Edit, string, error) {
	pass := tok
	if pass == "" {
		pass = "caretaker-planned-token"
	}
	switch kind {
	case "secure", "short":
		cur, _ := k3s.ParseToken(strings.TrimSpace(eff["token"].Value))
		edits, err := k3s.ReplaceToken(ns.src, cur.WithPassword(pass).String())
		if err != nil {
			return nil, "", c.errorf("%w", err)
		}
		return edits, cur.Password, nil
	case "file":
		return c.tokenFileEdit(ctx, eff["token-file"], pass)
	case "none":
		if c.Node.Role == inventory.RoleAgent {
			return nil, "", c.errorf("no token is configured (token, K3S_TOKEN, token-file): an agent cannot join without one; configure it first")
		}
		return c.tokenFileEdit(ctx, k3s.Setting{Value: c.sd() + "/" + k3s.PathToken, Source: "K3s's fallback when no token is configured"}, pass)
	}
	return nil, "", c.errorf("its configured token is %s (%s:%d): not a server token caretaker can rotate; fix it by hand", kind, eff["token"].Source, eff["token"].Line)
}

// tokenFileEdit is the edit of a file holding a token (--token-file, or
// SD/token): only the token's password changes.
func (c *Target) tokenFileEdit(ctx context.Context, s k3s.Setting, pass string) ([]k3s.Edit, string, error) {
	p := strings.TrimSpace(s.Value)
	files, err := c.fetchMap(ctx, p)
	if err != nil {
		return nil, "", err
	}
	f, ok := files[p]
	if !ok {
		return nil, "", c.errorf("the token file %s (%s) does not exist", p, s.Source)
	}
	text := strings.TrimSpace(string(f.Data))
	c.redactToken(text)
	cur, err := k3s.ParseToken(text)
	if err != nil {
		return nil, "", c.errorf("the token file %s: %w", p, err)
	}
	after := k3s.ReplaceTokenText(f.Data, cur.WithPassword(pass).String())
	return []k3s.Edit{{Path: p, Before: f.Data, After: after, What: "replaced the token's password in " + p}}, cur.Password, nil
}

// tokenAccepted refuses to put tok in a node's sources before K3s accepts
// it: on a server the datastore must open with it, on an agent the
// servers must have restarted with it (via accepts it for the node user).
func (c *Target) tokenAccepted(ctx context.Context, tok string, via *Target) error {
	if c.Node.Role == inventory.RoleServer {
		key, err := c.datastoreKey(ctx)
		if err != nil {
			return err
		}
		if key != k3s.StorageKey(tok) {
			return c.errorf("the datastore does not open with the new token yet (its key is %s): K3s would not start with it; run k3s.rotate_token first", key)
		}
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	code, _, _, err := via.supervisorDo(actx, tokenProbePath, nil, "node", tok)
	switch {
	case err != nil:
		return c.errorf("ask %s whether it accepts the new token from agents: %w", via.Node.Name, err)
	case code == http.StatusUnauthorized:
		return c.errorf("%s does not accept the new token from agents yet (401 as the node user): restart the servers with the new token first", via.Node.Name)
	}
	return nil
}

// TokenCheck is what VerifyToken found on a node.
type TokenCheck struct {
	Node     string   `json:"node"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
	Planned  bool     `json:"planned"`
}

// VerifyToken checks that node c runs with the new token (tokenFile): on a
// server, SD/token (which K3s rewrites at every start) holds it, the
// datastore holds the bootstrap data under its key only and opens with
// it; on an agent, its configured token holds it (unless the agent joins
// with the servers' agent-token, via). K3s must be active. failOn makes a
// problem an error.
func VerifyToken(ctx context.Context, c *Target, tokenFile string, via *Target, failOn bool) (*TokenCheck, error) {
	tok, err := c.tokenFromFile(tokenFile)
	if err != nil {
		return nil, err
	}
	res := &TokenCheck{Node: c.Node.Name, Problems: []string{}}
	if tok == "" || checkMode(c.Run) {
		res.OK, res.Planned = true, true
		c.Run.Output(runner.StreamCheck, "would verify that "+c.Node.Name+" runs with the new token")
		return res, nil
	}
	if st, err := c.serviceState(ctx); err != nil {
		return nil, err
	} else if st != "active" {
		res.Problems = append(res.Problems, fmt.Sprintf("%s is %s", c.Node.K3s.Service, st))
	}
	if err := c.verifyConfiguredToken(ctx, tok, via, res); err != nil {
		return nil, err
	}
	if c.Node.Role == inventory.RoleServer {
		c.verifyServerRunsToken(ctx, tok, res)
	}
	res.OK = len(res.Problems) == 0
	if res.OK {
		c.Run.Output(runner.StreamLog, c.Node.Name+" runs with the new token")
	} else if failOn {
		return nil, c.errorf("does not run with the new token: %s", strings.Join(res.Problems, "; "))
	}
	return res, nil
}

// verifyServerRunsToken checks that a running server accepts the new
// token (basic auth as the "server" user: K3s reads its passwd file at
// start, so only a server restarted with the new token accepts it), and
// its SD/token and the datastore.
func (c *Target) verifyServerRunsToken(ctx context.Context, tok string, res *TokenCheck) {
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	code, _, _, err := c.supervisorDo(actx, tokenProbePath, nil, "server", tok)
	cancel()
	switch {
	case err != nil:
		res.Problems = append(res.Problems, fmt.Sprintf("the supervisor (%s) did not answer: %v", c.Node.K3s.SupervisorEndpoint, err))
	case code == http.StatusUnauthorized:
		res.Problems = append(res.Problems, "K3s does not accept the new token (401 on "+tokenProbePath+"): it has not restarted with it")
	}
	p := c.sd() + "/" + k3s.PathToken
	if t, err := c.serverToken(ctx); err != nil {
		res.Problems = append(res.Problems, err.Error())
	} else if pass, err := k3s.NormalizeToken(t); err != nil || pass != tok {
		res.Problems = append(res.Problems, p+" does not hold the new token")
	}
	keys, err := c.bootstrapKeys(ctx)
	switch {
	case err != nil:
		res.Problems = append(res.Problems, err.Error())
	case len(keys) != 1 || keys[0] != k3s.StorageKey(tok):
		res.Problems = append(res.Problems, fmt.Sprintf("the datastore's bootstrap keys are %s, want only %s (the new token's)", strings.Join(keys, ", "), k3s.StorageKey(tok)))
	default:
		if _, err := c.readDatastore(ctx); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
	}
}

// tokenProbePath is a supervisor route for servers only (the k3s:server
// role): K3s authenticates before it routes, so a wrong password is 401
// and a right one is not (200 for the server user, 403 for the node user).
const tokenProbePath = "/v1-k3s/encrypt/status"

// verifyConfiguredToken checks the node's configured token (an agent of
// servers with agent-token: nothing to check).
func (c *Target) verifyConfiguredToken(ctx context.Context, tok string, via *Target, res *TokenCheck) error {
	ns, err := c.readSources(ctx)
	if err != nil {
		return err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return err
	}
	if c.Node.Role == inventory.RoleAgent {
		if why, err := c.agentUnaffected(ctx, via, tokenKind(eff)); err != nil || why != "" {
			return err
		}
	}
	_, cur, err := c.tokenEdits(ctx, ns, eff, tokenKind(eff), tok)
	if err != nil {
		return err
	}
	if cur != tok {
		res.Problems = append(res.Problems, "its configured token is not the new one")
	}
	return nil
}

// TokenRow is one node's token state: how the password of its configured
// token (and, on a server, of SD/token) relates to the datastore:
// "current" (opens it), "new" (the new token, not yet in the datastore),
// "other", "none" (no token configured: a server then uses SD/token),
// "agent-token" (an agent of servers that set agent-token), "missing" or
// "-" (does not apply).
type TokenRow struct {
	Node        string `json:"node"`
	Role        string `json:"role"`
	Kind        string `json:"kind"`
	Configured  string `json:"configured"`
	ServerToken string `json:"server_token"`
}

// TokenStatusResult is the token state of the nodes.
type TokenStatusResult struct {
	// Key is the datastore's bootstrap key, read through Via.
	Key string `json:"key"`
	Via string `json:"via"`
	// Rotated says the datastore opens with the new token (token_file).
	Rotated bool `json:"rotated"`
	// Consistent says every server's SD/token and configured token open
	// the datastore (agents' tokens may be agent tokens and do not count).
	Consistent bool       `json:"consistent"`
	Stale      []string   `json:"stale"`
	Rows       []TokenRow `json:"rows"`
	// EarlierTokenFile, when not consistent, is a new-token file of an
	// earlier run on the controller that opens the datastore: the token a
	// rotation in progress rotated to.
	EarlierTokenFile string `json:"earlier_token_file"`
	Table            string `json:"table"`
}

// nodeToken is what TokenStatus reads of one node.
type nodeToken struct {
	kind, configured, serverToken string
	agentToken                    bool
}

// TokenStatus reads the token state of nodes (read-only, also under
// --check): every node's configured token and every server's SD/token,
// compared with the datastore's key. tokenFile is the new token, if known
// ("": this run's copy when an earlier attempt made one).
func TokenStatus(ctx context.Context, run Run, op string, nodes []*inventory.Node, tokenFile string) (*TokenStatusResult, error) {
	newTok := ""
	if own := filepath.Join(RunTokenDir(run), TokenFileName); tokenFile == "" {
		if _, err := os.Stat(own); err == nil {
			tokenFile = own // this run's token (a resumed run)
		}
	}
	if tokenFile != "" {
		var err error
		if newTok, err = readRunToken(run, tokenFile); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	res := &TokenStatusResult{Stale: []string{}, Rows: []TokenRow{}}
	var errsSeen []string
	for _, n := range nodes {
		if n.Role != inventory.RoleServer {
			continue
		}
		c, err := NewTarget(ctx, run, n, nil, op)
		if err == nil {
			if res.Key, err = c.datastoreKey(ctx); err == nil {
				res.Via = n.Name
				break
			}
		}
		errsSeen = append(errsSeen, err.Error())
	}
	if res.Key == "" {
		return nil, fmt.Errorf("%s: the datastore's bootstrap key could not be read through any server of the run: %s", op, strings.Join(errsSeen, "; "))
	}
	class := func(pass string) string {
		switch {
		case pass == "":
			return "missing"
		case k3s.StorageKey(pass) == res.Key:
			return "current"
		case pass == newTok:
			return "new"
		}
		return "other"
	}
	got, errList := forEachNode(ctx, run, nodes, op, func(c *Target) (nodeToken, error) { return c.readNodeToken(ctx, class) })
	for _, err := range errList {
		if err != nil {
			return nil, err
		}
	}
	res.Rotated = newTok != "" && k3s.StorageKey(newTok) == res.Key
	res.fill(nodes, got)
	if !res.Consistent {
		res.EarlierTokenFile = earlierTokenFile(run, res.Key)
	}
	return res, nil
}

// readNodeToken reads a node's configured token and, on a server, SD/token.
func (c *Target) readNodeToken(ctx context.Context, class func(string) string) (nodeToken, error) {
	ns, err := c.readSources(ctx)
	if err != nil {
		return nodeToken{}, err
	}
	eff, err := c.effective(ns)
	if err != nil {
		return nodeToken{}, err
	}
	nt := nodeToken{kind: tokenKind(eff), configured: "none", serverToken: "-"}
	for _, k := range []string{"agent-token", "agent-token-file"} {
		nt.agentToken = nt.agentToken || strings.TrimSpace(eff[k].Value) != ""
	}
	switch nt.kind {
	case "secure", "short":
		t, _ := k3s.ParseToken(strings.TrimSpace(eff["token"].Value))
		nt.configured = class(t.Password)
	case "file":
		if _, cur, err := c.tokenFileEdit(ctx, eff["token-file"], "x"); err == nil {
			nt.configured = class(cur)
		} else {
			nt.configured = "missing"
		}
	case "none":
	default:
		nt.configured = "other"
	}
	if c.Node.Role == inventory.RoleServer {
		nt.serverToken = "missing"
		if tok, err := c.serverToken(ctx); err == nil {
			pass, _ := k3s.NormalizeToken(tok)
			nt.serverToken = class(pass)
		}
	}
	return nt, nil
}

// fill makes the rows, the verdict and the table.
func (r *TokenStatusResult) fill(nodes []*inventory.Node, got []nodeToken) {
	agentTokens := false
	for i, n := range nodes {
		agentTokens = agentTokens || (n.Role == inventory.RoleServer && got[i].agentToken)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %-7s %-9s %-12s %s\n", "NODE", "ROLE", "KIND", "CONFIGURED", "SERVER/TOKEN")
	r.Consistent = true
	for i, n := range nodes {
		g := got[i]
		row := TokenRow{Node: n.Name, Role: n.Role, Kind: g.kind, Configured: g.configured, ServerToken: g.serverToken}
		if n.Role == inventory.RoleAgent && g.configured != "current" && (agentTokens || g.kind == "bootstrap") {
			row.Configured = "agent-token"
		}
		stale := row.ServerToken != "-" && row.ServerToken != "current" ||
			(row.Configured != "current" && row.Configured != "none" && row.Configured != "agent-token")
		if stale {
			r.Stale = append(r.Stale, n.Name)
			if n.Role == inventory.RoleServer {
				r.Consistent = false
			}
		}
		fmt.Fprintf(&b, "%-20s %-7s %-9s %-12s %s\n", row.Node, row.Role, row.Kind, row.Configured, row.ServerToken)
		r.Rows = append(r.Rows, row)
	}
	r.Table = b.String()
}

// earlierTokenFile finds a new-token file of an earlier run on the
// controller whose token opens the datastore (key).
func earlierTokenFile(run Run, key string) string {
	matches, _ := filepath.Glob(filepath.Join(run.StateDir(), "backups", "*", "datastore", TokenFileName))
	for _, m := range matches {
		if tok, err := readRunToken(run, m); err == nil && k3s.StorageKey(tok) == key {
			return m
		}
	}
	return ""
}
