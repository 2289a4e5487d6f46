package k3s

// Fuzz targets (issue 12) for the formats caretaker reads and edits on
// nodes: config.yaml (StripKey, ReplaceToken), unit files (ParseUnitArgs,
// WriteUnit), env files, and the bootstrap JSON. Each asserts properties,
// not only "no panic": an edit touches only its key (every other key's
// effective value is the same before and after), keeps the original bytes
// for a byte-for-byte restore and is idempotent; parsers' offsets and line
// numbers point into the input; round trips hold; errors say something.
// Seeds are in f.Add and testdata/fuzz/<Target>/. `make fuzz` runs each
// target for 20 s.

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const fuzzConfigPath = "/etc/rancher/k3s/config.yaml"

var configSeeds = []string{
	"server: https://10.0.0.1:6443\ntoken: K10abc::server:secret\n",
	"# comment\nserver: \"https://10.0.0.1:6443\" # trailing\nnode-label:\n  - a=b\n  - c=d\ntoken: 'x'\n",
	"cluster-init: true\nserver: \ntls-san: [a, b]\n",
	"server: https://a:6443\nserver: https://b:6443\n",
	"kubelet-arg+:\n- foo=bar\nserver: >-\n  https://folded:6443\ntoken: |\n  multi\n",
	"---\nserver: https://x:6443\n...\n",
	"{server: https://flow:6443, token: t}\n",
	"server:\r\n  https://crlf:6443\r\ntoken: t\r\n",
	"\ttab: 1\n",
	"",
}

// effectiveOf is the effective settings of a config.yaml alone, or nil
// when it does not parse.
func effectiveOf(data []byte) map[string]Setting {
	eff, err := Effective(Sources{Config: data, ConfigPath: fuzzConfigPath})
	if err != nil {
		return nil
	}
	return eff
}

// sameExcept reports the keys other than skip whose effective values
// differ between a and b.
func sameExcept(a, b map[string]Setting, skip string) []string {
	var diff []string
	for k, s := range a {
		if k == skip {
			continue
		}
		t, ok := b[k]
		if !ok || s.Value != t.Value || !reflect.DeepEqual(s.Values, t.Values) {
			diff = append(diff, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && k != skip {
			diff = append(diff, k)
		}
	}
	return diff
}

// checkConfigEdit checks the properties every config.yaml edit has.
func checkConfigEdit(t *testing.T, what string, data []byte, edits []Edit, err error) []byte {
	t.Helper()
	if err != nil {
		if err.Error() == "" {
			t.Fatalf("%s: an empty error", what)
		}
		return nil
	}
	if len(edits) > 1 {
		t.Fatalf("%s: %d edits of one file", what, len(edits))
	}
	if len(edits) == 0 {
		return data
	}
	e := edits[0]
	if e.Path != fuzzConfigPath || !bytes.Equal(e.Before, data) {
		t.Fatalf("%s: the edit's Before is not the file's exact bytes (path %q)", what, e.Path)
	}
	if bytes.Equal(e.After, e.Before) || e.What == "" {
		t.Fatalf("%s: an edit that changes nothing or says nothing (%q)", what, e.What)
	}
	return e.After
}

func FuzzStripKey(f *testing.F) {
	for _, s := range configSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := effectiveOf(data)
		edits, err := StripServer(Sources{Config: data, ConfigPath: fuzzConfigPath})
		after := checkConfigEdit(t, "strip", data, edits, err)
		if after == nil || before == nil {
			return
		}
		eff := effectiveOf(after)
		if eff == nil {
			t.Fatalf("strip made a config that no longer parses:\n%q\n->\n%q", data, after)
		}
		if s, ok := eff["server"]; ok && s.Value != "" {
			t.Fatalf("server is still set after the strip (%q):\n%q", s.Value, after)
		}
		if d := sameExcept(before, eff, "server"); len(d) > 0 {
			t.Fatalf("the strip changed other keys %v:\n%q\n->\n%q", d, data, after)
		}
		again, err := StripServer(Sources{Config: after, ConfigPath: fuzzConfigPath})
		if err != nil || len(again) != 0 {
			t.Fatalf("a second strip is not a no-op: %v %d edit(s)", err, len(again))
		}
	})
}

