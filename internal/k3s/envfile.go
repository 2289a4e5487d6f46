package k3s

import (
	"bytes"
	"fmt"
	"strings"
)

// envAssign is one KEY=VALUE assignment of an environment file.
type envAssign struct {
	key    string
	value  string
	line   int // 1-based first line
	start  int // byte offset of the first line
	next   int // byte offset after the last line (incl. newline)
	export bool
	// valStart/valEnd delimit the raw value on a one-line assignment
	// (valEnd < 0 for a multi-line one).
	valStart, valEnd int
	quote            byte // ', " or 0
}

// parseEnvFile reads a systemd EnvironmentFile (also an OpenRC env file):
// KEY=VALUE lines, optional "export " prefix, # and ; comments, single or
// double quoted values, backslash continuation
// (k3s-ca-rotation.md §7 "Env files").
func parseEnvFile(data []byte) ([]envAssign, error) {
	lines := splitUnitLines(data)
	var out []envAssign
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		text := string(data[l.start:l.end])
		trim := strings.TrimLeft(text, " \t")
		if strings.TrimSpace(trim) == "" || trim[0] == '#' || trim[0] == ';' {
			continue
		}
		a := envAssign{line: i + 1, start: l.start, valEnd: -1}
		lead := len(text) - len(trim)
		if strings.HasPrefix(trim, "export ") {
			a.export = true
			t2 := strings.TrimLeft(trim[len("export "):], " \t")
			lead += len(trim) - len(t2)
			trim = t2
		}
		eq := strings.IndexByte(trim, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("line %d: want KEY=VALUE", i+1)
		}
		a.key = strings.TrimSpace(trim[:eq])
		if a.key == "" {
			// "\r=x" (found by FuzzParseEnvFile): blank but for
			// characters TrimLeft keeps; systemd ignores it as invalid.
			return nil, fmt.Errorf("line %d: want KEY=VALUE (the key is blank)", i+1)
		}
		vs := l.start + lead + eq + 1
		// Gather the raw value across continuation lines.
		raw := string(data[vs:l.end])
		last := i
		for lines[last].cont && !inQuotes(raw) && last+1 < len(lines) {
			raw = strings.TrimRight(raw, " \t\r")
			raw = raw[:len(raw)-1]
			last++
			raw += string(data[lines[last].start:lines[last].end])
		}
		for inQuotes(raw) && last+1 < len(lines) {
			last++
			raw += "\n" + string(data[lines[last].start:lines[last].end])
		}
		a.next = lines[last].next
		if last == i {
			a.valStart, a.valEnd = vs, l.end
			// Keep trailing \r out of the value span.
			for a.valEnd > a.valStart && data[a.valEnd-1] == '\r' {
				a.valEnd--
			}
		}
		v, q, err := envUnquote(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		a.value, a.quote = v, q
		out = append(out, a)
		i = last
	}
	return out, nil
}

// inQuotes reports whether s ends inside an open quote.
func inQuotes(s string) bool {
	var q byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q == 0 && (c == '\'' || c == '"'):
			q = c
		case q != '\'' && c == '\\':
			i++
		case q != 0 && c == q:
			q = 0
		}
	}
	return q != 0
}

// envUnquote decodes a value: '...' literally, "..." with backslash
// escapes, bare with backslash escapes and trailing comments not allowed.
func envUnquote(s string) (string, byte, error) {
	if s == "" {
		return "", 0, nil
	}
	var b strings.Builder
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return "", 0, fmt.Errorf("unterminated single quote")
			}
			b.WriteString(s[i+1 : i+1+j])
			i += j + 1
			quote = '\''
		case c == '"':
			quote = '"'
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
					if s[i] == '\n' {
						continue // a backslash-newline continues the line
					}
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return "", 0, fmt.Errorf("unterminated double quote")
			}
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), quote, nil
}

// quoteEnvLike writes value in the quoting style q: install.sh writes
// K3S_*='...' (the output of `export` in sh).
func quoteEnvLike(q byte, value string) string {
	switch q {
	case '\'':
		return shellQuote(value)
	case '"':
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")
		return `"` + r.Replace(value) + `"`
	}
	safe := true
	for _, c := range value {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_=:/.,@+%", c)) {
			safe = false
		}
	}
	if safe {
		return value
	}
	return shellQuote(value)
}

// envRemove deletes the lines of the given assignments.
func envRemove(data []byte, drop []envAssign) []byte {
	var out []byte
	pos := 0
	for _, a := range drop {
		out = append(out, data[pos:a.start]...)
		pos = a.next
	}
	return append(out, data[pos:]...)
}

// envReplaceValue rewrites the value of one assignment, keeping its key,
// export prefix and quoting style. A multi-line assignment is rewritten as
// one line.
func envReplaceValue(data []byte, a envAssign, value string) []byte {
	q := quoteEnvLike(a.quote, value)
	if a.valEnd >= 0 {
		return bytes.Join([][]byte{data[:a.valStart], []byte(q), data[a.valEnd:]}, nil)
	}
	line := a.key + "=" + q + "\n"
	if a.export {
		line = "export " + line
	}
	return bytes.Join([][]byte{data[:a.start], []byte(line), data[a.next:]}, nil)
}
