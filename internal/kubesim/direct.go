package kubesim

import (
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Direct access to a store, for test kits that set up and inspect a
// cluster's objects the way kubectl would through any server, also while
// no server runs. The writes are the API's own (defaults, validation,
// generation, resourceVersion, the controllers reacting); only
// authentication and the HTTP layer are skipped.

// ResolveKind finds the resource a kind names as kubectl does, ignoring
// case: the plural ("deployments"), the singular ("deployment"), a short
// name ("deploy"), the kind ("Deployment"), or any of those qualified by
// the group ("deployments.apps"). It returns the resource's API version,
// kind and whether it is namespaced.
func ResolveKind(kind string) (apiVersion, k string, namespaced bool, err error) {
	r := resolveKind(kind)
	if r == nil {
		return "", "", false, fmt.Errorf("unknown kind %q: the simulated API serves %s", kind, servedNames())
	}
	return r.apiVersion(), r.kind, r.namespaced, nil
}

func resolveKind(kind string) *kubeResource {
	want := strings.ToLower(strings.TrimSpace(kind))
	for _, r := range kubeResources {
		names := append([]string{r.name, r.singular, strings.ToLower(r.kind)}, r.shortNames...)
		for _, n := range names {
			if want == n || (r.group != "" && want == n+"."+r.group) {
				return r
			}
		}
	}
	return nil
}

// servedNames lists the resources served, for error messages.
func servedNames() string {
	names := make([]string, len(kubeResources))
	for i, r := range kubeResources {
		names[i] = r.name
	}
	return strings.Join(names, ", ")
}

// Get returns a copy of an object (kind as ResolveKind takes it;
// namespace "" for cluster-scoped kinds), or nil when it does not exist.
func (s *Store) Get(kind, namespace, name string) (map[string]any, error) {
	r := resolveKind(kind)
	if r == nil {
		_, _, _, err := ResolveKind(kind)
		return nil, err
	}
	if !r.namespaced {
		namespace = ""
	}
	o, err := s.get(r, namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return o, err
}

// Apply creates the object, or replaces the existing one of that name
// (its status is kept: status is the controllers'), and returns it as
// stored. The object names its kind and apiVersion; a namespaced object
// without a namespace goes to "default", as with kubectl. Its
// resourceVersion and uid are ignored: the last write wins, as with
// kubectl apply (an object read earlier can be applied again although a
// controller wrote its status meanwhile).
func (s *Store) Apply(obj map[string]any) (map[string]any, error) {
	u := meta(obj)
	var r *kubeResource
	for _, c := range kubeResources {
		if c.kind == u.GetKind() && c.apiVersion() == u.GetAPIVersion() {
			r = c
		}
	}
	if r == nil {
		return nil, fmt.Errorf("apply: kind %q of apiVersion %q is not served (the simulated API serves %s)", u.GetKind(), u.GetAPIVersion(), servedNames())
	}
	ns := ""
	if r.namespaced {
		if ns = u.GetNamespace(); ns == "" {
			ns = "default"
		}
	}
	prepare := func() kubeObj {
		o := deepCopy(obj)
		m := meta(o)
		m.SetResourceVersion("")
		m.SetUID("")
		if r.namespaced {
			m.SetNamespace(ns)
		}
		return o
	}
	if !s.exists(r, ns, u.GetName()) {
		out, err := s.create(r, ns, prepare(), false)
		if !apierrors.IsAlreadyExists(err) {
			return out, err
		}
	}
	return s.update(r, ns, u.GetName(), "", prepare(), false)
}
