package k8sops

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/caretaker/caretaker/runner"
)

// Object is one API object as JSON-like Go values (maps, slices, strings,
// int64, float64, bools, nil).
type Object = map[string]any

// Get returns one object, or nil when it does not exist.
func (cl *Client) Get(ctx context.Context, kind, namespace, name string) (Object, error) {
	k, err := cl.ResolveKind(kind)
	if err != nil {
		return nil, cl.errorf("%w", err)
	}
	if err := needNamespace(k, namespace); err != nil {
		return nil, cl.errorf("%w", err)
	}
	u, err := cl.resource(k, namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, cl.errorf("get %s %s: %w", k, qualified(namespace, name), err)
	}
	return u.Object, nil
}

// ListOptions select the objects of List.
type ListOptions struct {
	// Namespace limits the list to one namespace ("": every namespace).
	Namespace string
	// Selector is a label selector ("app=web,tier!=db").
	Selector string
}

// List returns the objects of a kind, sorted by namespace and name.
func (cl *Client) List(ctx context.Context, kind string, o ListOptions) ([]Object, error) {
	k, err := cl.ResolveKind(kind)
	if err != nil {
		return nil, cl.errorf("%w", err)
	}
	if _, err := ParseSelector(o.Selector); err != nil {
		return nil, cl.errorf("%w", err)
	}
	items, err := cl.list(ctx, k, o)
	if err != nil {
		return nil, err
	}
	out := make([]Object, len(items))
	for i := range items {
		out[i] = items[i].Object
	}
	return out, nil
}

// list lists k's objects, sorted by namespace and name.
func (cl *Client) list(ctx context.Context, k Kind, o ListOptions) ([]unstructured.Unstructured, error) {
	l, err := cl.resource(k, o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return nil, cl.errorf("list %s: %w", k, err)
	}
	items := l.Items
	sort.Slice(items, func(i, j int) bool {
		if items[i].GetNamespace() != items[j].GetNamespace() {
			return items[i].GetNamespace() < items[j].GetNamespace()
		}
		return items[i].GetName() < items[j].GetName()
	})
	return items, nil
}

// ParseSelector checks a label selector ("" selects everything).
func ParseSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("label selector %q: %w (e.g. \"app=web\", \"tier in (a,b)\", \"!legacy\")", s, err)
	}
	return sel, nil
}

// Patch types Patch takes.
const (
	PatchMerge     = "merge"     // RFC 7386 JSON merge patch
	PatchStrategic = "strategic" // Kubernetes strategic merge patch (built-in kinds)
)

// PatchResult is what Patch did.
type PatchResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Changed is false when the object already had every value of the
	// patch (nothing was sent).
	Changed bool   `json:"changed"`
	Object  Object `json:"object"`
}

// undoPatch is the undo record of Patch and Restore: a merge patch that
// puts back the values the change replaced.
type undoPatch struct {
	Kind      string          `json:"kind"`
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Patch     json.RawMessage `json:"patch"`
	How       string          `json:"how"`
}

// UndoKindPatch is the undo action Patch records.
const UndoKindPatch = "k8s.patch"

func init() { runner.RegisterUndo(UndoKindPatch, undoPatchFunc) }

// Patch applies a merge or strategic merge patch to one object. Before it
// changes anything it records, as its undo, a merge patch that puts back
// the values the patch replaces (lists whole). A patch that would change
// nothing is not sent and reports Changed=false. In check mode it reports
// "would patch ..." and returns the object as it is.
func (cl *Client) Patch(ctx context.Context, kind, namespace, name string, patch []byte, patchType string) (*PatchResult, error) {
	k, err := cl.ResolveKind(kind)
	if err != nil {
		return nil, cl.errorf("%w", err)
	}
	if err := needNamespace(k, namespace); err != nil {
		return nil, cl.errorf("%w", err)
	}
	pt, err := patchTypeOf(patchType)
	if err != nil {
		return nil, cl.errorf("%w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(patch, &doc); err != nil {
		return nil, cl.errorf("patch for %s %s is not a JSON object: %w", k, qualified(namespace, name), err)
	}
	r := cl.resource(k, namespace)
	cur, err := r.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, cl.errorf("get %s %s: %w", k, qualified(namespace, name), err)
	}
	res := &PatchResult{Kind: k.String(), Namespace: namespace, Name: name, Object: cur.Object}
	if subsetOf(doc, cur.Object) {
		return res, nil
	}
	undo, err := json.Marshal(inverse(doc, cur.Object))
	if err != nil {
		return nil, cl.errorf("undo of the patch: %w", err)
	}
	run := cl.Server.Run
	what := fmt.Sprintf("patch %s %s: %s", k, qualified(namespace, name), patch)
	err = run.Wet(what, func() error {
		if err := cl.recordUndo(k, namespace, name, undo); err != nil {
			return err
		}
		out, err := r.Patch(ctx, name, pt, patch, metav1.PatchOptions{FieldManager: "caretaker"})
		if err != nil {
			return cl.errorf("patch %s %s: %w", k, qualified(namespace, name), err)
		}
		res.Object, res.Changed = out.Object, true
		run.MarkChanged()
		return nil
	})
	return res, err
}

