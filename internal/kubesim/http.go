package kubesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/kubernetes/scheme"
)

// kubeBodyLimit is the apiserver's request body limit (3 MiB).
const kubeBodyLimit = 3 << 20

// kubeHandler serves the simulated Kubernetes API on one server (its
// :6443): discovery and the resources of kubeResources, over the
// cluster's shared store.
type kubeHandler struct {
	sup   Server
	store *Store
}

// kubeTarget is what a resource URL names.
type kubeTarget struct {
	res      *kubeResource
	ns, name string
	sub      string // "status" or ""
}

func (h *kubeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, ok := Authenticate(r, h.sup.ClientCAs())
	if !ok {
		writeKubeError(w, apierrors.NewUnauthorized("Unauthorized"))
		return
	}
	if !h.sup.Ready() || h.store == nil {
		writeKubeError(w, apierrors.NewServiceUnavailable("apiserver not ready"))
		return
	}
	if r.Method == http.MethodGet && h.serveDiscovery(w, r) {
		return
	}
	t, err := parseKubePath(r.URL.Path)
	if err != nil {
		writeKubeError(w, err)
		return
	}
	verb, err := kubeVerb(r, t)
	if err != nil {
		writeKubeError(w, err)
		return
	}
	if !user.IsAdmin() {
		writeKubeError(w, forbidden(user, verb, t))
		return
	}
	h.serveResource(w, r, t, verb)
}

// parseKubePath parses /api/v1/... and /apis/<group>/<version>/...:
// [namespaces/<ns>/]<resource>[/<name>[/status]].
func parseKubePath(p string) (kubeTarget, error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	var gv schema.GroupVersion
	var rest []string
	switch {
	case len(parts) >= 3 && parts[0] == "api" && parts[1] == "v1":
		gv, rest = schema.GroupVersion{Version: "v1"}, parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		gv, rest = schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:]
	default:
		return kubeTarget{}, errNoRoute()
	}
	ns := ""
	if len(rest) >= 3 && rest[0] == "namespaces" && !(gv.Group == "" && (rest[2] == "status" || rest[2] == "finalize")) {
		ns, rest = rest[1], rest[2:]
	}
	t := kubeTarget{res: findResource(gv, rest[0]), ns: ns}
	if t.res == nil || (ns != "" && !t.res.namespaced) || len(rest) > 3 {
		return kubeTarget{}, errNoRoute()
	}
	if len(rest) > 1 {
		t.name = rest[1]
	}
	if len(rest) > 2 {
		t.sub = rest[2]
		if t.sub != "status" || !t.res.status {
			return kubeTarget{}, errNoRoute()
		}
	}
	if t.res.namespaced && ns == "" && t.name != "" {
		return kubeTarget{}, errNoRoute()
	}
	return t, nil
}

// kubeVerb is the Kubernetes verb of a request on t.
func kubeVerb(r *http.Request, t kubeTarget) (string, error) {
	q := r.URL.Query()
	named := t.name != ""
	allNS := t.res.namespaced && t.ns == ""
	switch {
	case r.Method == http.MethodGet && named:
		return "get", nil
	case r.Method == http.MethodGet && (q.Get("watch") == "true" || q.Get("watch") == "1"):
		return "watch", nil
	case r.Method == http.MethodGet:
		return "list", nil
	case r.Method == http.MethodPost && !named && !allNS:
		return "create", nil
	case r.Method == http.MethodPut && named:
		return "update", nil
	case r.Method == http.MethodPatch && named:
		return "patch", nil
	case r.Method == http.MethodDelete && named && t.sub == "":
		return "delete", nil
	case r.Method == http.MethodDelete && !named && !allNS:
		return "deletecollection", nil
	}
	return "", apierrors.NewMethodNotSupported(t.res.gr(), strings.ToLower(r.Method))
}

// forbidden is the authorizer's answer for a user who is not a cluster
// admin. The simulated API has no RBAC: only system:masters may use it.
func forbidden(u User, verb string, t kubeTarget) error {
	resource := t.res.name
	if t.sub != "" {
		resource += "/" + t.sub
	}
	scope := " at the cluster scope"
	if t.ns != "" {
		scope = fmt.Sprintf(" in the namespace %q", t.ns)
	}
	msg := fmt.Sprintf("User %q cannot %s resource %q in API group %q%s", u.Name, verb, resource, t.res.group, scope)
	return apierrors.NewForbidden(schema.GroupResource{Group: t.res.group, Resource: resource}, t.name, errors.New(msg))
}

