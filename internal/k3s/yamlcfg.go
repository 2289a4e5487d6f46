package k3s

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// configEntry is one top-level key of a K3s config file.
type configEntry struct {
	key    string // without the "+" suffix
	append bool   // written as "key+:"
	values []string
	line   int // 1-based line of the key
	keyN   *yaml.Node
	valN   *yaml.Node
}

// parseConfig reads the top-level mapping of a K3s config file the way
// pkg/configfilearg does: keys are flag names, a "+" suffix appends,
// sequences give several values, booleans and numbers become their text.
// An empty or comment-only file has no entries.
func parseConfig(data []byte) ([]configEntry, *yaml.Node, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, err
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, &root, nil
	}
	doc := root.Content[0]
	if doc.Kind == yaml.ScalarNode && doc.Tag == "!!null" {
		return nil, &root, nil
	}
	if doc.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("top level is not a mapping of flag names")
	}
	var out []configEntry
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		name := k.Value
		e := configEntry{key: strings.TrimSuffix(name, "+"), append: strings.HasSuffix(name, "+"), line: k.Line, keyN: k, valN: v}
		switch v.Kind {
		case yaml.SequenceNode:
			for _, it := range v.Content {
				e.values = append(e.values, scalarText(it))
			}
		default:
			e.values = []string{scalarText(v)}
		}
		out = append(out, e)
	}
	return out, &root, nil
}

// scalarText renders a node as K3s's convert.ToString would render the
// decoded value: booleans as true/false, null as "".
func scalarText(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return ""
		case "!!bool":
			if b, err := strconv.ParseBool(strings.ToLower(n.Value)); err == nil {
				return strconv.FormatBool(b)
			}
		}
		return n.Value
	case yaml.AliasNode:
		if n.Alias != nil {
			return scalarText(n.Alias)
		}
	}
	var v any
	_ = n.Decode(&v)
	b, _ := json.Marshal(v)
	return string(b)
}

// nonEmpty reports whether an entry sets a non-empty value.
func (e configEntry) nonEmpty() bool {
	for _, v := range e.values {
		if v != "" {
			return true
		}
	}
	return false
}

// configRemoveKeys removes the top-level entries for which match is true,
// editing the text so every other byte stays as it was; comments on the
// removed lines go with them. If the text edit cannot be proven right (by
// re-parsing), it falls back to yaml.v3's encoder. A file left without
// content gets "{}" so it stays a mapping. It returns the new bytes and the
// 1-based line ranges removed.
func configRemoveKeys(data []byte, match func(configEntry) bool) ([]byte, [][2]int, error) {
	entries, root, err := parseConfig(data)
	if err != nil {
		return nil, nil, err
	}
	var drop []configEntry
	for _, e := range entries {
		if match(e) {
			drop = append(drop, e)
		}
	}
	if len(drop) == 0 {
		return data, nil, nil
	}
	lines := splitUnitLines(data)
	doc := root.Content[0]
	var ranges [][2]int
	if doc.Style&yaml.FlowStyle == 0 {
		removeLine := map[int]bool{}
		for _, e := range drop {
			first, last := e.line, configEntryEnd(data, lines, entries, e)
			for l := first; l <= last; l++ {
				removeLine[l] = true
			}
			ranges = append(ranges, [2]int{first, last})
		}
		var out []byte
		for i, l := range lines {
			if !removeLine[i+1] {
				out = append(out, data[l.start:l.next]...)
			}
		}
		out = ensureMapping(out)
		if configSameExcept(entries, drop, out) {
			return out, ranges, nil
		}
	}
	// Fallback: remove the pairs from the node tree and re-encode.
	var keep []*yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k := doc.Content[i]
		dropped := false
		for _, e := range drop {
			if e.keyN == k {
				dropped = true
			}
		}
		if !dropped {
			keep = append(keep, doc.Content[i], doc.Content[i+1])
		}
	}
	doc.Content = keep
	out, err := encodeYAML(root)
	if err != nil {
		return nil, nil, err
	}
	if !configSameExcept(entries, drop, out) {
		return nil, nil, errors.New("could not remove the key without changing other settings")
	}
	ranges = ranges[:0]
	for _, e := range drop {
		ranges = append(ranges, [2]int{e.line, e.line})
	}
	return out, ranges, nil
}

