package runner

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/caretaker/caretaker/runner/errs"
)

// Parameter types a playbook can declare with param(type=...), beyond the
// default's own Starlark type. Values stay strings in Starlark (a duration
// is "3m", a file its absolute path); the types decide what is accepted,
// so that plan and --check refuse a bad value before any node is touched.
const (
	// ParamDuration is a Go duration ("90s", "3m", "1h30m"), ≥ 0.
	ParamDuration = "duration"
	// ParamFile is a regular, readable file on the controller.
	ParamFile = "file"
	// ParamPEMCert is a controller file holding PEM certificates that parse.
	ParamPEMCert = "pem-cert"
	// ParamPEMKey is a controller file holding a PEM private key that parses.
	ParamPEMKey = "pem-key"
)

// paramTypes are the accepted type= values with what they mean, for
// messages. The Starlark types of defaults are accepted too.
var paramTypes = map[string]string{
	ParamDuration: "a duration such as 90s, 3m or 1h30m",
	ParamFile:     "a readable file on the controller",
	ParamPEMCert:  "a PEM certificate file on the controller",
	ParamPEMKey:   "a PEM private key file on the controller",
	"string":      "a string", "int": "an integer", "float": "a number", "bool": "true or false", "list": "a comma-separated list",
}

// param(name, default, doc="", choices=None, type=None, min=None, max=None,
// resumable=None):
// declare a parameter and return its value: the -p value converted to the
// parameter's type and checked (choices, bounds, files that must exist and
// parse), or the default, which is checked the same way. An empty string
// means "not given" for file types. resumable=True says the value may be
// corrected by `caretaker resume RUN -p` after changes were made (it says
// how, not what: a timeout, a pause); durations are, others are not unless
// declared so.
func paramBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	l, err := loaderFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	var (
		name, doc, typ string
		def            starlark.Value
		choices        *starlark.List
		lo, hi         starlark.Value = starlark.None, starlark.None
		resumable      starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "default", &def, "doc?", &doc, "choices?", &choices,
		"type?", &typ, "min?", &lo, "max?", &hi, "resumable?", &resumable); err != nil {
		return nil, err
	}
	if prev := l.param(name); prev != nil {
		return nil, fmt.Errorf("%s: parameter %q is already declared at %s", b.Name(), name, prev.Pos)
	}
	p := &Param{Name: name, Doc: doc, Default: def, Value: def, Type: typ, Pos: th.CallFrame(1).Pos, Resumable: typ == ParamDuration}
	if rb, ok := resumable.(starlark.Bool); ok {
		p.Resumable = bool(rb)
	}
	if err := p.declare(choices, lo, hi); err != nil {
		return nil, fmt.Errorf("%s %q: %w", b.Name(), name, err)
	}
	if err := p.check(def, "its default"); err != nil {
		return nil, fmt.Errorf("%s %q: the playbook's default %s is invalid: %w", b.Name(), name, def.String(), err)
	}
	if raw, ok := l.opts.Params[name]; ok {
		v, err := p.convert(raw)
		if err == nil {
			err = p.check(v, "-p")
		}
		if err != nil {
			return nil, fmt.Errorf("-p %s=%s: %w (%s): %w", name, raw, err, p.Want(), errs.ErrBadInput)
		}
		p.Value, p.Set = v, true
	}
	l.plan.Params = append(l.plan.Params, p)
	return p.Value, nil
}

// declare records choices and bounds, refusing what does not fit the type.
func (p *Param) declare(choices *starlark.List, lo, hi starlark.Value) error {
	if p.Type != "" {
		if _, ok := paramTypes[p.Type]; !ok {
			return fmt.Errorf("unknown type %q (one of %s)", p.Type, strings.Join(sortedKeys(paramTypes), ", "))
		}
	}
	if choices != nil {
		for i := 0; i < choices.Len(); i++ {
			s, ok := starlark.AsString(choices.Index(i))
			if !ok {
				return fmt.Errorf("choices must be strings")
			}
			p.Choices = append(p.Choices, s)
		}
	}
	if lo != starlark.None {
		p.Min = lo
	}
	if hi != starlark.None {
		p.Max = hi
	}
	if (p.Min != nil || p.Max != nil) && !p.bounded() {
		return fmt.Errorf("min and max apply to int, float and duration parameters")
	}
	return nil
}

// kind is the parameter's effective type.
func (p *Param) kind() string {
	if p.Type != "" {
		return p.Type
	}
	switch p.Default.(type) {
	case starlark.Bool:
		return "bool"
	case starlark.Int:
		return "int"
	case starlark.Float:
		return "float"
	case *starlark.List:
		return "list"
	}
	return "string"
}

func (p *Param) bounded() bool {
	k := p.kind()
	return k == "int" || k == "float" || k == ParamDuration
}

// Want says what the parameter accepts, for messages and the plan.
func (p *Param) Want() string {
	if len(p.Choices) > 0 {
		return "one of " + strings.Join(p.Choices, ", ")
	}
	w := paramTypes[p.kind()]
	if w == "" {
		w = p.kind()
	}
	if p.Min != nil {
		w += ", at least " + valueText(p.Min)
	}
	if p.Max != nil {
		w += ", at most " + valueText(p.Max)
	}
	return w
}

