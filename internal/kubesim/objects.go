package kubesim

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/scheme"
)

// kubeObj is an object as JSON decodes it (k8s.io/apimachinery's
// util/json: integers are int64), the content of an unstructured.Unstructured.
type kubeObj = map[string]any

// Well-known names and annotations.
const (
	rootCAConfigMap   = "kube-root-ca.crt"
	saNameAnnotation  = "kubernetes.io/service-account.name"
	saUIDAnnotation   = "kubernetes.io/service-account.uid"
	saTokenSecretType = "kubernetes.io/service-account-token"
	// NeverReadyAnnotation: "true" on a Deployment, DaemonSet or
	// StatefulSet of the simulated API keeps its rollout from completing:
	// the controllers report the new pods as never ready (lab/README.md
	// "Kubernetes API").
	NeverReadyAnnotation = "lab.caretaker.dev/never-ready"
)

func meta(o kubeObj) *unstructured.Unstructured { return &unstructured.Unstructured{Object: o} }

func deepCopy(o kubeObj) kubeObj {
	if o == nil {
		return nil
	}
	return runtime.DeepCopyJSON(o)
}

func nowRFC3339() string { return time.Now().UTC().Format(time.RFC3339) }

// checkKind refuses a body of another kind or apiVersion and fills in
// missing ones, as the apiserver's decoder does for the request path.
func checkKind(res *kubeResource, o kubeObj) error {
	u := meta(o)
	if k := u.GetKind(); k != "" && k != res.kind {
		return apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized (kind %q, want %q for %s)", k, res.kind, res.gr()))
	}
	if v := u.GetAPIVersion(); v != "" && v != res.apiVersion() {
		return apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)", v, res.apiVersion()))
	}
	u.SetKind(res.kind)
	u.SetAPIVersion(res.apiVersion())
	return nil
}

// normalize round-trips an object of a kind client-go knows through its Go
// type, as the apiserver stores what it decoded: unknown fields dropped,
// every object of a kind in the same shape whether it came as JSON or
// protobuf. Other kinds (APIService, CRD) are kept as sent.
func normalize(res *kubeResource, o kubeObj) (kubeObj, error) {
	typed, err := scheme.Scheme.New(res.gv().WithKind(res.kind))
	if err != nil {
		return o, nil //nolint:nilerr // not a client-go kind: stored as sent
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o, typed); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("decode the %s: %v", res.kind, err))
	}
	out, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	out["apiVersion"], out["kind"] = res.apiVersion(), res.kind
	return out, nil
}

// stripServerFields drops what clients cannot set.
func stripServerFields(o kubeObj) {
	md, _ := o["metadata"].(map[string]any)
	for _, f := range []string{"managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		delete(md, f)
	}
}

// defaultObject applies the apiserver's defaults the simulators' consumers read.
func defaultObject(res *kubeResource, o kubeObj) {
	setDefault := func(v any, path ...string) {
		if _, found, _ := unstructured.NestedFieldNoCopy(o, path...); !found {
			_ = unstructured.SetNestedField(o, v, path...)
		}
	}
	switch res.kind {
	case "Namespace":
		u := meta(o)
		l := u.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l["kubernetes.io/metadata.name"] = u.GetName()
		u.SetLabels(l)
		setDefault([]any{"kubernetes"}, "spec", "finalizers")
		setDefault("Active", "status", "phase")
	case "Secret":
		setDefault("Opaque", "type")
		mergeStringData(o)
	case "Deployment":
		setDefault(int64(1), "spec", "replicas")
		setDefault(int64(600), "spec", "progressDeadlineSeconds")
		setDefault(int64(10), "spec", "revisionHistoryLimit")
		setDefault(map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": "25%", "maxUnavailable": "25%"}}, "spec", "strategy")
	case "DaemonSet":
		setDefault(int64(10), "spec", "revisionHistoryLimit")
		setDefault(map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": int64(0), "maxUnavailable": int64(1)}}, "spec", "updateStrategy")
	case "StatefulSet":
		setDefault(int64(1), "spec", "replicas")
		setDefault("OrderedReady", "spec", "podManagementPolicy")
		setDefault(int64(10), "spec", "revisionHistoryLimit")
		setDefault(map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"partition": int64(0)}}, "spec", "updateStrategy")
	}
}

// mergeStringData moves a Secret's stringData into data (base64), as the
// apiserver does on every write.
func mergeStringData(o kubeObj) {
	sd, ok := o["stringData"].(map[string]any)
	delete(o, "stringData")
	if !ok {
		return
	}
	data, _ := o["data"].(map[string]any)
	if data == nil {
		data = map[string]any{}
	}
	for k, v := range sd {
		s, _ := v.(string)
		data[k] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	o["data"] = data
}

// validateObject is the part of the apiserver's validation a client of
// a simulator can trip over: names, workload selectors, token Secrets.
func validateObject(res *kubeResource, o, old kubeObj) error {
	u := meta(o)
	var errs field.ErrorList
	name := field.NewPath("metadata", "name")
	switch {
	case u.GetName() == "":
		errs = append(errs, field.Required(name, "name or generateName is required"))
	case res.kind == "Namespace":
		for _, m := range validation.IsDNS1123Label(u.GetName()) {
			errs = append(errs, field.Invalid(name, u.GetName(), m))
		}
	default:
		for _, m := range validation.IsDNS1123Subdomain(u.GetName()) {
			errs = append(errs, field.Invalid(name, u.GetName(), m))
		}
	}
	if res.isWorkload() {
		errs = append(errs, validateSelector(o, old)...)
	}
	if res.kind == "Secret" {
		typ, _, _ := unstructured.NestedString(o, "type")
		if typ == saTokenSecretType && u.GetAnnotations()[saNameAnnotation] == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "annotations").Key(saNameAnnotation), ""))
		}
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: res.group, Kind: res.kind}, u.GetName(), errs)
	}
	return nil
}

