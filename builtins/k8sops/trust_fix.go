package k8sops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RefreshOptions say which trust bundles RefreshTrust may change; both
// are opt-in.
type RefreshOptions struct {
	// CABundles gives webhook configurations, APIServices and CRD
	// conversion webhooks that trust only the previous root the current
	// bundle as well (appended: the webhook's own serving certificate may
	// still be issued by the previous root).
	CABundles bool
	// TokenSecrets sets ca.crt of service-account token Secrets that trust
	// only the previous root to the current server CA bundle, as the
	// controller manager writes it for new tokens.
	TokenSecrets bool
}

// RefreshTrust changes, as o allows, the items of rep that trust only the
// previous root, recording for each the merge patch that undoes it first;
// each item's Fixed says what was done ("would ..." in check mode). The
// kube-root-ca.crt ConfigMaps are never changed: the controller manager
// rewrites them once it runs with the new root.
func (cl *Client) RefreshTrust(ctx context.Context, roots *Roots, rep *TrustReport, o RefreshOptions) error {
	var errs []string
	for i := range rep.Items {
		it := &rep.Items[i]
		if it.Status != TrustOldOnly || !o.allows(it) {
			continue
		}
		if err := cl.refreshItem(ctx, roots, it); err != nil {
			errs = append(errs, err.Error())
		}
	}
	rep.Table = trustTable(rep.Items)
	if len(errs) > 0 {
		return cl.errorf("refresh trust bundles: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (o RefreshOptions) allows(it *TrustItem) bool {
	switch it.Kind {
	case "secrets":
		return o.TokenSecrets
	case "configmaps":
		return false
	}
	return o.CABundles
}

// refreshItem sets one item's bundle (read, change, update with the
// object's resourceVersion, so a concurrent writer is not overwritten).
func (cl *Client) refreshItem(ctx context.Context, roots *Roots, it *TrustItem) error {
	k, err := cl.ResolveKind(it.Kind)
	if err != nil {
		return err
	}
	r := cl.resource(k, it.Namespace)
	u, err := r.Get(ctx, it.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get %s %s: %w", k, qualified(it.Namespace, it.Name), err)
	}
	old, ok := bundleAt(u.Object, it.path, it.base64)
	if !ok || roots.Judge(old) != TrustOldOnly {
		it.Fixed = "changed meanwhile; left alone"
		return nil
	}
	fresh := roots.Merged(old)
	how := "appended the current CA bundle"
	if it.Kind == "secrets" {
		fresh, how = roots.Bundle, "set to the current server CA bundle"
	}
	undoDoc, err := undoDocFor(u.Object, it.path)
	if err != nil {
		return err
	}
	value := string(fresh)
	if it.base64 {
		value = base64.StdEncoding.EncodeToString(fresh)
	}
	if !setAt(u.Object, it.path, value) {
		return fmt.Errorf("%s %s: %s not found", k, qualified(it.Namespace, it.Name), it.Field)
	}
	it.Fixed = "would be " + how
	return cl.Server.Run.Wet(fmt.Sprintf("update %s of %s %s (%s)", it.Field, k, qualified(it.Namespace, it.Name), how), func() error {
		if err := cl.recordUndo(k, it.Namespace, it.Name, undoDoc); err != nil {
			return err
		}
		if _, err := r.Update(ctx, u, metav1.UpdateOptions{FieldManager: "caretaker"}); err != nil {
			if apierrors.IsConflict(err) {
				return fmt.Errorf("%s %s changed while caretaker updated it: run again", k, qualified(it.Namespace, it.Name))
			}
			return fmt.Errorf("update %s %s: %w", k, qualified(it.Namespace, it.Name), err)
		}
		it.Fixed = how
		cl.Server.Run.MarkChanged()
		return nil
	})
}

// undoDocFor is the merge patch that puts back the value at path: the
// longest prefix of path made of map keys, set to its current value (a
// list holding the item is put back whole).
func undoDocFor(obj map[string]any, path []string) ([]byte, error) {
	prefix := path
	for i, p := range path {
		if strings.HasPrefix(p, "name=") {
			prefix = path[:i]
			break
		}
	}
	cur, _ := walk(obj, prefix)
	doc := cur
	for i := len(prefix) - 1; i >= 0; i-- {
		doc = map[string]any{prefix[i]: doc}
	}
	return json.Marshal(doc)
}

// setAt sets the string at path (see walk); it reports whether the path
// exists.
func setAt(obj map[string]any, path []string, value string) bool {
	parent, ok := walk(obj, path[:len(path)-1])
	if !ok {
		return false
	}
	m, ok := parent.(map[string]any)
	if !ok {
		return false
	}
	m[path[len(path)-1]] = value
	return true
}