// recordUndo records the merge patch that undoes a change of one object.
func (cl *Client) recordUndo(k Kind, namespace, name string, patch []byte) error {
	data, err := json.Marshal(undoPatch{Kind: k.String(), Namespace: namespace, Name: name, Patch: patch,
		How: fmt.Sprintf("merge patch %s %s with %s", k, qualified(namespace, name), patch)})
	if err != nil {
		return err
	}
	return cl.Server.Run.Undo(UndoKindPatch, data)
}

// undoPatchFunc replays a recorded undo patch through the node the change
// was made through.
func undoPatchFunc(ctx context.Context, env *runner.Env, data []byte) error {
	var u undoPatch
	if err := json.Unmarshal(data, &u); err != nil {
		return fmt.Errorf("%s undo: bad record: %w", UndoKindPatch, err)
	}
	cl, err := ConnectAny(ctx, env, env.Node, UndoKindPatch)
	if err != nil {
		return err
	}
	k, err := cl.ResolveKind(u.Kind)
	if err != nil {
		return cl.errorf("%w", err)
	}
	_, err = cl.resource(k, u.Namespace).Patch(ctx, u.Name, types.MergePatchType, u.Patch, metav1.PatchOptions{FieldManager: "caretaker"})
	if apierrors.IsNotFound(err) {
		env.Output(runner.StreamLog, fmt.Sprintf("%s %s no longer exists: nothing to undo", k, qualified(u.Namespace, u.Name)))
		return nil
	}
	if err != nil {
		return cl.errorf("undo: %s: %w", u.How, err)
	}
	return nil
}

func patchTypeOf(s string) (types.PatchType, error) {
	switch s {
	case "", PatchStrategic:
		return types.StrategicMergePatchType, nil
	case PatchMerge:
		return types.MergePatchType, nil
	}
	return "", fmt.Errorf("patch type %q: give %q (JSON merge patch) or %q (strategic merge patch, built-in kinds)", s, PatchMerge, PatchStrategic)
}

// needNamespace refuses a namespaced kind without a namespace (a get or
// patch must name one).
func needNamespace(k Kind, namespace string) error {
	if k.Namespaced && namespace == "" {
		return fmt.Errorf("%s are namespaced: give namespace=", k)
	}
	if !k.Namespaced && namespace != "" {
		return fmt.Errorf("%s are cluster-scoped: give no namespace (got %q)", k, namespace)
	}
	return nil
}

// qualified is "namespace/name", or name for cluster-scoped objects.
func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// subsetOf reports whether obj already has every value of the merge patch
// doc (so applying it changes nothing).
func subsetOf(doc, obj map[string]any) bool {
	for k, v := range doc {
		cur, has := obj[k]
		switch pv := v.(type) {
		case nil:
			if has {
				return false
			}
		case map[string]any:
			cm, ok := cur.(map[string]any)
			if !ok || !subsetOf(pv, cm) {
				return false
			}
		default:
			a, _ := json.Marshal(pv)
			b, _ := json.Marshal(normalize(cur))
			if !has || string(a) != string(b) {
				return false
			}
		}
	}
	return true
}

// normalize turns int64 values into float64 as encoding/json decodes
// them, so values from the API and from a patch compare equal.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return v
	}
	return out
}

// inverse is the merge patch that puts back obj's values at every path the
// merge patch doc sets: obj's value, or null where obj has none.
func inverse(doc, obj map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range doc {
		cur, has := obj[k]
		pm, isMap := v.(map[string]any)
		cm, curMap := cur.(map[string]any)
		switch {
		case isMap && curMap:
			out[k] = inverse(pm, cm)
		case has:
			out[k] = cur
		default:
			out[k] = nil
		}
	}
	return out
}