// validateSelector: a workload needs a selector that matches its pod
// template's labels, and the selector is immutable.
func validateSelector(o, old kubeObj) field.ErrorList {
	path := field.NewPath("spec", "selector")
	raw, found, _ := unstructured.NestedMap(o, "spec", "selector")
	if !found || len(raw) == 0 {
		return field.ErrorList{field.Required(path, "")}
	}
	if old != nil {
		was, _, _ := unstructured.NestedMap(old, "spec", "selector")
		if !reflect.DeepEqual(was, raw) {
			return field.ErrorList{field.Invalid(path, raw, "field is immutable")}
		}
	}
	var ls metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls); err != nil {
		return field.ErrorList{field.Invalid(path, raw, err.Error())}
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		return field.ErrorList{field.Invalid(path, raw, err.Error())}
	}
	tl, _, _ := unstructured.NestedStringMap(o, "spec", "template", "metadata", "labels")
	if sel.Empty() || !sel.Matches(labels.Set(tl)) {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "template", "metadata", "labels"), tl, "`selector` does not match template `labels`")}
	}
	return nil
}

// specChanged: anything but metadata and status differs (what bumps
// metadata.generation).
func specChanged(a, b kubeObj) bool {
	skip := map[string]bool{"metadata": true, "status": true, "apiVersion": true, "kind": true}
	for k, v := range a {
		if !skip[k] && !reflect.DeepEqual(v, b[k]) {
			return true
		}
	}
	for k := range b {
		if _, ok := a[k]; !skip[k] && !ok {
			return true
		}
	}
	return false
}

// kubeFieldSet is what a field selector can match on an object: the
// apiserver's metadata.name and metadata.namespace for every resource,
// and a Secret's type.
func kubeFieldSet(res *kubeResource, o kubeObj) fields.Set {
	u := meta(o)
	set := fields.Set{"metadata.name": u.GetName()}
	if res.namespaced {
		set["metadata.namespace"] = u.GetNamespace()
	}
	if res.kind == "Secret" {
		set["type"], _, _ = unstructured.NestedString(o, "type")
	}
	if res.kind == "Namespace" {
		set["status.phase"], _, _ = unstructured.NestedString(o, "status", "phase")
	}
	return set
}

// kubeSelectors are a request's label and field selectors.
type kubeSelectors struct {
	labels labels.Selector
	fields fields.Selector
}

// parseSelectors parses labelSelector and fieldSelector; a field the
// resource does not support is a BadRequest, as from the apiserver.
func parseSelectors(res *kubeResource, labelSel, fieldSel string) (kubeSelectors, error) {
	ls, err := labels.Parse(labelSel)
	if err != nil {
		return kubeSelectors{}, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
	}
	fs, err := fields.ParseSelector(fieldSel)
	if err != nil {
		return kubeSelectors{}, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
	}
	known := kubeFieldSet(res, kubeObj{"metadata": map[string]any{}})
	for _, r := range fs.Requirements() {
		if _, ok := known[r.Field]; !ok {
			return kubeSelectors{}, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", r.Field))
		}
	}
	return kubeSelectors{labels: ls, fields: fs}, nil
}

func (s kubeSelectors) matches(res *kubeResource, o kubeObj) bool {
	if s.labels != nil && !s.labels.Matches(labels.Set(meta(o).GetLabels())) {
		return false
	}
	return s.fields == nil || s.fields.Matches(kubeFieldSet(res, o))
}

// conflictErr is the apiserver's optimistic-concurrency answer.
func conflictErr(res *kubeResource, name string) error {
	return apierrors.NewConflict(res.gr(), name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
}

// preconditionErr: a delete or update precondition (uid, resourceVersion)
// that does not hold.
func preconditionErr(res *kubeResource, name, what, want, got string) error {
	return apierrors.NewConflict(res.gr(), name, fmt.Errorf("Precondition failed: %s in precondition: %v, %s in object meta: %v", what, want, what, got)) //nolint:staticcheck // the apiserver's wording
}

// secretData decodes one key of a Secret's data.
func secretData(o kubeObj, key string) []byte {
	s, _, _ := unstructured.NestedString(o, "data", key)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// isTokenSecret: a legacy service-account token Secret.
func isTokenSecret(o kubeObj) bool {
	t, _, _ := unstructured.NestedString(o, "type")
	return t == saTokenSecretType
}

// neverReady reports the simulators' fault annotation.
func neverReady(o kubeObj) bool {
	return strings.EqualFold(meta(o).GetAnnotations()[NeverReadyAnnotation], "true")
}
