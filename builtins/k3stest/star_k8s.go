package k3stest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	starjson "go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	"github.com/caretaker/caretaker/builtins"
)

// The fake cluster's Kubernetes API for .star tests: cluster.k8s_apply and
// cluster.k8s_get read and write the cluster's store directly (the
// datastore's content, as kubectl would through any server; also while no
// server runs), and fake.b64encode / fake.b64decode for the base64 fields
// (caBundle, Secret data).

// k8sMethod answers cluster.k8s_apply(obj) and cluster.k8s_get(kind,
// name, namespace="").
func (v *clusterValue) k8sMethod(bc *builtins.Call, name string) (starlark.Value, error) {
	th := bc.Thread()
	store := v.c.kube
	if name == "k8s_apply" {
		var obj *starlark.Dict
		if err := bc.Unpack("obj", &obj); err != nil {
			return nil, err
		}
		in, err := goObject(th, obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bc.Name(), err)
		}
		out, err := store.Apply(in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bc.Name(), err)
		}
		return starlarkObject(th, out)
	}
	var kind, objName, ns string
	if err := bc.Unpack("kind", &kind, "name", &objName, "namespace?", &ns); err != nil {
		return nil, err
	}
	out, err := store.Get(kind, ns, objName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bc.Name(), err)
	}
	if out == nil {
		return starlark.None, nil
	}
	return starlarkObject(th, out)
}

// goObject is a Starlark dict as the object JSON decodes it.
func goObject(th *starlark.Thread, d *starlark.Dict) (map[string]any, error) {
	enc, err := starlark.Call(th, starjson.Module.Members["encode"], starlark.Tuple{d}, nil)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := utiljson.Unmarshal([]byte(string(enc.(starlark.String))), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// starlarkObject is an object as a Starlark dict.
func starlarkObject(th *starlark.Thread, o map[string]any) (starlark.Value, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	return starlark.Call(th, starjson.Module.Members["decode"], starlark.Tuple{starlark.String(b)}, nil)
}

// b64Builtins are fake.b64encode(s) and fake.b64decode(s).
func b64Builtins() starlark.StringDict {
	return starlark.StringDict{
		"b64encode": builtins.NewBuiltin("fake.b64encode", builtins.WhenTest, func(bc *builtins.Call) (any, error) {
			var s string
			if err := bc.Unpack("s", &s); err != nil {
				return nil, err
			}
			return starlark.String(base64.StdEncoding.EncodeToString([]byte(s))), nil
		}),
		"b64decode": builtins.NewBuiltin("fake.b64decode", builtins.WhenTest, func(bc *builtins.Call) (any, error) {
			var s string
			if err := bc.Unpack("s", &s); err != nil {
				return nil, err
			}
			out, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", bc.Name(), err)
			}
			return starlark.String(out), nil
		}),
	}
}
