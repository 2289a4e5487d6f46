package k3s

import (
	"bytes"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// New server tokens for `k3s token rotate` (rotate-token). K3s's handler
// (pkg/server/handlers/token.go) takes the new token through
// NormalizeToken, so on fixed releases a full K10<hash>::user:password
// token becomes its password, and a kubeadm-style bootstrap token is
// refused with ErrNormalizeToken; releases before the fix for
// k3s-io/k3s#12982 (PR #12989, backported to the October 2025 patch
// releases) stored such a token as it was and left a cluster whose
// bootstrap key no server could open ("bootstrap data already found and
// encrypted with different token"). caretaker decides the token's form
// itself and refuses anything K3s or the files it goes into could read
// differently, whatever the release:
//
//   - a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16}): the #12982 trap;
//   - anything starting with "K10": K3s parses it as a full token, so a
//     password starting with K10 is refused or cut down to its last part;
//   - ':' anywhere: K3s splits "user:password" at the first ':' (and a
//     full token at "::"), so the passphrase would depend on the form the
//     node's token is written in; give the password only, rotate-token keeps
//     each node's form (K10 prefix, CA hash and user) itself;
//   - characters that need quoting in config.yaml, unit files, env files or
//     K3s's CSV passwd file (space, quotes, '\', ',', '#', '$', '%', ...):
//     only letters, digits and - . _ ~ + / = are accepted;
//   - fewer than MinNewTokenLength or more than MaxNewTokenLength
//     characters.
//
// Error messages never include the token.

// Bounds of a new server token's length.
const (
	MinNewTokenLength = 16
	MaxNewTokenLength = 256
)

// newTokenChars are the characters a new server token may use.
const newTokenChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/="

// ErrNewToken marks every refusal of ValidateNewToken.
var ErrNewToken = errors.New("unusable new server token")

// ValidateNewToken checks that tok can be a new server token (the
// passphrase of `k3s token rotate --new-token`), by the rules above. It
// returns an error wrapping ErrNewToken that says what is wrong without
// quoting the token.
func ValidateNewToken(tok string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrNewToken, fmt.Sprintf(format, args...))
	}
	switch {
	case tok == "":
		return bad("it is empty")
	case bootstrapTokenRE.MatchString(tok):
		return bad("it is a kubeadm-style bootstrap token (6.16 characters, as `k3s token generate` prints): K3s cannot use one as the server token, and releases before the fix for k3s-io/k3s#12982 store it anyway and leave the cluster unable to start; use a password")
	case strings.HasPrefix(tok, TokenPrefix):
		return bad("it starts with %q, so K3s reads it as a full token (K10<ca-hash>::user:password); give the password part only, without ':' (each node's token keeps its own form and CA hash)", TokenPrefix)
	case strings.Contains(tok, ":"):
		return bad("it contains ':', which K3s reads as the user:password (or K10...::) separator; give a password without ':'")
	case len(tok) < MinNewTokenLength:
		return bad("it has %d characters; use at least %d", len(tok), MinNewTokenLength)
	case len(tok) > MaxNewTokenLength:
		return bad("it has %d characters; use at most %d", len(tok), MaxNewTokenLength)
	}
	for i, r := range tok {
		if !strings.ContainsRune(newTokenChars, r) {
			what := fmt.Sprintf("%q", r)
			if r < 0x20 || r > 0x7e {
				what = fmt.Sprintf("U+%04X", r)
			}
			return bad("character %d is %s; use only letters, digits and - . _ ~ + / = (it goes unquoted into config.yaml, unit and env files and K3s's CSV passwd file)", i+1, what)
		}
	}
	return nil
}

// GenerateToken returns a new random server token: 32 random bytes as 64
// hex digits (K3s's own generated tokens are 16 bytes as 32 hex digits;
// hex needs no quoting anywhere). It passes ValidateNewToken.
func GenerateToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// WithPassword returns t with its password replaced, keeping its form: a
// full token keeps its CA hash and user, a bare password stays bare. A
// bootstrap token has no password: it is returned unchanged.
func (t Token) WithPassword(password string) Token {
	if t.Bootstrap == "" {
		t.Password = password
	}
	return t
}

// ReplaceTokenText replaces the token in the bytes of a file that holds
// one token (a --token-file, SD/token): the whitespace around it, a final
// newline included, is kept.
func ReplaceTokenText(data []byte, newToken string) []byte {
	s := string(data)
	trimmed := strings.TrimSpace(s)
	if trimmed == "" {
		return []byte(newToken + "\n")
	}
	i := strings.Index(s, trimmed)
	return []byte(s[:i] + newToken + s[i+len(trimmed):])
}

// RotatePasswd is what K3s's token rotation handler does to SD/cred/passwd
// (pkg/server/handlers/token.go tokenRotate): the "server" user gets
// newPass, and so does the "node" user when agents share the server token
// (its password is the old server one and no agent-token is configured).
// The other records stay as they are, in their order. It returns the new
// file and the old server password; a file without a server user is an
// error ("server token not found", K3s's words).
func RotatePasswd(data []byte, newPass string, agentTokenSet bool) ([]byte, string, error) {
	entries, err := ParsePasswd(data)
	if err != nil {
		return nil, "", err
	}
	old, found := "", false
	for _, e := range entries {
		if e.User == "server" {
			old, found = e.Password, true
		}
	}
	if !found {
		return nil, "", errors.New("server token not found")
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	for _, e := range entries {
		switch {
		case e.User == "server":
			e.Password = newPass
		case e.User == "node" && e.Password == old && !agentTokenSet:
			e.Password = newPass
		}
		rec := []string{e.Password, e.User, e.UID}
		if e.Role != "" {
			rec = append(rec, e.Role)
		}
		_ = w.Write(rec)
	}
	w.Flush()
	return buf.Bytes(), old, w.Error()
}
