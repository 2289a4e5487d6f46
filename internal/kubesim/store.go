package kubesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// The simulated Kubernetes API's objects (issue 14): one store per
// cluster, the content of the cluster's datastore, served by every
// server on :6443 while its K3s runs (Handler, http.go) and kept across
// K3s restarts. It lives in memory, not in etcd.

// Watch event types.
const (
	evAdded    = "ADDED"
	evModified = "MODIFIED"
	evDeleted  = "DELETED"
)

// kubeEventLog is how many past writes a watch can resume from.
const kubeEventLog = 1024

// kubeKey names one object.
type kubeKey struct {
	res      *kubeResource
	ns, name string
}

// kubeEvent is one committed write.
type kubeEvent struct {
	typ string
	key kubeKey
	rv  int64
	obj kubeObj // as written; for DELETED, the last state with the deletion's resourceVersion
	old kubeObj // before the write (nil for ADDED)
}

// Store holds a cluster's objects and runs its simulated controller
// manager (kcm.go); tell it when servers become ready and stop
// (ServerReady, ServerStopped). Stored maps are never changed in place:
// a write stores a new map, so that events and readers can share them.
type Store struct {
	host     Host
	mu       sync.Mutex
	rv       int64 // the datastore revision: bumped by every write
	objs     map[kubeKey]kubeObj
	log      []kubeEvent // the last kubeEventLog writes
	watchers map[*kubeWatcher]struct{}
	kcm      kcmState
}

// NewStore creates the store as a new cluster has it: the default
// namespaces with their kube-root-ca.crt ConfigMap (serverCA, the
// cluster's server CA bundle) and default ServiceAccount, and the local
// APIServices of the groups served. host may be nil (no agents, never
// done).
func NewStore(host Host, serverCA []byte) *Store {
	s := &Store{host: host, objs: map[kubeKey]kubeObj{}, watchers: map[*kubeWatcher]struct{}{}}
	s.kcm.rootCA = serverCA
	s.kcm.rollouts = map[types.UID]*rollout{}
	nsRes := nsResource()
	for _, ns := range []string{"default", "kube-node-lease", "kube-public", "kube-system"} {
		s.seed(nsRes, kubeObj{"metadata": map[string]any{"name": ns}})
		s.seed(cmResource(), rootCAConfigMapObj(ns, serverCA))
		s.seed(saResource(), kubeObj{"metadata": map[string]any{"name": "default", "namespace": ns}})
	}
	apiservices := kubeResourceByKind("apiregistration.k8s.io", "APIService")
	gvs := append([]schema.GroupVersion{{Version: "v1"}}, kubeGroups()...)
	for _, gv := range gvs {
		s.seed(apiservices, localAPIService(gv.Group, gv.Version))
	}
	return s
}

// seed stores an object at the cluster's start, before anyone can read the store.
func (s *Store) seed(res *kubeResource, o kubeObj) {
	if err := checkKind(res, o); err != nil {
		panic(err)
	}
	o, err := normalize(res, o)
	if err != nil {
		panic(err)
	}
	s.prepareCreate(res, o)
	defaultObject(res, o)
	s.commitLocked(evAdded, kubeKey{res, meta(o).GetNamespace(), meta(o).GetName()}, o, nil)
}

