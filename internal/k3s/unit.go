package k3s

import (
	"bytes"
	"fmt"
	"strings"
)

// UnitArg is one word of a unit's ExecStart= (or Environment=) value.
type UnitArg struct {
	// Value is the word after unquoting.
	Value string
	// Raw is the word as written in the file.
	Raw string
	// Line is the 1-based line the word is on.
	Line int
	// Start and End are byte offsets of Raw in the file.
	Start, End int
}

// unitLine is one physical line of a unit file.
type unitLine struct {
	start, end int // [start,end) without the newline
	next       int // start of the following line
	cont       bool
	contAt     int // offset of the trailing backslash when cont
}

// unitDirective is one logical Key=Value line of a unit file (continuation
// lines joined).
type unitDirective struct {
	section string
	key     string
	words   []UnitArg
	lines   []int // indexes into the file's lines, first is the Key= line
	empty   bool  // "Key=" with no value: resets lists
}

// splitUnitLines splits data into physical lines.
func splitUnitLines(data []byte) []unitLine {
	var lines []unitLine
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		next := len(data)
		if end < 0 {
			end = len(data)
		} else {
			end += pos
			next = end + 1
		}
		l := unitLine{start: pos, end: end, next: next}
		trimmed := bytes.TrimRight(data[pos:end], " \t\r")
		if len(trimmed) > 0 && trimmed[len(trimmed)-1] == '\\' {
			l.cont = true
			l.contAt = pos + len(trimmed) - 1
		}
		lines = append(lines, l)
		pos = next
	}
	return lines
}

// parseUnit reads the directives of a systemd unit or drop-in with systemd's
// quoting rules.
func parseUnit(data []byte) ([]unitDirective, []unitLine, error) {
	lines := splitUnitLines(data)
	var dirs []unitDirective
	section := ""
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		text := strings.TrimSpace(string(data[l.start:l.end]))
		if text == "" || text[0] == '#' || text[0] == ';' {
			continue
		}
		if text[0] == '[' {
			section = strings.Trim(strings.TrimSpace(text), "[]")
			continue
		}
		off := l.start + bytes.IndexByte(data[l.start:l.end], text[0])
		eq := bytes.IndexByte(data[off:l.end], '=')
		if eq < 0 {
			// Not an assignment; skip its continuation too.
			for l.cont && i+1 < len(lines) {
				i++
				l = lines[i]
			}
			continue
		}
		d := unitDirective{section: section, key: strings.TrimSpace(string(data[off : off+eq])), lines: []int{i}}
		segStart := off + eq + 1
		for {
			segEnd := l.end
			if l.cont {
				segEnd = l.contAt
			}
			words, err := splitUnitWords(data, segStart, segEnd, i+1)
			if err != nil {
				return nil, nil, err
			}
			d.words = append(d.words, words...)
			if !l.cont || i+1 >= len(lines) {
				break
			}
			// A continued directive: skip comment lines inside it, as
			// systemd does, and stop at an empty line.
			i++
			l = lines[i]
			inner := strings.TrimSpace(string(data[l.start:l.end]))
			for (strings.HasPrefix(inner, "#") || strings.HasPrefix(inner, ";")) && i+1 < len(lines) {
				i++
				l = lines[i]
				inner = strings.TrimSpace(string(data[l.start:l.end]))
			}
			if inner == "" {
				i-- // the blank line ends the directive; let the loop see it
				break
			}
			d.lines = append(d.lines, i)
			segStart = l.start
		}
		d.empty = len(d.words) == 0
		dirs = append(dirs, d)
	}
	return dirs, lines, nil
}

// splitUnitWords splits data[start:end] into words with systemd's rules:
// whitespace separates, '...' and "..." quote (quotes may appear inside a
// word), backslash escapes C-style outside single quotes, %% is %.
func splitUnitWords(data []byte, start, end, line int) ([]UnitArg, error) {
	var out []UnitArg
	i := start
	for {
		for i < end && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r') {
			i++
		}
		if i >= end {
			return out, nil
		}
		ws := i
		val, next, err := unitWord(data, i, end, line)
		if err != nil {
			return nil, err
		}
		i = next
		out = append(out, UnitArg{Value: val, Raw: string(data[ws:i]), Line: line, Start: ws, End: i})
	}
}