func FuzzReplaceToken(f *testing.F) {
	for _, s := range configSeeds {
		f.Add([]byte(s), "K10"+strings.Repeat("ab", 32)+"::server:new'pass\"word")
	}
	f.Add([]byte("token: old\n"), "new")
	f.Fuzz(func(t *testing.T, data []byte, tok string) {
		if tok == "" || !utf8.ValidString(tok) || strings.ContainsAny(tok, "\x00\r\n") {
			return // not a token K3s could read from any source
		}
		before := effectiveOf(data)
		edits, err := ReplaceToken(Sources{Config: data, ConfigPath: fuzzConfigPath}, tok)
		if errors.Is(err, ErrTokenFromFile) {
			return
		}
		after := checkConfigEdit(t, "replace token", data, edits, err)
		if after == nil || before == nil {
			return
		}
		eff := effectiveOf(after)
		if eff == nil {
			t.Fatalf("the token replacement made a config that no longer parses:\n%q\n->\n%q", data, after)
		}
		if old, ok := before["token"]; ok && old.Value != "" && eff["token"].Value != tok {
			t.Fatalf("token reads %q after the replacement, want %q:\n%q", eff["token"].Value, tok, after)
		}
		if d := sameExcept(before, eff, "token"); len(d) > 0 {
			t.Fatalf("the token replacement changed other keys %v:\n%q\n->\n%q", d, data, after)
		}
		again, err := ReplaceToken(Sources{Config: after, ConfigPath: fuzzConfigPath}, tok)
		if err != nil || len(again) != 0 {
			t.Fatalf("replacing the token with itself is not a no-op: %v %d edit(s)", err, len(again))
		}
	})
}

// lineOf is the 1-based line of byte offset off.
func lineOf(data []byte, off int) int { return 1 + bytes.Count(data[:off], []byte("\n")) }

func FuzzParseUnitArgs(f *testing.F) {
	f.Add(WriteUnit("server", []string{"--server", "https://10.0.0.1:6443", "--token", "it's"}, "/etc/systemd/system/k3s.service.env"))
	f.Add([]byte("[Service]\nExecStart=/usr/local/bin/k3s server \\\n  --server=\"https://a:6443\" -t 'x y' %%\n"))
	f.Add([]byte("[Service]\nExecStart=\nExecStart=-/bin/k3s agent\nEnvironment=\"K3S_URL=https://b:6443\" K3S_TOKEN=t\n"))
	f.Add([]byte("[Service]\nExecStart=/bin/k3s server \"unterminated\n"))
	f.Add([]byte("[Service]\nExecStart=/bin/k3s \\x41\\101 \"a\\\"b\" \\\n\n"))
	f.Fuzz(func(t *testing.T, unit []byte) {
		words, err := ParseUnitArgs(unit)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		prev := -1
		for i, w := range words {
			if w.Start < 0 || w.End > len(unit) || w.Start >= w.End && w.Raw != "" {
				t.Fatalf("word %d %q: offsets [%d,%d) outside the unit (%d bytes)", i, w.Raw, w.Start, w.End, len(unit))
			}
			if string(unit[w.Start:w.End]) != w.Raw {
				t.Fatalf("word %d: Raw %q is not the unit's bytes %q", i, w.Raw, unit[w.Start:w.End])
			}
			if w.Line != lineOf(unit, w.Start) {
				t.Fatalf("word %d %q: line %d, it starts on line %d", i, w.Raw, w.Line, lineOf(unit, w.Start))
			}
			if w.Start <= prev {
				t.Fatalf("word %d starts at %d, before the end of the previous one", i, w.Start)
			}
			prev = w.Start
		}
	})
}

// FuzzWriteUnit: what WriteUnit writes (install.sh's layout), ParseUnitArgs
// reads back as the same argv. Arguments are those install.sh can carry
// intact: no newline, and neither '%' nor '\' (systemd gives those a
// meaning install.sh does not escape).
func FuzzWriteUnit(f *testing.F) {
	f.Add("--server\x00https://10.0.0.1:6443\x00--token\x00it's a \"token\"")
	f.Add("--node-label\x00a=b c\x00--tls-san\x00''")
	f.Fuzz(func(t *testing.T, joined string) {
		if !utf8.ValidString(joined) || strings.ContainsAny(joined, "%\\\n\r") {
			return
		}
		args := strings.Split(joined, "\x00")
		for _, a := range args {
			if strings.ContainsFunc(a, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return
			}
		}
		unit := WriteUnit("server", args, "/etc/systemd/system/k3s.service.env")
		words, err := ParseUnitArgs(unit)
		if err != nil {
			t.Fatalf("ParseUnitArgs of WriteUnit's unit: %v\n%s", err, unit)
		}
		var got []string
		for _, w := range words {
			got = append(got, w.Value)
		}
		want := append([]string{"/usr/local/bin/k3s", "server"}, args...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip: got %q, want %q\n%s", got, want, unit)
		}
	})
}

