package journal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/runner"
)

// Shared values are journaled in a JSON form that keeps their Starlark
// type: None, bools, strings and lists are JSON's own; an int is a JSON
// integer; anything else is an object with one "$"-key:
//
//	{"$float": 1.5}
//	{"$bigint": "123456789012345678901234567890"}
//	{"$bytes": "<base64>"}
//	{"$tuple": [...]}
//	{"$dict": [[key, value], ...]}
//	{"$struct": "ctor", "fields": {"name": value, ...}}
//	{"$unsupported": "<type>"}   a value (a function, a node) that cannot
//	                             be kept; a resumed run does not see it

func encodeShared(v starlark.Value) (json.RawMessage, error) {
	x, err := toJournalJSON(v, 0)
	if err != nil {
		return nil, err
	}
	return json.Marshal(x)
}

func toJournalJSON(v starlark.Value, depth int) (any, error) {
	if depth > 64 {
		return nil, fmt.Errorf("value nested too deeply")
	}
	switch x := v.(type) {
	case starlark.NoneType:
		return nil, nil
	case starlark.Bool:
		return bool(x), nil
	case starlark.String:
		return string(x), nil
	case starlark.Bytes:
		return map[string]any{"$bytes": []byte(x)}, nil
	case starlark.Int:
		if i, ok := x.Int64(); ok {
			return i, nil
		}
		return map[string]any{"$bigint": x.String()}, nil
	case starlark.Float:
		return map[string]any{"$float": float64(x)}, nil
	case *starlark.List:
		out := make([]any, 0, x.Len())
		for i := 0; i < x.Len(); i++ {
			e, err := toJournalJSON(x.Index(i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case starlark.Tuple:
		out := make([]any, 0, len(x))
		for _, el := range x {
			e, err := toJournalJSON(el, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return map[string]any{"$tuple": out}, nil
	case *starlark.Dict:
		items := make([]any, 0, x.Len())
		for _, it := range x.Items() {
			k, err := toJournalJSON(it[0], depth+1)
			if err != nil {
				return nil, err
			}
			val, err := toJournalJSON(it[1], depth+1)
			if err != nil {
				return nil, err
			}
			items = append(items, []any{k, val})
		}
		return map[string]any{"$dict": items}, nil
	case *starlarkstruct.Struct:
		fields := map[string]any{}
		for _, name := range x.AttrNames() {
			a, err := x.Attr(name)
			if err != nil {
				return nil, err
			}
			f, err := toJournalJSON(a, depth+1)
			if err != nil {
				return nil, err
			}
			fields[name] = f
		}
		ctor, _ := starlark.AsString(x.Constructor())
		return map[string]any{"$struct": ctor, "fields": fields}, nil
	}
	return map[string]any{"$unsupported": v.Type()}, nil
}

func decodeShared(raw json.RawMessage) (starlark.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	return fromJournalJSON(x)
}

// fromJournalJSON rebuilds a Starlark value from its journal encoding.
func fromJournalJSON(x any) (starlark.Value, error) {
	switch v := x.(type) {
	case nil:
		return starlark.None, nil
	case bool:
		return starlark.Bool(v), nil
	case string:
		return starlark.String(v), nil
	case json.Number:
		i, ok := new(big.Int).SetString(v.String(), 10)
		if !ok {
			return nil, fmt.Errorf("number %s is not an integer", v)
		}
		return starlark.MakeBigInt(i), nil
	case []any:
		elems := make([]starlark.Value, 0, len(v))
		for _, e := range v {
			sv, err := fromJournalJSON(e)
			if err != nil {
				return nil, err
			}
			elems = append(elems, sv)
		}
		return starlark.NewList(elems), nil
	case map[string]any:
		switch {
		case v["$float"] != nil:
			n, _ := v["$float"].(json.Number)
			f, err := n.Float64()
			if err != nil {
				return nil, err
			}
			return starlark.Float(f), nil
		case v["$bigint"] != nil:
			s, _ := v["$bigint"].(string)
			i, ok := new(big.Int).SetString(s, 10)
			if !ok {
				return nil, fmt.Errorf("bad integer %q", s)
			}
			return starlark.MakeBigInt(i), nil
		case v["$bytes"] != nil:
			var b []byte
			raw, _ := json.Marshal(v["$bytes"])
			if err := json.Unmarshal(raw, &b); err != nil {
				return nil, err
			}
			return starlark.Bytes(b), nil
		case v["$tuple"] != nil:
			l, err := fromJournalJSON(v["$tuple"])
			if err != nil {
				return nil, err
			}
			list := l.(*starlark.List)
			t := make(starlark.Tuple, 0, list.Len())
			for i := 0; i < list.Len(); i++ {
				t = append(t, list.Index(i))
			}
			return t, nil
		case v["$dict"] != nil:
			return dictFromJournal(v["$dict"])
		case v["$struct"] != nil:
			return structFromJournal(v)
		case v["$unsupported"] != nil:
			return nil, fmt.Errorf("a %v cannot be kept in the journal", v["$unsupported"])
		}
		return nil, fmt.Errorf("unknown journal value %v", v)
	}
	return nil, fmt.Errorf("unknown journal value %T", x)
}

// dictFromJournal rebuilds a dict from its [key, value] pairs.
func dictFromJournal(x any) (starlark.Value, error) {
	items, _ := x.([]any)
	d := starlark.NewDict(len(items))
	for _, it := range items {
		pair, _ := it.([]any)
		if len(pair) != 2 {
			return nil, fmt.Errorf("bad dict item")
		}
		k, err := fromJournalJSON(pair[0])
		if err != nil {
			return nil, err
		}
		val, err := fromJournalJSON(pair[1])
		if err != nil {
			return nil, err
		}
		if err := d.SetKey(k, val); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// structFromJournal rebuilds a struct from its constructor and fields.
func structFromJournal(v map[string]any) (starlark.Value, error) {
	ctor, _ := v["$struct"].(string)
	fields, _ := v["fields"].(map[string]any)
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	d := starlark.StringDict{}
	for _, k := range names {
		fv, err := fromJournalJSON(fields[k])
		if err != nil {
			return nil, err
		}
		d[k] = fv
	}
	return starlarkstruct.FromStringDict(starlark.String(ctor), d), nil
}

// sharedEntry is one journaled share(): the value and the step and node
// that shared it (node empty in journals written before it was kept).
type sharedEntry struct {
	data json.RawMessage
	step int
	node string
}

// RecordShare journals a value published with share() by step on node; it
// never fails the step (a write error stops the run before its next step,
// see BeforeStep).
func (j *File) RecordShare(step int, node, key string, v starlark.Value) {
	raw, err := encodeShared(v)
	if err != nil {
		raw, _ = json.Marshal(map[string]any{"$unsupported": fmt.Sprintf("%s (%v)", v.Type(), err)})
	}
	j.mu.Lock()
	j.appendLocked(Entry{Type: "share", At: time.Now(), Step: step, Node: node, Kind: key, Data: raw})
	j.mu.Unlock()
	j.flush()
}

// SharedValues returns the values the run published with share(), for
// RunOptions.Shared of a resumed run: per key the last value shared by a
// step that then ended ok or changed on its node (a step that failed or
// was interrupted runs again and shares again). lost lists the keys whose
// value could not be kept (with why).
func (r *RunRecord) SharedValues() (values map[string]starlark.Value, lost []string) {
	values = map[string]starlark.Value{}
	keys := make([]string, 0, len(r.shared))
	for k := range r.shared {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw, ok := r.finishedShare(r.shared[k])
		if !ok {
			continue
		}
		v, err := decodeShared(raw)
		if err != nil {
			lost = append(lost, fmt.Sprintf("%s: %v", k, err))
			continue
		}
		values[k] = v
	}
	return values, lost
}

// finishedShare is the last of entries whose step finished on its node.
func (r *RunRecord) finishedShare(entries []sharedEntry) (json.RawMessage, bool) {
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.node == "" {
			return e.data, true
		}
		if res, ok := r.done[stepKey{e.step, e.node}]; ok && (res.Status == runner.StatusOK || res.Status == runner.StatusChanged) {
			return e.data, true
		}
	}
	return nil, false
}