// unitWord reads the word that starts at data[i] (not blank) up to the
// next blank or end, and returns its value and where it ends.
func unitWord(data []byte, i, end, line int) (string, int, error) {
	var val strings.Builder
	for i < end && data[i] != ' ' && data[i] != '\t' && data[i] != '\r' {
		switch c := data[i]; c {
		case '\'':
			j := bytes.IndexByte(data[i+1:end], '\'')
			if j < 0 {
				return "", 0, fmt.Errorf("line %d: unterminated single quote", line)
			}
			val.WriteString(unitPercent(string(data[i+1 : i+1+j])))
			i += j + 2
		case '"':
			next, err := unitDoubleQuoted(data, i+1, end, line, &val)
			if err != nil {
				return "", 0, err
			}
			i = next
		case '\\':
			if i+1 >= end {
				i++
				continue
			}
			r, n := cUnescape(data[i+1 : end])
			val.WriteString(r)
			i += 1 + n
		case '%':
			if i+1 < end && data[i+1] == '%' {
				val.WriteByte('%')
				i += 2
			} else {
				val.WriteByte(c)
				i++
			}
		default:
			val.WriteByte(c)
			i++
		}
	}
	return val.String(), i, nil
}

// unitDoubleQuoted reads a "..." string whose text starts at data[i] into
// val (C escapes decoded, %% is %) and returns where it ends, after the
// closing quote.
func unitDoubleQuoted(data []byte, i, end, line int, val *strings.Builder) (int, error) {
	for i < end {
		if data[i] == '\\' && i+1 < end {
			r, n := cUnescape(data[i+1 : end])
			val.WriteString(r)
			i += 1 + n
			continue
		}
		if data[i] == '"' {
			return i + 1, nil
		}
		if data[i] == '%' && i+1 < end && data[i+1] == '%' {
			val.WriteByte('%')
			i += 2
			continue
		}
		val.WriteByte(data[i])
		i++
	}
	return 0, fmt.Errorf("line %d: unterminated double quote", line)
}

// unitPercent turns %% into % (other specifiers are kept as written).
func unitPercent(s string) string { return strings.ReplaceAll(s, "%%", "%") }

// cUnescape decodes one C escape (after the backslash) and returns the
// text and the bytes consumed.
func cUnescape(b []byte) (string, int) {
	if len(b) == 0 {
		return "\\", 0
	}
	switch b[0] {
	case 'n':
		return "\n", 1
	case 't':
		return "\t", 1
	case 'r':
		return "\r", 1
	case 'a':
		return "\a", 1
	case 'b':
		return "\b", 1
	case 'f':
		return "\f", 1
	case 'v':
		return "\v", 1
	case 's':
		return " ", 1
	case 'x':
		if len(b) >= 3 {
			var v byte
			if _, err := fmt.Sscanf(string(b[1:3]), "%02x", &v); err == nil {
				return string([]byte{v}), 3
			}
		}
	}
	return string(b[0]), 1
}

// execArgs returns the argv of the effective ExecStart= of a sequence of
// unit files (unit, then drop-ins): the last non-empty one after the last
// reset, with the file index it came from and its directive.
type execStart struct {
	file int
	dir  unitDirective
}

func effectiveExecStart(files [][]unitDirective) (execStart, bool) {
	var cur []execStart
	for fi, dirs := range files {
		for _, d := range dirs {
			if d.section != "Service" || d.key != "ExecStart" {
				continue
			}
			if d.empty {
				cur = nil
				continue
			}
			cur = append(cur, execStart{file: fi, dir: d})
		}
	}
	if len(cur) == 0 {
		return execStart{}, false
	}
	return cur[len(cur)-1], true
}