// localAPIService is the APIService kube-apiserver registers for a group
// it serves itself (no service, always available).
func localAPIService(group, version string) kubeObj {
	name := version + "." + group
	prio := int64(17000)
	if group == "" {
		prio = 18000
	}
	return kubeObj{
		"metadata": map[string]any{"name": name, "labels": map[string]any{"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
		"spec":     map[string]any{"group": group, "version": version, "groupPriorityMinimum": prio, "versionPriority": int64(15)},
		"status": map[string]any{"conditions": []any{map[string]any{
			"type": "Available", "status": "True", "reason": "Local", "message": "Local APIServices are always available",
			"lastTransitionTime": nowRFC3339(),
		}}},
	}
}

// prepareCreate sets what the apiserver sets on a new object.
func (s *Store) prepareCreate(res *kubeResource, o kubeObj) {
	stripServerFields(o)
	u := meta(o)
	if u.GetName() == "" && u.GetGenerateName() != "" {
		u.SetName(u.GetGenerateName() + utilrand.String(5))
	}
	u.SetUID(uuid.NewUUID())
	u.SetCreationTimestamp(metav1.Now().Rfc3339Copy())
	if res.generation {
		u.SetGeneration(1)
	}
	if res.status && res.kind != "APIService" {
		delete(o, "status")
	}
}

// commitLocked stores (or deletes) o under k with the next revision and
// tells the watchers.
func (s *Store) commitLocked(typ string, k kubeKey, o, old kubeObj) kubeEvent {
	s.rv++
	meta(o).SetResourceVersion(strconv.FormatInt(s.rv, 10))
	if typ == evDeleted {
		delete(s.objs, k)
	} else {
		s.objs[k] = o
	}
	ev := kubeEvent{typ: typ, key: k, rv: s.rv, obj: o, old: old}
	s.log = append(s.log, ev)
	if len(s.log) > kubeEventLog {
		s.log = append([]kubeEvent(nil), s.log[len(s.log)-kubeEventLog:]...)
	}
	s.notifyLocked(ev)
	return ev
}

// get returns a copy of an object.
func (s *Store) get(res *kubeResource, ns, name string) (kubeObj, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objs[kubeKey{res, ns, name}]
	if !ok {
		return nil, apierrors.NewNotFound(res.gr(), name)
	}
	return deepCopy(o), nil
}

// list returns copies of the objects of res in ns ("": all) that match,
// ordered as etcd keys are (namespace, name), and the revision.
func (s *Store) list(res *kubeResource, ns string, sel kubeSelectors) ([]kubeObj, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.keysLocked(res, ns)
	out := make([]kubeObj, 0, len(keys))
	for _, k := range keys {
		if o := s.objs[k]; sel.matches(res, o) {
			out = append(out, deepCopy(o))
		}
	}
	return out, s.rv
}

// keysLocked lists the keys of res in ns ("": every namespace), sorted.
func (s *Store) keysLocked(res *kubeResource, ns string) []kubeKey {
	var keys []kubeKey
	for k := range s.objs {
		if k.res == res && (ns == "" || k.ns == ns) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].ns != keys[j].ns {
			return keys[i].ns < keys[j].ns
		}
		return keys[i].name < keys[j].name
	})
	return keys
}

