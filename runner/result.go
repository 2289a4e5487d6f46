package runner

import (
	"encoding/json"
	"fmt"
	"math"

	"go.starlark.net/starlark"
)

// MaxResultBytes caps the JSON encoding of a step's return value in a
// step_done event; a larger result stays available to result() in the run
// and the event says how large it was instead.
const MaxResultBytes = 16 << 10

// encodeResult is a step body's return value as plain JSON for the
// step_done event (what json.encode would give; values JSON cannot hold,
// such as a node or a function, become their string form), with secrets
// redacted. Over MaxResultBytes it returns a note instead.
func (st *runState) encodeResult(v starlark.Value) (json.RawMessage, string) {
	b, err := json.Marshal(plainJSON(v, 0))
	if err != nil {
		b, _ = json.Marshal(v.String())
	}
	text := st.redact(string(b))
	if len(text) > MaxResultBytes {
		return nil, fmt.Sprintf("result not in the event: %d bytes of JSON, over the %d-byte limit (later steps still read it with result())", len(text), MaxResultBytes)
	}
	if !json.Valid([]byte(text)) {
		// Redaction breaks JSON only if a secret spans an escape
		// sequence; fall back to the redacted string form.
		b, _ = json.Marshal(st.redact(v.String()))
		return b, ""
	}
	return json.RawMessage(text), ""
}

// plainJSON converts a Starlark value for encoding/json: dicts and
// structs become objects (keys as strings), lists and tuples arrays.
func plainJSON(v starlark.Value, depth int) any {
	if depth > 32 {
		return v.String()
	}
	switch x := v.(type) {
	case starlark.NoneType:
		return nil
	case starlark.Bool:
		return bool(x)
	case starlark.String:
		return string(x)
	case starlark.Int:
		if i, ok := x.Int64(); ok {
			return i
		}
		return x.String()
	case starlark.Float:
		if f := float64(x); !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f
		}
		return x.String()
	case starlark.Indexable: // list, tuple
		out := make([]any, 0, x.Len())
		for i := 0; i < x.Len(); i++ {
			out = append(out, plainJSON(x.Index(i), depth+1))
		}
		return out
	case starlark.IterableMapping: // dict
		out := map[string]any{}
		for _, it := range x.Items() {
			k, ok := starlark.AsString(it[0])
			if !ok {
				k = it[0].String()
			}
			out[k] = plainJSON(it[1], depth+1)
		}
		return out
	case starlark.HasAttrs:
		return structJSON(x, depth)
	}
	return v.String()
}

// structJSON is a struct's fields as an object; a value whose attributes
// are methods (a node, a module) is its string form.
func structJSON(x starlark.HasAttrs, depth int) any {
	out := map[string]any{}
	for _, name := range x.AttrNames() {
		a, err := x.Attr(name)
		if err != nil || a == nil {
			continue
		}
		if _, isFn := a.(starlark.Callable); isFn {
			return x.String()
		}
		out[name] = plainJSON(a, depth+1)
	}
	return out
}