// configEntryEnd is the last line of entry e: up to the line before the
// next key (or a document marker, or EOF), minus trailing blank lines and
// comment lines not indented deeper than the key.
func configEntryEnd(data []byte, lines []unitLine, entries []configEntry, e configEntry) int {
	end := len(lines)
	for _, o := range entries {
		if o.line > e.line && o.line-1 < end {
			end = o.line - 1
		}
	}
	for l := e.line + 1; l <= end; l++ {
		t := string(data[lines[l-1].start:lines[l-1].end])
		if strings.HasPrefix(t, "---") || strings.HasPrefix(t, "...") {
			end = l - 1
			break
		}
	}
	keyCol := e.keyN.Column
	for end > e.line {
		t := string(data[lines[end-1].start:lines[end-1].end])
		trim := strings.TrimLeft(t, " \t")
		indent := len(t) - len(trim)
		if strings.TrimSpace(trim) == "" || (strings.HasPrefix(trim, "#") && indent < keyCol) {
			end--
			continue
		}
		break
	}
	return end
}

// ensureMapping appends "{}" when nothing but comments and blanks is left.
func ensureMapping(data []byte) []byte {
	for _, l := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(l)
		if t != "" && !strings.HasPrefix(t, "#") {
			return data
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	return append(data, "{}\n"...)
}

// configSameExcept checks that out parses to the entries minus drop, with
// the same values.
func configSameExcept(before, drop []configEntry, out []byte) bool {
	after, _, err := parseConfig(out)
	if err != nil {
		return false
	}
	var want []configEntry
	for _, e := range before {
		dropped := false
		for _, d := range drop {
			if d.keyN == e.keyN {
				dropped = true
			}
		}
		if !dropped {
			want = append(want, e)
		}
	}
	return sameEntries(want, after)
}

func sameEntries(a, b []configEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].key != b[i].key || a[i].append != b[i].append || !reflect.DeepEqual(a[i].values, b[i].values) {
			return false
		}
	}
	return true
}

// encodeYAML re-encodes a document with two-space indentation.
func encodeYAML(root *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return ensureMapping(buf.Bytes()), nil
}

// configReplaceValue sets the value of the entries matched to value,
// editing only the value's bytes when it is a one-line scalar and keeping
// its quoting style where the value allows; otherwise it re-encodes.
func configReplaceValue(data []byte, match func(configEntry) bool, value string) ([]byte, []int, error) {
	entries, root, err := parseConfig(data)
	if err != nil {
		return nil, nil, err
	}
	// An entry that already holds value is left as it is written (its
	// escapes may differ from ours; FuzzReplaceToken): replacing a value
	// with itself changes no byte.
	var hits []configEntry
	var same []int
	for _, e := range entries {
		switch {
		case !match(e):
		case e.valN.Kind == yaml.ScalarNode && e.valN.Value == value:
			same = append(same, e.line)
		default:
			hits = append(hits, e)
		}
	}
	if len(hits) == 0 {
		return data, same, nil
	}
	lines := splitUnitLines(data)
	out := append([]byte{}, data...)
	changed := append([]int(nil), same...)
	textOK := true
	// Edit from the end so earlier offsets stay valid.
	for i := len(hits) - 1; i >= 0; i-- {
		e := hits[i]
		v := e.valN
		if v.Kind != yaml.ScalarNode || v.Line != e.line || v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			textOK = false
			break
		}
		l := lines[v.Line-1]
		lineText := data[l.start:l.end]
		startB := runeColToByte(lineText, v.Column)
		if startB < 0 {
			textOK = false
			break
		}
		endB, ok := scalarEnd(lineText, startB, v.Style)
		if !ok {
			textOK = false
			break
		}
		repl := yamlScalarLike(v.Style, value)
		s, en := l.start+startB, l.start+endB
		out = bytes.Join([][]byte{out[:s], []byte(repl), out[en:]}, nil)
		changed = append(changed, e.line)
	}
	if textOK && configReplaced(entries, hits, out, value) {
		return out, changed, nil
	}
	// Fallback: set the nodes and re-encode.
	changed = append([]int(nil), same...)
	for _, e := range hits {
		*e.valN = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value, Style: yaml.DoubleQuotedStyle, LineComment: e.valN.LineComment}
		changed = append(changed, e.line)
	}
	enc, err := encodeYAML(root)
	if err != nil {
		return nil, nil, err
	}
	if !configReplaced(entries, hits, enc, value) {
		return nil, nil, errors.New("could not set the value without changing other settings")
	}
	return enc, changed, nil
}