// create stores a new object (POST).
func (s *Store) create(res *kubeResource, ns string, o kubeObj, dryRun bool) (kubeObj, error) {
	if err := checkKind(res, o); err != nil {
		return nil, err
	}
	o, err := normalize(res, o)
	if err != nil {
		return nil, err
	}
	u := meta(o)
	switch {
	case !res.namespaced:
		u.SetNamespace("")
	case u.GetNamespace() == "":
		u.SetNamespace(ns)
	case u.GetNamespace() != ns:
		return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	// The storage layer's check, after validation: a 500, as from etcd3's
	// store (a resourceVersion that is not a number passes there).
	rvSet := false
	if n, err := strconv.ParseUint(u.GetResourceVersion(), 10, 64); err == nil && n != 0 {
		rvSet = true
	}
	u.SetResourceVersion("")
	s.prepareCreate(res, o)
	defaultObject(res, o)
	if err := validateObject(res, o, nil); err != nil {
		return nil, err
	}
	if rvSet {
		return nil, apierrors.NewInternalError(errors.New("resourceVersion should not be set on objects to be created"))
	}
	s.mu.Lock()
	k := kubeKey{res, u.GetNamespace(), u.GetName()}
	if _, exists := s.objs[k]; exists {
		s.mu.Unlock()
		return nil, apierrors.NewAlreadyExists(res.gr(), k.name)
	}
	if res.namespaced {
		if _, ok := s.objs[kubeKey{nsResource(), "", k.ns}]; !ok {
			s.mu.Unlock()
			return nil, apierrors.NewNotFound(nsResource().gr(), k.ns)
		}
	}
	if dryRun {
		s.mu.Unlock()
		return o, nil
	}
	ev := s.commitLocked(evAdded, k, o, nil)
	out := deepCopy(o)
	s.mu.Unlock()
	s.react(ev)
	return out, nil
}

// update replaces an object (PUT), or only its status (sub "status").
func (s *Store) update(res *kubeResource, ns, name, sub string, body kubeObj, dryRun bool) (kubeObj, error) {
	s.mu.Lock()
	out, ev, err := s.updateLocked(res, ns, name, sub, body, dryRun)
	s.mu.Unlock()
	if ev != nil {
		s.react(*ev)
	}
	return out, err
}

func (s *Store) updateLocked(res *kubeResource, ns, name, sub string, body kubeObj, dryRun bool) (kubeObj, *kubeEvent, error) {
	k := kubeKey{res, ns, name}
	cur, ok := s.objs[k]
	if !ok {
		return nil, nil, apierrors.NewNotFound(res.gr(), name)
	}
	if err := checkKind(res, body); err != nil {
		return nil, nil, err
	}
	body, err := normalize(res, body)
	if err != nil {
		return nil, nil, err
	}
	in, c := meta(body), meta(cur)
	if in.GetName() != name {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", in.GetName(), name))
	}
	if res.namespaced && in.GetNamespace() != "" && in.GetNamespace() != ns {
		return nil, nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	if rv := in.GetResourceVersion(); rv != "" && rv != c.GetResourceVersion() {
		return nil, nil, conflictErr(res, name)
	}
	if uid := in.GetUID(); uid != "" && uid != c.GetUID() {
		return nil, nil, preconditionErr(res, name, "UID", string(uid), string(c.GetUID()))
	}
	next := mergeForUpdate(res, cur, body, sub)
	defaultObject(res, next)
	if err := validateObject(res, next, cur); err != nil {
		return nil, nil, err
	}
	if res.generation && specChanged(cur, next) {
		meta(next).SetGeneration(c.GetGeneration() + 1)
	}
	if reflect.DeepEqual(cur, next) || dryRun {
		// The apiserver writes nothing for an update that changes nothing.
		return deepCopy(next), nil, nil
	}
	ev := s.commitLocked(evModified, k, next, cur)
	return deepCopy(next), &ev, nil
}

// mergeForUpdate builds the object an update stores: the body with the
// server-managed metadata of cur, and cur's status where the resource has
// a status subresource; or, for the status subresource, cur with the
// body's status.
func mergeForUpdate(res *kubeResource, cur, body kubeObj, sub string) kubeObj {
	if sub == "status" {
		next := deepCopy(cur)
		if st, ok := body["status"]; ok {
			next["status"] = runtime.DeepCopyJSONValue(st)
		} else {
			delete(next, "status")
		}
		return next
	}
	next := deepCopy(body)
	stripServerFields(next)
	n, c := meta(next), meta(cur)
	n.SetNamespace(c.GetNamespace())
	n.SetUID(c.GetUID())
	n.SetCreationTimestamp(c.GetCreationTimestamp())
	n.SetResourceVersion(c.GetResourceVersion())
	if res.generation {
		n.SetGeneration(c.GetGeneration())
	} else {
		unstructured.RemoveNestedField(next, "metadata", "generation")
	}
	if res.status {
		if st, ok := cur["status"]; ok {
			next["status"] = runtime.DeepCopyJSONValue(st)
		} else {
			delete(next, "status")
		}
	}
	return next
}

// patch applies a patch to an object (PATCH) and stores the result as an
// update would, all under the lock (the apiserver retries a patch that
// raced another write; here none can race). A resourceVersion in the
// patch is a precondition.
func (s *Store) patch(res *kubeResource, ns, name, sub, contentType string, patch []byte, dryRun bool) (kubeObj, error) {
	s.mu.Lock()
	cur, ok := s.objs[kubeKey{res, ns, name}]
	if !ok {
		s.mu.Unlock()
		return nil, apierrors.NewNotFound(res.gr(), name)
	}
	curJSON, err := json.Marshal(cur)
	if err != nil {
		s.mu.Unlock()
		return nil, apierrors.NewInternalError(err)
	}
	patched, err := applyKubePatch(res, contentType, curJSON, patch)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	var body kubeObj
	if err := utiljson.Unmarshal(patched, &body); err != nil || body == nil {
		s.mu.Unlock()
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch did not give an object: %v", err))
	}
	out, ev, err := s.updateLocked(res, ns, name, sub, body, dryRun)
	s.mu.Unlock()
	if ev != nil {
		s.react(*ev)
	}
	return out, err
}

// deleteOptions are the preconditions of a delete.
type deleteOptions struct {
	uid, resourceVersion string
	dryRun               bool
}

// delete removes an object. Deleting a namespace removes everything in it
// at once (no Terminating phase); default, kube-system and kube-public
// cannot be deleted.
// It returns the object as it was.
func (s *Store) delete(res *kubeResource, ns, name string, o deleteOptions) (kubeObj, error) {
	s.mu.Lock()
	var gone kubeObj
	if cur, ok := s.objs[kubeKey{res, ns, name}]; ok {
		gone = deepCopy(cur)
	}
	evs, err := s.deleteLocked(res, ns, name, o)
	s.mu.Unlock()
	for _, ev := range evs {
		s.react(ev)
	}
	return gone, err
}

func (s *Store) deleteLocked(res *kubeResource, ns, name string, o deleteOptions) ([]kubeEvent, error) {
	k := kubeKey{res, ns, name}
	cur, ok := s.objs[k]
	if !ok {
		return nil, apierrors.NewNotFound(res.gr(), name)
	}
	c := meta(cur)
	if o.uid != "" && o.uid != string(c.GetUID()) {
		return nil, preconditionErr(res, name, "UID", o.uid, string(c.GetUID()))
	}
	if o.resourceVersion != "" && o.resourceVersion != c.GetResourceVersion() {
		return nil, preconditionErr(res, name, "ResourceVersion", o.resourceVersion, c.GetResourceVersion())
	}
	if res == nsResource() && (name == "default" || name == "kube-system" || name == "kube-public") {
		return nil, apierrors.NewForbidden(res.gr(), name, fmt.Errorf("this namespace may not be deleted"))
	}
	if o.dryRun {
		return nil, nil
	}
	var evs []kubeEvent
	if res == nsResource() {
		var inside []kubeKey
		for ik := range s.objs {
			if ik.res.namespaced && ik.ns == name {
				inside = append(inside, ik)
			}
		}
		sort.Slice(inside, func(i, j int) bool {
			return inside[i].res.name+"/"+inside[i].name < inside[j].res.name+"/"+inside[j].name
		})
		for _, ik := range inside {
			evs = append(evs, s.commitLocked(evDeleted, ik, deepCopy(s.objs[ik]), s.objs[ik]))
		}
	}
	evs = append(evs, s.commitLocked(evDeleted, k, deepCopy(cur), cur))
	return evs, nil
}

// deleteCollection deletes every object of res in ns that matches.
func (s *Store) deleteCollection(res *kubeResource, ns string, sel kubeSelectors, dryRun bool) error {
	s.mu.Lock()
	var evs []kubeEvent
	var err error
	for _, k := range s.keysLocked(res, ns) {
		if o, ok := s.objs[k]; !ok || !sel.matches(res, o) {
			continue
		}
		var e []kubeEvent
		e, err = s.deleteLocked(res, k.ns, k.name, deleteOptions{dryRun: dryRun})
		evs = append(evs, e...)
		if err != nil && !apierrors.IsForbidden(err) {
			break
		}
		err = nil
	}
	s.mu.Unlock()
	for _, ev := range evs {
		s.react(ev)
	}
	return err
}

func nsResource() *kubeResource {
	return findResource(schema.GroupVersion{Version: "v1"}, "namespaces")
}
func cmResource() *kubeResource {
	return findResource(schema.GroupVersion{Version: "v1"}, "configmaps")
}
func saResource() *kubeResource {
	return findResource(schema.GroupVersion{Version: "v1"}, "serviceaccounts")
}
func secretResource() *kubeResource {
	return findResource(schema.GroupVersion{Version: "v1"}, "secrets")
}
