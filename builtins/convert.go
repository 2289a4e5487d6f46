package builtins

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/caretaker/caretaker/builtins/k3sops"
	"github.com/caretaker/caretaker/builtins/k8sops"
)

// structNames are the constructor names of the Starlark structs typed
// results become (shown when a playbook prints one).
var structNames = map[reflect.Type]string{
	reflect.TypeFor[k3sops.Facts]():            "facts",
	reflect.TypeFor[k3sops.Setting]():          "setting",
	reflect.TypeFor[k3sops.Origin]():           "origin",
	reflect.TypeFor[k3sops.CA]():               "ca",
	reflect.TypeFor[k3sops.BackupResult]():     "backup",
	reflect.TypeFor[k3sops.RestoreResult]():    "restore",
	reflect.TypeFor[k3sops.CASet]():            "ca_set",
	reflect.TypeFor[k3sops.RotateResult]():     "rotate_ca",
	reflect.TypeFor[k3sops.Datastore]():        "datastore",
	reflect.TypeFor[k3sops.DatastoreFile]():    "file",
	reflect.TypeFor[k3sops.TokenResult]():      "token",
	reflect.TypeFor[k3sops.EditResult]():       "strip",
	reflect.TypeFor[k3sops.Edit]():             "edit",
	reflect.TypeFor[k3sops.TokenUpdate]():      "token",
	reflect.TypeFor[k3sops.RestoredResult]():   "restored",
	reflect.TypeFor[k3sops.RestartResult]():    "restart",
	reflect.TypeFor[k3sops.VerifyResult]():     "verify",
	reflect.TypeFor[k3sops.Row]():              "row",
	reflect.TypeFor[k3sops.CheckResult]():      "check",
	reflect.TypeFor[k3sops.CertRow]():          "cert",
	reflect.TypeFor[k8sops.PatchResult]():      "patch",
	reflect.TypeFor[k8sops.RolloutState]():     "rollout",
	reflect.TypeFor[k8sops.WorkloadsResult]():  "workloads",
	reflect.TypeFor[k8sops.TrustReport]():      "trust",
	reflect.TypeFor[k8sops.TrustItem]():        "trust_item",
	reflect.TypeFor[k8sops.KubeconfigResult](): "kubeconfig",
}

var (
	timeType  = reflect.TypeFor[time.Time]()
	valueType = reflect.TypeFor[starlark.Value]()
)

// toStarlark converts a typed Go result into Starlark: structs become
// structs whose fields are named by their `star` tag, else their `json`
// tag (`star:"-"` or `json:"-"` without a star tag leave a field out;
// ",omitnil" leaves out a nil pointer and ",omitempty" a zero value),
// embedded structs are flattened, maps become dicts with sorted keys,
// slices lists (nil ones empty), nil pointers None and times RFC 3339
// strings in UTC.
func toStarlark(v any) (starlark.Value, error) {
	if v == nil {
		return starlark.None, nil
	}
	return convert(reflect.ValueOf(v))
}

func convert(v reflect.Value) (starlark.Value, error) {
	if v.Type() == timeType {
		return starlark.String(v.Interface().(time.Time).UTC().Format(time.RFC3339)), nil
	}
	if v.Type().Implements(valueType) && !(v.Kind() == reflect.Pointer && v.IsNil()) {
		return v.Interface().(starlark.Value), nil
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return starlark.None, nil
		}
		return convert(v.Elem())
	case reflect.String:
		return starlark.String(v.String()), nil
	case reflect.Bool:
		return starlark.Bool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return starlark.MakeInt64(v.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return starlark.MakeUint64(v.Uint()), nil
	case reflect.Float32, reflect.Float64:
		return starlark.Float(v.Float()), nil
	case reflect.Slice, reflect.Array:
		items := make([]starlark.Value, 0, v.Len())
		for i := 0; i < v.Len(); i++ {
			x, err := convert(v.Index(i))
			if err != nil {
				return nil, err
			}
			items = append(items, x)
		}
		return starlark.NewList(items), nil
	case reflect.Map:
		return convertMap(v)
	case reflect.Struct:
		d := starlark.StringDict{}
		if err := structFields(v, d); err != nil {
			return nil, err
		}
		name, ok := structNames[v.Type()]
		if !ok {
			name = strings.ToLower(v.Type().Name())
		}
		return starlarkstruct.FromStringDict(starlark.String(name), d), nil
	}
	return nil, fmt.Errorf("cannot convert a %s to Starlark", v.Type())
}

func convertMap(v reflect.Value) (starlark.Value, error) {
	if v.Type().Key().Kind() != reflect.String {
		return nil, fmt.Errorf("cannot convert a %s to Starlark: keys are not strings", v.Type())
	}
	keys := v.MapKeys()
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	d := starlark.NewDict(len(keys))
	for _, k := range keys {
		x, err := convert(v.MapIndex(k))
		if err != nil {
			return nil, err
		}
		if err := d.SetKey(starlark.String(k.String()), x); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// structFields adds the fields of struct v to d.
func structFields(v reflect.Value, d starlark.StringDict) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if err := structFields(v.Field(i), d); err != nil {
				return err
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		name, opts := fieldName(f)
		if name == "" {
			continue
		}
		fv := v.Field(i)
		if (opts == "omitnil" && fv.Kind() == reflect.Pointer && fv.IsNil()) || (opts == "omitempty" && fv.IsZero()) {
			continue
		}
		x, err := convert(fv)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", t.Name(), f.Name, err)
		}
		d[name] = x
	}
	return nil
}

// fieldName is a field's Starlark name and tag options ("" to leave it
// out).
func fieldName(f reflect.StructField) (string, string) {
	if tag, ok := f.Tag.Lookup("star"); ok {
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			return "", ""
		}
		return name, opts
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return "", ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, ""
}
