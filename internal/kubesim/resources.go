package kubesim

import (
	"net/http"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// kubeResource is one resource the simulated Kubernetes API serves.
type kubeResource struct {
	group, version string
	name           string // plural: "deployments"
	singular       string
	kind           string
	namespaced     bool
	shortNames     []string
	// schema drives strategic merge patches: the typed struct of
	// k8s.io/api where this package links it, else lenientSchema.
	schema strategicpatch.LookupPatchMeta
	// generation: metadata.generation is set and bumped when anything but
	// metadata and status changes, as the apiserver's strategies do.
	generation bool
	// status: the resource has a status subresource; writes to the object
	// itself keep the stored status.
	status bool
}

func (r *kubeResource) gv() schema.GroupVersion {
	return schema.GroupVersion{Group: r.group, Version: r.version}
}

func (r *kubeResource) gr() schema.GroupResource {
	return schema.GroupResource{Group: r.group, Resource: r.name}
}

// apiVersion is the objects' apiVersion: "v1", "apps/v1".
func (r *kubeResource) apiVersion() string { return r.gv().String() }

// isWorkload: a kind whose status the simulated controllers converge.
func (r *kubeResource) isWorkload() bool {
	return r.group == "apps"
}

// lenientSchema is the strategic-merge schema of resources whose Go types
// this package does not link (APIService, CustomResourceDefinition): maps merge,
// lists are replaced, $patch directives work. Their real types have no
// list merge keys on the fields that matter here.
type lenientSchema struct{}

func (lenientSchema) LookupPatchMetadataForStruct(string) (strategicpatch.LookupPatchMeta, strategicpatch.PatchMeta, error) {
	return lenientSchema{}, strategicpatch.PatchMeta{}, nil
}

func (lenientSchema) LookupPatchMetadataForSlice(string) (strategicpatch.LookupPatchMeta, strategicpatch.PatchMeta, error) {
	return lenientSchema{}, strategicpatch.PatchMeta{}, nil
}

func (lenientSchema) Name() string { return "lenient" }

func structSchema(v any) strategicpatch.LookupPatchMeta {
	s, err := strategicpatch.NewPatchMetaFromStruct(v)
	if err != nil {
		panic(err) // the k8s.io/api types are structs
	}
	return s
}

// kubeResources is everything the simulated API serves (lab/README.md
// "Kubernetes API").
var kubeResources = []*kubeResource{
	{version: "v1", name: "namespaces", singular: "namespace", kind: "Namespace", shortNames: []string{"ns"}, schema: structSchema(&corev1.Namespace{}), status: true},
	{version: "v1", name: "secrets", singular: "secret", kind: "Secret", namespaced: true, schema: structSchema(&corev1.Secret{})},
	{version: "v1", name: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true, shortNames: []string{"cm"}, schema: structSchema(&corev1.ConfigMap{})},
	{version: "v1", name: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount", namespaced: true, shortNames: []string{"sa"}, schema: structSchema(&corev1.ServiceAccount{})},
	{group: "apps", version: "v1", name: "deployments", singular: "deployment", kind: "Deployment", namespaced: true, shortNames: []string{"deploy"}, schema: structSchema(&appsv1.Deployment{}), generation: true, status: true},
	{group: "apps", version: "v1", name: "daemonsets", singular: "daemonset", kind: "DaemonSet", namespaced: true, shortNames: []string{"ds"}, schema: structSchema(&appsv1.DaemonSet{}), generation: true, status: true},
	{group: "apps", version: "v1", name: "statefulsets", singular: "statefulset", kind: "StatefulSet", namespaced: true, shortNames: []string{"sts"}, schema: structSchema(&appsv1.StatefulSet{}), generation: true, status: true},
	{group: "admissionregistration.k8s.io", version: "v1", name: "validatingwebhookconfigurations", singular: "validatingwebhookconfiguration", kind: "ValidatingWebhookConfiguration", schema: structSchema(&admissionregistrationv1.ValidatingWebhookConfiguration{}), generation: true},
	{group: "admissionregistration.k8s.io", version: "v1", name: "mutatingwebhookconfigurations", singular: "mutatingwebhookconfiguration", kind: "MutatingWebhookConfiguration", schema: structSchema(&admissionregistrationv1.MutatingWebhookConfiguration{}), generation: true},
	{group: "apiregistration.k8s.io", version: "v1", name: "apiservices", singular: "apiservice", kind: "APIService", schema: lenientSchema{}, status: true},
	{group: "apiextensions.k8s.io", version: "v1", name: "customresourcedefinitions", singular: "customresourcedefinition", kind: "CustomResourceDefinition", shortNames: []string{"crd", "crds"}, schema: lenientSchema{}, generation: true, status: true},
}

// kubeVerbs are the verbs every resource answers.
var kubeVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

// findResource returns the resource gv serves under name, or nil.
func findResource(gv schema.GroupVersion, name string) *kubeResource {
	for _, r := range kubeResources {
		if r.gv() == gv && r.name == name {
			return r
		}
	}
	return nil
}

// kubeResourceByKind returns the resource of a group and kind.
func kubeResourceByKind(group, kind string) *kubeResource {
	for _, r := range kubeResources {
		if r.group == group && r.kind == kind {
			return r
		}
	}
	return nil
}

// kubeGroups are the API groups with their (single) version, sorted as the
// apiserver lists them: by name.
func kubeGroups() []schema.GroupVersion {
	seen := map[schema.GroupVersion]bool{}
	var out []schema.GroupVersion
	for _, r := range kubeResources {
		if r.group != "" && !seen[r.gv()] {
			seen[r.gv()] = true
			out = append(out, r.gv())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// serveDiscovery answers the discovery routes (/api, /api/v1, /apis,
// /apis/<group>, /apis/<group>/<version>) in the legacy (not aggregated)
// format, which client-go's discovery falls back to. It reports false for
// a path that is not a discovery route.
func (h *kubeHandler) serveDiscovery(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "api":
		writeKubeJSON(w, http.StatusOK, &metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
			Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
				{ClientCIDR: "0.0.0.0/0", ServerAddress: h.sup.Address()},
			},
		})
	case len(parts) == 2 && parts[0] == "api" && parts[1] == "v1":
		writeKubeJSON(w, http.StatusOK, resourceList(schema.GroupVersion{Version: "v1"}))
	case len(parts) == 1 && parts[0] == "apis":
		list := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
		for _, gv := range kubeGroups() {
			list.Groups = append(list.Groups, apiGroup(gv))
		}
		writeKubeJSON(w, http.StatusOK, list)
	case len(parts) == 2 && parts[0] == "apis":
		for _, gv := range kubeGroups() {
			if gv.Group == parts[1] {
				g := apiGroup(gv)
				g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
				writeKubeJSON(w, http.StatusOK, &g)
				return true
			}
		}
		writeKubeError(w, errNoRoute())
	case len(parts) == 3 && parts[0] == "apis":
		gv := schema.GroupVersion{Group: parts[1], Version: parts[2]}
		list := resourceList(gv)
		if len(list.APIResources) == 0 {
			writeKubeError(w, errNoRoute())
			return true
		}
		writeKubeJSON(w, http.StatusOK, list)
	default:
		return false
	}
	return true
}

func apiGroup(gv schema.GroupVersion) metav1.APIGroup {
	v := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
	return metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v}
}

// resourceList is the APIResourceList of a group version: each resource,
// then its status subresource.
func resourceList(gv schema.GroupVersion) *metav1.APIResourceList {
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
	for _, r := range kubeResources {
		if r.gv() != gv {
			continue
		}
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: r.name, SingularName: r.singular, Namespaced: r.namespaced, Kind: r.kind,
			Verbs: kubeVerbs, ShortNames: r.shortNames,
		})
		if r.status {
			list.APIResources = append(list.APIResources, metav1.APIResource{
				Name: r.name + "/status", Namespaced: r.namespaced, Kind: r.kind,
				Verbs: metav1.Verbs{"get", "patch", "update"},
			})
		}
	}
	return list
}