func FuzzParseEnvFile(f *testing.F) {
	for _, s := range []string{
		"K3S_URL=https://10.0.0.1:6443\nK3S_TOKEN='secret'\n",
		"export K3S_TOKEN=\"a\\\"b\"\n# comment\n; other\nX=1 \\\n  2\n",
		"K3S_URL='multi\nline'\r\nY=\n",
		"=nokey\n",
		"K='unterminated\n",
	} {
		f.Add([]byte(s), "new value 'with' \"quotes\"")
	}
	f.Fuzz(func(t *testing.T, data []byte, value string) {
		ents, err := parseEnvFile(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("an error that does not name the line: %v", err)
			}
			return
		}
		for i, a := range ents {
			if a.key == "" || strings.ContainsAny(a.key, "=\n") {
				t.Fatalf("assignment %d: key %q", i, a.key)
			}
			if a.start < 0 || a.next > len(data) || a.start >= a.next || a.line != lineOf(data, a.start) {
				t.Fatalf("assignment %d (%s): span [%d,%d) line %d in %d bytes", i, a.key, a.start, a.next, a.line, len(data))
			}
			if a.valEnd >= 0 && (a.valStart < a.start || a.valEnd > a.next || a.valStart > a.valEnd) {
				t.Fatalf("assignment %d (%s): value span [%d,%d) outside [%d,%d)", i, a.key, a.valStart, a.valEnd, a.start, a.next)
			}
			if i > 0 && a.start < ents[i-1].next {
				t.Fatalf("assignment %d overlaps the one before", i)
			}
		}
		if len(ents) == 0 || !utf8.ValidString(value) || strings.ContainsAny(value, "\x00\r\n") {
			return
		}
		// Replacing one value changes only that value; removing one
		// assignment removes only it.
		for i, a := range ents {
			rep, err := parseEnvFile(envReplaceValue(data, a, value))
			if err != nil || len(rep) != len(ents) || rep[i].value != value {
				t.Fatalf("replace %s's value with %q: %v; %d assignments, want %d", a.key, value, err, len(rep), len(ents))
			}
			for j := range ents {
				if j != i && (rep[j].key != ents[j].key || rep[j].value != ents[j].value) {
					t.Fatalf("replacing %s changed %s", a.key, ents[j].key)
				}
			}
			rem, err := parseEnvFile(envRemove(data, []envAssign{a}))
			if err != nil || len(rem) != len(ents)-1 {
				t.Fatalf("remove %s: %v; %d assignments left, want %d", a.key, err, len(rem), len(ents)-1)
			}
			for j, k := 0, 0; j < len(ents); j++ {
				if j == i {
					continue
				}
				if rem[k].key != ents[j].key || rem[k].value != ents[j].value {
					t.Fatalf("removing %s changed %s", a.key, ents[j].key)
				}
				k++
			}
		}
	})
}

func FuzzUnmarshalBootstrap(f *testing.F) {
	good, _ := MarshalBootstrap(BootstrapData{KeyServerCA: {Timestamp: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), Content: []byte("-----BEGIN CERTIFICATE-----\n")}})
	f.Add(good)
	f.Add([]byte(`{"ServerCA":"Zm9v"}`))
	f.Add([]byte(`{"ServerCA":{"Timestamp":"2025-01-02T03:04:05Z","Content":null}}`))
	f.Add([]byte(`{"ServerCA":{"Timestamp":"bad","Content":"Zm9v"}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := UnmarshalBootstrap(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "unmarshal bootstrap data: ") {
				t.Fatalf("error %q does not say what failed", err)
			}
			return
		}
		enc, err := MarshalBootstrap(d)
		if err != nil {
			return // a timestamp JSON cannot encode (year outside 0-9999)
		}
		d2, err := UnmarshalBootstrap(enc)
		if err != nil {
			t.Fatalf("decoding what MarshalBootstrap wrote: %v\n%s", err, enc)
		}
		if len(d2) != len(d) {
			t.Fatalf("round trip: %d keys, want %d", len(d2), len(d))
		}
		for k, v := range d {
			w := d2[k]
			if !bytes.Equal(v.Content, w.Content) || !v.Timestamp.Equal(w.Timestamp) {
				t.Fatalf("round trip changed %s", k)
			}
		}
		enc2, _ := MarshalBootstrap(d2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("MarshalBootstrap is not stable:\n%s\n%s", enc, enc2)
		}
	})
}