// configReplaced checks that out parses to the entries with the hits' values
// set to value.
func configReplaced(before, hits []configEntry, out []byte, value string) bool {
	after, _, err := parseConfig(out)
	if err != nil {
		return false
	}
	want := make([]configEntry, len(before))
	copy(want, before)
	for i := range want {
		for _, h := range hits {
			if h.keyN == want[i].keyN {
				want[i].values = []string{value}
			}
		}
	}
	return sameEntries(want, after)
}

// runeColToByte converts yaml.v3's 1-based character column to a byte
// offset in line.
func runeColToByte(line []byte, col int) int {
	off := 0
	for c := 1; c < col; c++ {
		if off >= len(line) {
			return -1
		}
		_, n := utf8.DecodeRune(line[off:])
		off += n
	}
	return off
}

// scalarEnd finds the end of a one-line scalar starting at start.
func scalarEnd(line []byte, start int, style yaml.Style) (int, bool) {
	switch {
	case style&yaml.DoubleQuotedStyle != 0:
		for i := start + 1; i < len(line); i++ {
			if line[i] == '\\' {
				i++
				continue
			}
			if line[i] == '"' {
				return i + 1, true
			}
		}
		return 0, false
	case style&yaml.SingleQuotedStyle != 0:
		for i := start + 1; i < len(line); i++ {
			if line[i] == '\'' {
				if i+1 < len(line) && line[i+1] == '\'' {
					i++
					continue
				}
				return i + 1, true
			}
		}
		return 0, false
	}
	end := len(line)
	if i := bytes.Index(line[start:], []byte(" #")); i >= 0 {
		end = start + i
	}
	if i := bytes.Index(line[start:], []byte("\t#")); i >= 0 && start+i < end {
		end = start + i
	}
	for end > start && (line[end-1] == ' ' || line[end-1] == '\t' || line[end-1] == '\r') {
		end--
	}
	return end, true
}

// yamlScalarLike renders value in the given style; a plain scalar is kept
// plain only when it would read back as the same string (checked by the
// caller's re-parse; double quotes otherwise).
func yamlScalarLike(style yaml.Style, value string) string {
	switch {
	case style&yaml.SingleQuotedStyle != 0:
		return "'" + strings.ReplaceAll(value, "'", "''") + "'"
	case style&yaml.DoubleQuotedStyle != 0:
		b, _ := json.Marshal(value)
		return string(b)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("k: "+value), &n); err == nil && len(n.Content) == 1 && len(n.Content[0].Content) == 2 {
		v := n.Content[0].Content[1]
		if v.Kind == yaml.ScalarNode && v.Tag == "!!str" && v.Value == value && !strings.ContainsAny(value, "#\n") {
			return value
		}
	}
	b, _ := json.Marshal(value)
	return string(b)
}
