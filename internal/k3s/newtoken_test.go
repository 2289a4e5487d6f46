package k3s

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateNewToken(t *testing.T) {
	good := []string{"0123456789abcdef", "Sup3r-Secret.token_~+/=0123", strings.Repeat("a", MaxNewTokenLength)}
	for _, tok := range good {
		if err := ValidateNewToken(tok); err != nil {
			t.Errorf("ValidateNewToken(%q): %v", tok, err)
		}
	}
	bad := map[string]string{
		"":                                     "empty",
		"abcdef.0123456789abcdef":              "bootstrap token",
		"K10" + hash64 + "::server:abcdefghij": "full token",
		"K10abcdefghijklmnopqrs":               "full token",
		"server:abcdefghijklmnop":              "':'",
		"abc::defghijklmnopqrs":                "':'",
		"short-token":                          "at least 16",
		strings.Repeat("a", 257):               "at most 256",
		"token with spaces 123":                "character 6",
		"token'with-quote-123":                 "character 6",
		"token,with-comma-1234":                "character 6",
		"token$with-dollar-123":                "character 6",
		"token%with-percent-12":                "character 6",
		"tokenßwith-umlaut-123":                "U+00DF",
	}
	for tok, why := range bad {
		err := ValidateNewToken(tok)
		if !errors.Is(err, ErrNewToken) || !strings.Contains(err.Error(), why) {
			t.Errorf("ValidateNewToken(%q) = %v, want an error saying %q", tok, err, why)
		}
		if tok != "" && err != nil && strings.Contains(err.Error(), tok) {
			t.Errorf("the error quotes the token: %v", err)
		}
	}
}

func TestGenerateTokenIsValidAndRandom(t *testing.T) {
	a, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateToken()
	if a == b || len(a) != 64 {
		t.Fatalf("GenerateToken: %q, %q", a, b)
	}
	if err := ValidateNewToken(a); err != nil {
		t.Fatal(err)
	}
}

func TestWithPasswordKeepsTheForm(t *testing.T) {
	for in, want := range map[string]string{
		"K10" + hash64 + "::server:old": "K10" + hash64 + "::server:new-password",
		"K10::node:old":                 "K10::node:new-password",
		"old":                           "new-password",
	} {
		tok, err := ParseToken(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.WithPassword("new-password").String(); got != want {
			t.Errorf("%q.WithPassword = %q, want %q", in, got, want)
		}
	}
	bt, _ := ParseToken("abcdef.0123456789abcdef")
	if got := bt.WithPassword("x").String(); got != "K10::abcdef.0123456789abcdef" {
		t.Errorf("a bootstrap token changed: %q", got)
	}
}

func TestReplaceTokenText(t *testing.T) {
	for in, want := range map[string]string{
		"old\n":     "new\n",
		"  old  \n": "  new  \n",
		"old":       "new",
		"":          "new\n",
	} {
		if got := string(ReplaceTokenText([]byte(in), "new")); got != want {
			t.Errorf("ReplaceTokenText(%q) = %q, want %q", in, got, want)
		}
	}
}

// RotatePasswd follows K3s's tokenRotate: server gets the new password,
// node too when it shared the server's and no agent-token is set.
func TestRotatePasswd(t *testing.T) {
	shared := PasswdFile("old", "old")
	got, old, err := RotatePasswd(shared, "new", false)
	if err != nil || old != "old" {
		t.Fatalf("RotatePasswd: %v, old %q", err, old)
	}
	if want := PasswdFile("new", "new"); string(got) != string(want) {
		t.Errorf("shared node password:\n%s\nwant\n%s", got, want)
	}
	got, _, _ = RotatePasswd(shared, "new", true)
	if want := PasswdFile("new", "old"); string(got) != string(want) {
		t.Errorf("with agent-token set:\n%s\nwant\n%s", got, want)
	}
	got, _, _ = RotatePasswd(PasswdFile("old", "agent"), "new", false)
	if want := PasswdFile("new", "agent"); string(got) != string(want) {
		t.Errorf("separate node password:\n%s\nwant\n%s", got, want)
	}
	if _, _, err := RotatePasswd([]byte("x,node,node,k3s:agent\n"), "new", false); err == nil || err.Error() != "server token not found" {
		t.Errorf("no server user: %v", err)
	}
}