func (h *kubeHandler) serveResource(w http.ResponseWriter, r *http.Request, t kubeTarget, verb string) {
	q := r.URL.Query()
	dryRun := false
	for _, v := range q["dryRun"] {
		if v != "All" {
			writeKubeError(w, apierrors.NewBadRequest(fmt.Sprintf("dryRun: Unsupported value: %q: supported values: \"All\"", v)))
			return
		}
		dryRun = true
	}
	var sel kubeSelectors
	if verb == "list" || verb == "watch" || verb == "deletecollection" {
		var err error
		if sel, err = parseSelectors(t.res, q.Get("labelSelector"), q.Get("fieldSelector")); err != nil {
			writeKubeError(w, err)
			return
		}
	}
	switch verb {
	case "get":
		o, err := h.store.get(t.res, t.ns, t.name)
		respond(w, http.StatusOK, o, err)
	case "list":
		items, rv := h.store.list(t.res, t.ns, sel)
		writeKubeJSON(w, http.StatusOK, listObject(t.res, items, rv))
	case "watch":
		h.serveWatch(w, r, t, sel)
	case "create":
		body, err := readKubeBody(r)
		if err == nil {
			var o kubeObj
			o, err = h.store.create(t.res, t.ns, body, dryRun)
			respond(w, http.StatusCreated, o, err)
			return
		}
		writeKubeError(w, err)
	case "update":
		body, err := readKubeBody(r)
		if err == nil {
			var o kubeObj
			o, err = h.store.update(t.res, t.ns, t.name, t.sub, body, dryRun)
			respond(w, http.StatusOK, o, err)
			return
		}
		writeKubeError(w, err)
	case "patch":
		raw, err := readRaw(r)
		if err == nil {
			var o kubeObj
			o, err = h.store.patch(t.res, t.ns, t.name, t.sub, r.Header.Get("Content-Type"), raw, dryRun)
			respond(w, http.StatusOK, o, err)
			return
		}
		writeKubeError(w, err)
	default:
		h.serveDelete(w, r, t, verb, sel, dryRun)
	}
}

// serveDelete answers delete and deletecollection with a Success Status.
func (h *kubeHandler) serveDelete(w http.ResponseWriter, r *http.Request, t kubeTarget, verb string, sel kubeSelectors, dryRun bool) {
	opts, err := readDeleteOptions(r)
	if err != nil {
		writeKubeError(w, err)
		return
	}
	do := deleteOptions{dryRun: dryRun || slices.Contains(opts.DryRun, "All")}
	if p := opts.Preconditions; p != nil {
		if p.UID != nil {
			do.uid = string(*p.UID)
		}
		if p.ResourceVersion != nil {
			do.resourceVersion = *p.ResourceVersion
		}
	}
	st := &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess}
	if verb == "deletecollection" {
		if err := h.store.deleteCollection(t.res, t.ns, sel, do.dryRun); err != nil {
			writeKubeError(w, err)
			return
		}
		writeKubeJSON(w, http.StatusOK, st)
		return
	}
	gone, err := h.store.delete(t.res, t.ns, t.name, do)
	if err != nil {
		writeKubeError(w, err)
		return
	}
	st.Details = &metav1.StatusDetails{Name: t.name, Group: t.res.group, Kind: t.res.name, UID: meta(gone).GetUID()}
	writeKubeJSON(w, http.StatusOK, st)
}

// listObject is a <Kind>List; its items carry no kind and apiVersion, as
// the apiserver's typed lists do.
func listObject(res *kubeResource, items []kubeObj, rv int64) kubeObj {
	out := make([]any, 0, len(items))
	for _, o := range items {
		delete(o, "kind")
		delete(o, "apiVersion")
		out = append(out, o)
	}
	return kubeObj{
		"kind": res.kind + "List", "apiVersion": res.apiVersion(),
		"metadata": map[string]any{"resourceVersion": fmt.Sprint(rv)},
		"items":    out,
	}
}

// readRaw reads a request body up to the apiserver's limit.
func readRaw(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, kubeBodyLimit+1))
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if len(b) > kubeBodyLimit {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", kubeBodyLimit))
	}
	return b, nil
}

// readKubeBody decodes an object body: JSON, or protobuf (what client-go's
// typed clients send) for the kinds client-go knows. CBOR and YAML bodies
// are 415 here (the apiserver takes them).
func readKubeBody(r *http.Request) (kubeObj, error) {
	mt := "application/json"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ = mime.ParseMediaType(ct)
	}
	raw, err := readRaw(r)
	if err != nil {
		return nil, err
	}
	switch mt {
	case "application/json", "*/*":
		var o kubeObj
		if err := utiljson.Unmarshal(raw, &o); err != nil || o == nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not a JSON object: %v", err))
		}
		return o, nil
	case runtime.ContentTypeProtobuf:
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(raw, nil, nil)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("decode the protobuf body: %v", err))
		}
		o, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		o["apiVersion"], o["kind"] = gvk.GroupVersion().String(), gvk.Kind
		return o, nil
	}
	return nil, unsupportedMediaType(mt)
}

// readDeleteOptions decodes a delete's optional DeleteOptions body.
func readDeleteOptions(r *http.Request) (metav1.DeleteOptions, error) {
	var opts metav1.DeleteOptions
	raw, err := readRaw(r)
	if err != nil || len(strings.TrimSpace(string(raw))) == 0 {
		return opts, err
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == runtime.ContentTypeProtobuf {
		gvk := metav1.SchemeGroupVersion.WithKind("DeleteOptions")
		if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw, &gvk, &opts); err != nil {
			return opts, apierrors.NewBadRequest(err.Error())
		}
		return opts, nil
	}
	if err := json.Unmarshal(raw, &opts); err != nil {
		return opts, apierrors.NewBadRequest(err.Error())
	}
	return opts, nil
}

func respond(w http.ResponseWriter, code int, o kubeObj, err error) {
	if err != nil {
		writeKubeError(w, err)
		return
	}
	writeKubeJSON(w, code, o)
}

func writeKubeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"encode","code":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeKubeError sends err as a metav1.Status, the form client-go's
// apierrors.IsNotFound etc. read.
func writeKubeError(w http.ResponseWriter, err error) {
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	if st.Status == "" {
		st.Status = metav1.StatusFailure
	}
	writeKubeJSON(w, int(st.Code), &st)
}

// errNoRoute is the apiserver's 404 for a path it does not serve.
func errNoRoute() error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: "the server could not find the requested resource", Details: &metav1.StatusDetails{},
	}}
}