// ParseUnitArgs returns the words of the effective ExecStart= of a systemd
// unit (the last non-empty one after the last reset), argv[0] included,
// following systemd quoting (single and double quotes, backslash
// continuation lines, %% for %). It handles the install.sh layout
// (k3s-ca-rotation.md §7): `ExecStart=/usr/local/bin/k3s \`, `    server \`,
// then one tab-indented single-quoted arg per line ending in ` \`, then a
// blank line. A prefix such as "-" on argv[0] is removed from its Value.
// With no ExecStart it returns no words and no error.
func ParseUnitArgs(unit []byte) ([]UnitArg, error) {
	dirs, _, err := parseUnit(unit)
	if err != nil {
		return nil, fmt.Errorf("parse unit: %w", err)
	}
	es, ok := effectiveExecStart([][]unitDirective{dirs})
	if !ok {
		return nil, nil
	}
	words := append([]UnitArg{}, es.dir.words...)
	words[0].Value = strings.TrimLeft(words[0].Value, "-@:+!")
	return words, nil
}

// WriteUnit renders a systemd unit as install.sh writes it for
// `k3s <subcommand> <args...>` (create_systemd_service_file and
// quote_indent): ExecStart=/usr/local/bin/k3s \, four spaces and the
// subcommand with " \", then one tab-indented single-quoted arg per line
// ending in " \", then a blank line. The env files are
// EnvironmentFile=-/etc/default/%N, -/etc/sysconfig/%N and -<envFile>
// (envFile is usually /etc/systemd/system/k3s.service.env).
func WriteUnit(subcommand string, args []string, envFile string) []byte {
	var b strings.Builder
	b.WriteString(`[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
`)
	fmt.Fprintf(&b, "EnvironmentFile=-%s\n", envFile)
	b.WriteString(`KillMode=process
Delegate=yes
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=/bin/sh -xc '! /usr/bin/systemctl is-enabled --quiet nm-cloud-setup.service 2>/dev/null'
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s \
`)
	fmt.Fprintf(&b, "    %s \\\n", subcommand)
	for _, a := range args {
		fmt.Fprintf(&b, "\t%s \\\n", shellQuote(a))
	}
	b.WriteString("\n")
	return []byte(b.String())
}

// shellQuote is install.sh's quote(): single quotes, ' written as '\”.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// UnitEnvironmentFiles returns the EnvironmentFile= paths of a unit in
// order, with the leading "-" removed and %N expanded to service.
func UnitEnvironmentFiles(unit []byte, service string) []string {
	dirs, _, err := parseUnit(unit)
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range dirs {
		if d.section != "Service" || d.key != "EnvironmentFile" {
			continue
		}
		if d.empty {
			out = nil
			continue
		}
		for _, w := range d.words {
			p := strings.TrimPrefix(w.Value, "-")
			p = strings.ReplaceAll(p, "%N", service)
			out = append(out, p)
		}
	}
	return out
}

// removeUnitWords deletes words (by index) of directive d from data,
// keeping the continuation layout valid: a physical line left with nothing
// but indentation and a backslash is removed; when the last line of the
// directive goes and it had no continuation, the new last line loses its
// trailing backslash. Removing every word removes the directive.
func removeUnitWords(data []byte, lines []unitLine, d unitDirective, drop map[int]bool) []byte {
	if len(drop) == len(d.words) {
		// The whole directive goes.
		first := lines[d.lines[0]]
		last := lines[d.lines[len(d.lines)-1]]
		return append(append([]byte{}, data[:first.start]...), data[last.next:]...)
	}
	wordsOn := unitWordsByLine(lines, d)
	var out []byte
	pos := 0
	lastOrigCont := lines[d.lines[len(d.lines)-1]].cont
	for k, li := range d.lines {
		l := lines[li]
		ws := wordsOn[li]
		out = append(out, data[pos:l.start]...)
		pos = l.next
		if k > 0 && allDropped(ws, drop) {
			continue
		}
		out = append(out, keptLineBytes(data, l, d, ws, drop)...)
	}
	out = append(out, data[pos:]...)
	if lastOrigCont {
		return out
	}
	// Re-parse to see whether the directive now ends in a dangling
	// backslash (its original last line was removed).
	return fixDanglingContinuation(out, d.key, d.section)
}

