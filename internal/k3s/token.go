package k3s

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// TokenPrefix starts every full ("secure") K3s token (k3s-ca-rotation.md §3).
const TokenPrefix = "K10"

// caHashLen is the length of the hex CA hash in a full token.
const caHashLen = sha256.Size * 2

// ErrNormalizeToken is K3s's own message for a token that cannot be used as
// a server token (k3s-ca-rotation.md §3 "Parsing"; pkg/util/token.go).
var ErrNormalizeToken = errors.New("failed to normalize server token; must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>")

// bootstrapTokenRE is the kubeadm bootstrap token form K3s recognises and
// refuses as a server token (#13004/#13005).
var bootstrapTokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// Token is a parsed K3s join token: K10<CAHash>::<Username>:<Password>, or a
// bare password (CAHash and Username empty).
type Token struct {
	CAHash   string
	Username string
	Password string
	// Bootstrap holds a kubeadm-style bootstrap token ("abcdef.0123456789abcdef")
	// when the credentials are one; Username and Password are then empty.
	Bootstrap string
}

// ParseToken parses a token the way K3s does (pkg/clientaccess/token.go):
// "K10<64 hex>::user:pass" (the password may contain ':'), "K10::user:pass"
// without hash, or a bare password. A kubeadm-style bootstrap token is parsed
// into Token.Bootstrap; NormalizeToken refuses it. Errors never include the
// token text.
func ParseToken(s string) (Token, error) {
	if s == "" {
		return Token{}, errors.New("parse token: token must not be empty")
	}
	var t Token
	if !strings.HasPrefix(s, TokenPrefix) {
		// A bare password or a bootstrap token becomes a full token with an
		// empty hash, as K3s rewrites it before parsing.
		if bootstrapTokenRE.MatchString(s) {
			s = TokenPrefix + "::" + s
		} else {
			s = TokenPrefix + ":::" + s
		}
	}
	rest := s[len(TokenPrefix):]
	creds := rest
	if hash, after, ok := strings.Cut(rest, "::"); ok {
		if len(hash) > 0 && len(hash) != caHashLen {
			return Token{}, errors.New("parse token: invalid token CA hash length")
		}
		t.CAHash, creds = hash, after
	}
	if bootstrapTokenRE.MatchString(creds) {
		t.Bootstrap = creds
		return t, nil
	}
	user, pass, ok := strings.Cut(creds, ":")
	if !ok || pass == "" {
		return Token{}, errors.New("parse token: invalid token format; want K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>")
	}
	t.Username, t.Password = user, pass
	return t, nil
}

// NormalizeToken returns the passphrase K3s derives from a server token: the
// password part only. It is the input of StorageKey and Encrypt
// (k3s-ca-rotation.md §3 "Passphrase"). A bootstrap token or an unparsable
// token gives ErrNormalizeToken.
func NormalizeToken(s string) (string, error) {
	t, err := ParseToken(s)
	if err != nil || t.Bootstrap != "" {
		return "", ErrNormalizeToken
	}
	return t.Password, nil
}

// Secure reports whether the token pins the cluster CA with a hash (the
// "full" K10<hash>:: form).
func (t Token) Secure() bool { return t.CAHash != "" }

// String renders the token in K3s's full form; a token without hash renders
// as its bare password when it has no username, so that round trips keep the
// short form.
func (t Token) String() string {
	creds := t.Username + ":" + t.Password
	if t.Bootstrap != "" {
		creds = t.Bootstrap
	}
	if t.CAHash == "" && t.Username == "" && t.Bootstrap == "" {
		return t.Password
	}
	return TokenPrefix + t.CAHash + "::" + creds
}

// WithCAHash returns a copy of t pinned to caHash, as written to
// server/token after a start (k3s-ca-rotation.md §3 "Token format").
func (t Token) WithCAHash(caHash string) Token {
	t.CAHash = caHash
	if t.Username == "" && t.Bootstrap == "" {
		t.Username = "server"
	}
	return t
}

// FormatToken builds a full token "K10<caHash>::<user>:<password>", the
// format of SD/token (golden token.txt).
func FormatToken(caHash, user, password string) string {
	return TokenPrefix + caHash + "::" + user + ":" + password
}

// HashCA computes the CA hash K3s puts in tokens and compares with GET
// /cacerts (k3s-ca-rotation.md §3 "hashCA", golden token.txt). A bundle with
// one certificate hashes the raw file bytes. With more, certs[0] is verified
// against the others (those without AKI or with AKI == SKI as roots, the rest
// as intermediates) and the DER of the root ending the first chain is
// hashed; when verification fails the raw file bytes are hashed.
func HashCA(bundlePEM []byte) (string, error) {
	certs, err := ParseCertsPEM(bundlePEM)
	if err != nil {
		return "", fmt.Errorf("hash CA bundle: %w", err)
	}
	b := bundlePEM
	if len(certs) > 1 {
		roots := x509.NewCertPool()
		inters := x509.NewCertPool()
		for _, c := range certs[1:] {
			if isRootLike(c) {
				roots.AddCert(c)
			} else {
				inters.AddCert(c)
			}
		}
		if chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters}); err == nil && len(chains) > 0 {
			chain := chains[0]
			b = chain[len(chain)-1].Raw
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// isRootLike is K3s's test for "goes into the roots pool": no AKI, or AKI
// equal to SKI (pkg/clientaccess/token.go, pkg/server/handlers/cert.go).
func isRootLike(c *x509.Certificate) bool {
	return len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId)
}

// ParseCertsPEM returns every CERTIFICATE block of a PEM file in order,
// ignoring other blocks. It fails when there is none or one does not parse.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d of bundle: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("data does not contain any valid RSA or ECDSA certificates")
	}
	return certs, nil
}

// ServerTokenFile is the content K3s writes to SD/token at every server
// start: "K10<HashCA(server-ca.crt)>::server:<password>" and a newline
// (k3s-ca-rotation.md §3 "Token format"; golden token.txt, 83 bytes).
// token may be a bare password or a full token; its password is used.
func ServerTokenFile(serverCAPEM []byte, token string) ([]byte, error) {
	pass, err := NormalizeToken(token)
	if err != nil {
		return nil, err
	}
	h, err := HashCA(serverCAPEM)
	if err != nil {
		return nil, err
	}
	return []byte(FormatToken(h, "server", pass) + "\n"), nil
}