// convert types a -p value.
func (p *Param) convert(raw string) (starlark.Value, error) {
	switch p.kind() {
	case "bool":
		switch strings.ToLower(raw) {
		case "true", "yes", "1", "on":
			return starlark.True, nil
		case "false", "no", "0", "off":
			return starlark.False, nil
		}
		return nil, fmt.Errorf("%q is not a boolean", raw)
	case "int":
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", raw)
		}
		return starlark.MakeInt64(n), nil
	case "float":
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", raw)
		}
		return starlark.Float(f), nil
	case "list":
		var items []starlark.Value
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, starlark.String(s))
			}
		}
		return starlark.NewList(items), nil
	case ParamFile, ParamPEMCert, ParamPEMKey:
		if raw == "" {
			return starlark.String(""), nil
		}
		abs, err := filepath.Abs(raw)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", raw, err)
		}
		return starlark.String(abs), nil
	}
	switch p.Default.(type) {
	case starlark.String, starlark.NoneType:
		return starlark.String(raw), nil
	}
	return nil, fmt.Errorf("parameters with a default of type %s cannot be set with -p", p.Default.Type())
}

// check validates a value of the parameter: its choices, its bounds, and
// for typed parameters that the duration parses or the file exists and
// parses.
func (p *Param) check(v starlark.Value, from string) error {
	if len(p.Choices) > 0 {
		s, _ := starlark.AsString(v)
		for _, c := range p.Choices {
			if c == s {
				return nil
			}
		}
		return fmt.Errorf("%q is not allowed", s)
	}
	switch p.kind() {
	case ParamDuration:
		s, ok := starlark.AsString(v)
		d, err := time.ParseDuration(s)
		if !ok || err != nil || d < 0 {
			return fmt.Errorf("%s is not a duration", v.String())
		}
		return p.checkBounds(float64(d), func(b starlark.Value) (float64, error) {
			bs, _ := starlark.AsString(b)
			bd, err := time.ParseDuration(bs)
			return float64(bd), err
		})
	case "int", "float":
		f, ok := starlark.AsFloat(v)
		if !ok {
			return fmt.Errorf("%s is not a number", v.String())
		}
		return p.checkBounds(f, func(b starlark.Value) (float64, error) {
			bf, ok := starlark.AsFloat(b)
			if !ok {
				return 0, fmt.Errorf("%s is not a number", b.String())
			}
			return bf, nil
		})
	case ParamFile, ParamPEMCert, ParamPEMKey:
		s, _ := starlark.AsString(v)
		if s == "" {
			return nil
		}
		return checkParamFile(p.kind(), s)
	}
	return nil
}

// checkBounds checks f against Min and Max, converted by conv.
func (p *Param) checkBounds(f float64, conv func(starlark.Value) (float64, error)) error {
	if p.Min != nil {
		lo, err := conv(p.Min)
		if err != nil {
			return fmt.Errorf("min %s: %w", p.Min.String(), err)
		}
		if f < lo {
			return fmt.Errorf("below the minimum %s", valueText(p.Min))
		}
	}
	if p.Max != nil {
		hi, err := conv(p.Max)
		if err != nil {
			return fmt.Errorf("max %s: %w", p.Max.String(), err)
		}
		if f > hi {
			return fmt.Errorf("above the maximum %s", valueText(p.Max))
		}
	}
	return nil
}

// checkParamFile checks that a controller file exists, is regular and
// readable, and for PEM types that it holds what it must.
func checkParamFile(kind, name string) error {
	fi, err := os.Stat(name)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("%s does not exist", name)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("%s cannot be read: %w", name, err)
	}
	switch kind {
	case ParamPEMCert:
		n := 0
		for rest := data; ; n++ {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				return fmt.Errorf("%s holds a PEM %q block, not a certificate", name, blk.Type)
			}
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return fmt.Errorf("%s: certificate %d does not parse: %w", name, n+1, err)
			}
		}
		if n == 0 {
			return fmt.Errorf("%s holds no PEM certificate", name)
		}
	case ParamPEMKey:
		blk, _ := pem.Decode(data)
		if blk == nil || !strings.Contains(blk.Type, "PRIVATE KEY") {
			return fmt.Errorf("%s holds no PEM private key", name)
		}
		if _, err := parsePrivateKey(blk); err != nil {
			return fmt.Errorf("%s: the private key does not parse: %w", name, err)
		}
	}
	return nil
}

// parsePrivateKey parses the key formats K3s accepts for CA keys.
func parsePrivateKey(blk *pem.Block) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return x509.ParsePKCS1PrivateKey(blk.Bytes)
}

// valueText is a bound as the operator writes it.
func valueText(v starlark.Value) string {
	if s, ok := starlark.AsString(v); ok {
		return s
	}
	return v.String()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParamHint adds to err, a builtin's refusal of one of its arguments,
// which playbook parameter the refused value came from, so that the
// operator knows what to change (-p NAME=...). Values are matched by
// equality with the parameters' values and must appear in the error's
// text; err is returned as is when none does.
func (e *Env) ParamHint(err error, args starlark.Tuple, kwargs []starlark.Tuple) error {
	if err == nil || e == nil || e.run == nil {
		return err
	}
	values := append([]starlark.Value(nil), args...)
	for _, kv := range kwargs {
		values = append(values, kv[1])
	}
	for _, v := range values {
		s, ok := starlark.AsString(v)
		if !ok || s == "" || !strings.Contains(err.Error(), s) {
			continue
		}
		for _, p := range e.run.params {
			if ps, ok := starlark.AsString(p.Value); ok && ps == s {
				how := "its default in the playbook"
				if p.Set {
					how = "-p " + p.Name + "=" + ps
				}
				return fmt.Errorf("%w (the value of parameter %s, %s; declared at %s; give another with -p %s=...)", err, p.Name, how, p.Pos, p.Name)
			}
		}
	}
	return err
}