// unitWordsByLine maps each physical line of d to the indexes of the
// words on it.
func unitWordsByLine(lines []unitLine, d unitDirective) map[int][]int {
	wordsOn := map[int][]int{} // line index → word indexes
	for wi, w := range d.words {
		for _, li := range d.lines {
			if w.Start >= lines[li].start && w.End <= lines[li].end {
				wordsOn[li] = append(wordsOn[li], wi)
			}
		}
	}
	return wordsOn
}

// allDropped reports whether ws holds words and every one is dropped.
func allDropped(ws []int, drop map[int]bool) bool {
	for _, wi := range ws {
		if !drop[wi] {
			return false
		}
	}
	return len(ws) > 0
}

// keptLineBytes is line l (up to the next line) without its dropped words
// ws and the blanks before them.
func keptLineBytes(data []byte, l unitLine, d unitDirective, ws []int, drop map[int]bool) []byte {
	var out []byte
	cur := l.start
	for _, wi := range ws {
		if !drop[wi] {
			continue
		}
		w := d.words[wi]
		cut := w.Start
		for cut > cur && (data[cut-1] == ' ' || data[cut-1] == '\t') {
			cut--
		}
		out = append(out, data[cur:cut]...)
		cur = w.End
		if cut == w.Start {
			// Nothing before the word (it follows "Key="): eat the
			// blanks after it instead, unless a continuation follows.
			j := cur
			for j < l.end && (data[j] == ' ' || data[j] == '\t') {
				j++
			}
			if j < l.end && !(l.cont && j == l.contAt) {
				cur = j
			}
		}
	}
	return append(out, data[cur:l.next]...)
}

// fixDanglingContinuation removes a trailing backslash from the last line
// of every directive key that continues into a line that is not an
// argument line (a section header, another directive, or EOF).
func fixDanglingContinuation(data []byte, key, section string) []byte {
	lines := splitUnitLines(data)
	sec := ""
	for i, l := range lines {
		text := strings.TrimSpace(string(data[l.start:l.end]))
		if strings.HasPrefix(text, "[") {
			sec = strings.Trim(text, "[]")
			continue
		}
		if sec != section || !strings.HasPrefix(text, key+"=") {
			continue
		}
		j := i
		for lines[j].cont && j+1 < len(lines) {
			nt := strings.TrimSpace(string(data[lines[j+1].start:lines[j+1].end]))
			if nt == "" || strings.HasPrefix(nt, "[") || looksLikeDirective(nt) {
				break
			}
			j++
		}
		if lines[j].cont && (j+1 >= len(lines) || strings.HasPrefix(strings.TrimSpace(string(data[lines[j+1].start:lines[j+1].end])), "[") || looksLikeDirective(strings.TrimSpace(string(data[lines[j+1].start:lines[j+1].end])))) {
			cut := lines[j].contAt
			for cut > lines[j].start && (data[cut-1] == ' ' || data[cut-1] == '\t') {
				cut--
			}
			return append(append([]byte{}, data[:cut]...), data[lines[j].end:]...)
		}
	}
	return data
}

// looksLikeDirective reports whether a trimmed line is "Word=..." with a
// systemd key (letters only before '=').
func looksLikeDirective(s string) bool {
	eq := strings.IndexByte(s, '=')
	if eq <= 0 {
		return false
	}
	for _, r := range s[:eq] {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return s[0] >= 'A' && s[0] <= 'Z'
}

// quoteUnitLike writes value in the quoting style of raw: single quotes
// (install.sh), double quotes, or bare when raw was bare and value needs
// no quoting. % is doubled.
func quoteUnitLike(raw, value string) string {
	value = strings.ReplaceAll(value, "%", "%%")
	switch {
	case strings.HasPrefix(raw, "'"):
		return shellQuote(value)
	case strings.HasPrefix(raw, `"`):
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
		return `"` + r.Replace(value) + `"`
	}
	safe := value != ""
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
