package k3s

import (
	"strings"
	"testing"
)

func TestStripServerConfigEdgeCases(t *testing.T) {
	cases := map[string][2]string{
		"crlf":              {"token: x\r\nserver: https://a:6443\r\nnode-name: n\r\n", "token: x\r\nnode-name: n\r\n"},
		"document marker":   {"---\nserver: https://a:6443\ntoken: x\n", "---\ntoken: x\n"},
		"second document":   {"token: x\nserver: https://a:6443\n---\nserver: ignored\n", "token: x\n---\nserver: ignored\n"},
		"no final newline":  {"token: x\nserver: https://a:6443", "token: x\n"},
		"only key, comment": {"server: https://a:6443\n# trailing note\n", "# trailing note\n{}\n"},
		"sequence value":    {"server:\n  - https://a:6443\n  - https://b:6443\ntoken: x\n", "token: x\n"},
		"quoted key":        {"\"server\": https://a:6443\ntoken: x\n", "token: x\n"},
		"anchor elsewhere":  {"base: &u https://a:6443\nserver: *u\ntoken: x\n", "base: &u https://a:6443\ntoken: x\n"},
		"indented mapping":  {"  server: https://a:6443\n  token: x\n", "  token: x\n"},
	}
	for name, c := range cases {
		edits, err := StripServer(Sources{Config: []byte(c[0]), ConfigPath: cfgPath})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := afterOf(edits); got != c[1] {
			t.Errorf("%s:\n got %q\nwant %q", name, got, c[1])
		}
	}
	// A value that is not a mapping is an error naming the file.
	if _, err := StripServer(Sources{Config: []byte("just a string\n"), ConfigPath: cfgPath}); err == nil || !strings.Contains(err.Error(), cfgPath) {
		t.Errorf("scalar config: %v", err)
	}
}

func TestReplaceTokenConfigStyles(t *testing.T) {
	cases := map[string]struct{ in, tok, want string }{
		"plain stays plain":          {"token: old\n", "K10abc::server:new", "token: K10abc::server:new\n"},
		"plain needs quotes":         {"token: old # c\n", "a: #b", "token: \"a: #b\" # c\n"},
		"single quoted":              {"token: 'old'\n", "it's", "token: 'it''s'\n"},
		"double quoted":              {"token: \"old\"\n", "x\"y", "token: \"x\\\"y\"\n"},
		"numeric-looking plain":      {"token: old\n", "12345", "token: \"12345\"\n"},
		"crlf":                       {"token: old\r\nserver: s\r\n", "new", "token: new\r\nserver: s\r\n"},
		"block scalar is re-encoded": {"token: |\n  old\n", "new", "token: \"new\"\n"},
	}
	for name, c := range cases {
		edits, err := ReplaceToken(Sources{Config: []byte(c.in), ConfigPath: cfgPath}, c.tok)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got := afterOf(edits)
		if got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", name, got, c.want)
		}
		if m := eff(t, Sources{Config: []byte(got), ConfigPath: cfgPath}); m["token"].Value != c.tok {
			t.Errorf("%s: reads back %q", name, m["token"].Value)
		}
	}
}

func TestEnvFileParsing(t *testing.T) {
	data := "# c\n; c2\nexport K3S_URL=\"https://a:6443\"\nK3S_TOKEN='it'\\''s'\nK3S_NODE_NAME=n\\ 1\nK3S_DATA_DIR=\"/a\\\n/b\"\n\nBAD\n"
	_, err := parseEnvFile([]byte(data))
	if err == nil || !strings.Contains(err.Error(), "line 9") {
		t.Errorf("want error on line 9, got %v", err)
	}
	ents, err := parseEnvFile([]byte(strings.TrimSuffix(data, "BAD\n")))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range ents {
		got[e.key] = e.value
	}
	if got["K3S_URL"] != "https://a:6443" || got["K3S_TOKEN"] != "it's" || got["K3S_NODE_NAME"] != "n 1" || got["K3S_DATA_DIR"] != "/a/b" {
		t.Errorf("values %q", got)
	}
	if ents[0].line != 3 || !ents[0].export {
		t.Errorf("first assignment %+v", ents[0])
	}
}

func TestReplaceTokenEnvStyles(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"install.sh single quotes": {"K3S_TOKEN='old'\n", "K3S_TOKEN='n'\\''ew'\n"},
		"double quotes":            {"export K3S_TOKEN=\"old\"\n", "export K3S_TOKEN=\"n'ew\"\n"},
		"bare":                     {"K3S_TOKEN=old\nX=1\n", "K3S_TOKEN='n'\\''ew'\nX=1\n"},
		"multi-line":               {"K3S_TOKEN=\"o\\\nld\"\nX=1\n", "K3S_TOKEN=\"n'ew\"\nX=1\n"},
	}
	for name, c := range cases {
		edits, err := ReplaceToken(Sources{EnvFiles: []NamedFile{{Path: envPath, Data: []byte(c.in)}}}, "n'ew")
		if err != nil {
			t.Fatal(err)
		}
		if got := afterOf(edits); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", name, got, c.want)
		}
		if m := eff(t, Sources{EnvFiles: []NamedFile{{Path: envPath, Data: edits[0].After}}}); m["token"].Value != "n'ew" {
			t.Errorf("%s: reads back %q", name, m["token"].Value)
		}
	}
}
