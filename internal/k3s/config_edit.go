package k3s

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// StripServer removes `server` from every source that sets it to a
// non-empty value: the config.yaml/drop-in key (every other byte kept), the
// --server/-s unit args with their value (install.sh layout kept valid),
// K3S_URL lines of env files and K3S_URL words of Environment= lines. It
// returns one Edit per changed file, Before holding the exact original
// bytes (k3s-ca-rotation.md §7, §9 "Pre-fix workaround"). Restoring is
// writing every Before back.
func StripServer(src Sources) ([]Edit, error) {
	return StripKey(src, "server")
}

// flagEnvNames returns the env variables that set a flag.
func flagEnvNames(flag string) []string {
	var out []string
	for k, v := range EnvKeys {
		if v == flag {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// StripKey removes a flag from every source that sets it to a non-empty
// value, like StripServer.
func StripKey(src Sources, flag string) ([]Edit, error) {
	s, err := parseSources(src)
	if err != nil {
		return nil, err
	}
	envNames := flagEnvNames(flag)
	var edits []Edit
	for _, u := range s.units {
		if e, ok := stripUnitKey(u, flag, envNames); ok {
			edits = append(edits, e)
		}
	}
	for fi, f := range s.config {
		out, ranges, err := configRemoveKeys(f.Data, func(e configEntry) bool { return e.key == flag && e.nonEmpty() })
		if err != nil {
			return nil, fmt.Errorf("edit %s: %w; edit it by hand", f.Path, err)
		}
		if !bytes.Equal(out, f.Data) {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: out, What: fmt.Sprintf("removed %s key from %s (lines %s)", flag, s.kinds[fi], formatRanges(ranges))})
		}
	}
	for fi, f := range s.envFiles {
		if e, ok := stripEnvFileKey(f, s.envEnts[fi], envNames); ok {
			edits = append(edits, e)
		}
	}
	return edits, nil
}

// stripUnitKey removes the flag from the [Service] ExecStart= and
// Environment= directives of one unit file; ok is false when the file
// does not set it.
func stripUnitKey(u unitFile, flag string, envNames []string) (Edit, bool) {
	data := u.data
	var what []string
	// Edit directives from the last so offsets stay valid.
	for di := len(u.dirs) - 1; di >= 0; di-- {
		d := u.dirs[di]
		if d.section != "Service" {
			continue
		}
		drop, w := directiveDrops(d, flag, envNames)
		what = append(what, w...)
		if len(drop) > 0 {
			data = removeUnitWords(data, u.lines, d, drop)
			// Offsets of earlier directives are unchanged.
		}
	}
	if bytes.Equal(data, u.data) {
		return Edit{}, false
	}
	return Edit{Path: u.path, Before: u.data, After: data, What: strings.Join(reverse(what), "; ")}, true
}

// directiveDrops are the words of one [Service] directive that set the
// flag to a non-empty value (an ExecStart= flag with its value, an
// Environment= assignment of one of envNames), and what removing them
// does, in the directive's order.
func directiveDrops(d unitDirective, flag string, envNames []string) (map[int]bool, []string) {
	drop := map[int]bool{}
	var what []string
	switch d.key {
	case "ExecStart":
		if d.empty {
			return drop, nil
		}
		for _, f := range parseUnitFlags(d.words) {
			if f.name == flag && f.value != "" {
				for _, w := range f.words {
					drop[w] = true
				}
				what = append(what, fmt.Sprintf("removed %s from ExecStart (line %d)", d.words[f.words[0]].Value, f.line))
			}
		}
	case "Environment":
		for wi, w := range d.words {
			k, v, _ := strings.Cut(w.Value, "=")
			if slices.Contains(envNames, k) && v != "" {
				drop[wi] = true
				what = append(what, fmt.Sprintf("removed %s from Environment= (line %d)", k, w.Line))
			}
		}
	}
	return drop, what
}

// stripEnvFileKey removes the assignments of envNames with a non-empty
// value from one env file; ok is false when it has none.
func stripEnvFileKey(f NamedFile, ents []envAssign, envNames []string) (Edit, bool) {
	var drop []envAssign
	var lines []string
	for _, a := range ents {
		if slices.Contains(envNames, a.key) && a.value != "" {
			drop = append(drop, a)
			lines = append(lines, fmt.Sprintf("%s line %d", a.key, a.line))
		}
	}
	if len(drop) == 0 {
		return Edit{}, false
	}
	return Edit{Path: f.Path, Before: f.Data, After: envRemove(f.Data, drop), What: "removed " + strings.Join(lines, ", ")}, true
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func formatRanges(r [][2]int) string {
	var parts []string
	for _, x := range r {
		if x[0] == x[1] {
			parts = append(parts, fmt.Sprint(x[0]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", x[0], x[1]))
		}
	}
	return strings.Join(parts, ", ")
}

// ReplaceToken replaces the token wherever it is set to a non-empty value:
// config key `token`, unit args --token/-t, K3S_TOKEN in env files and in
// Environment= lines (used when the cluster root CA changes and a node has
// a secure token; k3s-ca-rotation.md §3 "Tokens after rotation", §5
// "Documented procedure"). When no token is set that way but --token-file or
// K3S_TOKEN_FILE is, it fails with an error wrapping ErrTokenFromFile that
// names the file to update. With no token source at all it returns no
// edits. Error messages never contain a token.
func ReplaceToken(src Sources, newToken string) ([]Edit, error) {
	if newToken == "" {
		return nil, errors.New("replace token: the new token is empty")
	}
	s, err := parseSources(src)
	if err != nil {
		return nil, err
	}
	var edits []Edit
	found := false
	for _, u := range s.units {
		data, what := replaceUnitToken(u, newToken)
		if len(what) > 0 {
			found = true
		}
		if !bytes.Equal(data, u.data) {
			edits = append(edits, Edit{Path: u.path, Before: u.data, After: data, What: strings.Join(reverse(what), "; ")})
		}
	}
	for fi, f := range s.config {
		out, lines, err := configReplaceValue(f.Data, func(e configEntry) bool { return e.key == "token" && e.nonEmpty() }, newToken)
		if err != nil {
			return nil, fmt.Errorf("edit %s: %w; edit the token by hand", f.Path, err)
		}
		if len(lines) > 0 {
			found = true
		}
		if !bytes.Equal(out, f.Data) {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: out, What: fmt.Sprintf("replaced the token in %s (line %s)", s.kinds[fi], joinInts(lines))})
		}
	}
	for fi, f := range s.envFiles {
		data, what := replaceEnvToken(f.Data, s.envEnts[fi], newToken)
		if len(what) > 0 {
			found = true
		}
		if !bytes.Equal(data, f.Data) {
			edits = append(edits, Edit{Path: f.Path, Before: f.Data, After: data, What: "replaced " + strings.Join(reverse(what), ", ")})
		}
	}
	if !found {
		eff, err := Effective(src)
		if err != nil && !errors.Is(err, ErrConfigPathMismatch) {
			return nil, err
		}
		if tf, ok := eff["token-file"]; ok && tf.Value != "" {
			return nil, fmt.Errorf("replace token: %w %s (set by %s line %d); write the new token into that file", ErrTokenFromFile, tf.Value, tf.Source, tf.Line)
		}
	}
	return edits, nil
}

// replaceUnitToken replaces the token in the [Service] ExecStart= and
// Environment= lines of one unit file, returning its new bytes and what changed.
func replaceUnitToken(u unitFile, newToken string) ([]byte, []string) {
	data := u.data
	var what []string
	for di := len(u.dirs) - 1; di >= 0; di-- {
		d := u.dirs[di]
		if d.section != "Service" {
			continue
		}
		type rep struct {
			w   UnitArg
			raw string
		}
		var reps []rep
		switch d.key {
		case "ExecStart":
			if d.empty {
				continue
			}
			for _, f := range parseUnitFlags(d.words) {
				if f.name != "token" || f.value == "" {
					continue
				}
				if len(f.words) == 2 {
					w := d.words[f.words[1]]
					reps = append(reps, rep{w, quoteUnitLike(w.Raw, newToken)})
				} else {
					w := d.words[f.words[0]]
					n, _, _ := strings.Cut(w.Value, "=")
					reps = append(reps, rep{w, quoteUnitLike(w.Raw, n+"="+newToken)})
				}
				what = append(what, fmt.Sprintf("replaced the --token value in ExecStart (line %d)", f.line))
			}
		case "Environment":
			for _, w := range d.words {
				k, v, _ := strings.Cut(w.Value, "=")
				if k == "K3S_TOKEN" && v != "" {
					reps = append(reps, rep{w, quoteUnitLike(w.Raw, "K3S_TOKEN="+newToken)})
					what = append(what, fmt.Sprintf("replaced K3S_TOKEN in Environment= (line %d)", w.Line))
				}
			}
		}
		for ri := len(reps) - 1; ri >= 0; ri-- {
			r := reps[ri]
			data = bytes.Join([][]byte{data[:r.w.Start], []byte(r.raw), data[r.w.End:]}, nil)
		}
	}
	return data, what
}

// replaceEnvToken replaces the non-empty K3S_TOKEN assignments of one env
// file, returning its new bytes and what changed.
func replaceEnvToken(data []byte, ents []envAssign, newToken string) ([]byte, []string) {
	var what []string
	for ai := len(ents) - 1; ai >= 0; ai-- {
		a := ents[ai]
		if a.key == "K3S_TOKEN" && a.value != "" {
			data = envReplaceValue(data, a, newToken)
			what = append(what, fmt.Sprintf("K3S_TOKEN line %d", a.line))
		}
	}
	return data, what
}

func joinInts(v []int) string {
	sort.Ints(v)
	var p []string
	for _, x := range v {
		p = append(p, fmt.Sprint(x))
	}
	return strings.Join(p, ", ")
}
