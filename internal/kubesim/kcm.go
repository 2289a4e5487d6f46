package kubesim

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// The simulated kube-controller-manager: the few controllers whose work
// caretaker reads after a CA rotation (root CA publisher, service-account
// tokens, service accounts), the workload controllers' status
// (kubeapi_workloads.go) and the CRD name acceptance of
// apiextensions-apiserver. Each reacts to a write kubeControllerDelay
// later, as real controllers react to watch events.

// kubeControllerDelay is how long the simulated controllers take to react
// to a write.
const kubeControllerDelay = 50 * time.Millisecond

const rootCADescription = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."

// kcmState is the controller manager's memory. Guarded by the store's lock.
type kcmState struct {
	// rootCA is the leader's --root-ca-file (K3s: SD/tls/server-ca.crt)
	// as its K3s read it at start.
	rootCA []byte
	// leader is the server whose controller manager holds the lease.
	leader Server
	// ready are the servers whose start completed and that have not
	// stopped, in the order they became ready.
	ready    []readyServer
	rollouts map[types.UID]*rollout
}

// readyServer is a ready server and when it became ready.
type readyServer struct {
	sv Server
	at time.Time
}

// react schedules the controllers that watch what ev changed.
func (s *Store) react(ev kubeEvent) {
	if s == nil {
		return
	}
	k, res := ev.key, ev.key.res
	if res.isWorkload() && ev.typ == evDeleted {
		s.mu.Lock()
		delete(s.kcm.rollouts, meta(ev.obj).GetUID())
		s.mu.Unlock()
	}
	var f func()
	switch {
	case res == nsResource() && ev.typ == evAdded:
		f = func() {
			s.publishRootCA(k.name)
			s.ensureDefaultSA(k.name)
		}
	case res == cmResource() && k.name == rootCAConfigMap && ev.typ != evAdded:
		f = func() { s.publishRootCA(k.ns) }
	case res == saResource() && ev.typ == evDeleted:
		uid := string(meta(ev.obj).GetUID())
		f = func() {
			s.deleteTokensOf(k.ns, k.name, uid)
			if k.name == "default" {
				s.ensureDefaultSA(k.ns)
			}
		}
	case res == secretResource() && ev.typ != evDeleted && isTokenSecret(ev.obj):
		f = func() { s.syncToken(k.ns, k.name) }
	case res.isWorkload() && ev.typ != evDeleted:
		f = func() { s.syncWorkload(res, k.ns, k.name) }
	case res.kind == "CustomResourceDefinition" && ev.typ != evDeleted:
		f = func() { s.syncCRD(k.name) }
	}
	if f != nil {
		s.after(kubeControllerDelay, f)
	}
}

// after runs f after d unless the host is done by then.
func (s *Store) after(d time.Duration, f func()) {
	time.AfterFunc(d, func() {
		if s.host != nil {
			select {
			case <-s.host.Done():
				return
			default:
			}
		}
		f()
	})
}

// mutate is a controller's update: f changes a copy of the object under
// the store's lock and reports whether to write it.
func (s *Store) mutate(res *kubeResource, ns, name string, f func(o kubeObj) bool) {
	s.mu.Lock()
	k := kubeKey{res, ns, name}
	cur, ok := s.objs[k]
	if !ok {
		s.mu.Unlock()
		return
	}
	next := deepCopy(cur)
	if !f(next) || reflect.DeepEqual(cur, next) {
		s.mu.Unlock()
		return
	}
	ev := s.commitLocked(evModified, k, next, cur)
	s.mu.Unlock()
	s.react(ev)
}

func (s *Store) exists(res *kubeResource, ns, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.objs[kubeKey{res, ns, name}]
	return ok
}

// ServerReady tells the store that a server's K3s completed its start.
// Its controller manager takes the lease when no running server holds it,
// and then syncs every namespace's kube-root-ca.crt and every token Secret
// with the root CA its K3s read at start (the real controllers' full
// resync at start). Safe on a nil Store.
func (s *Store) ServerReady(sv Server) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.kcm.ready = append(s.kcm.ready, readyServer{sv: sv, at: time.Now()})
	s.mu.Unlock()
	s.takeLease(sv)
}

// takeLease: sv's controller manager takes the lease unless another
// running server holds it.
func (s *Store) takeLease(sv Server) {
	s.mu.Lock()
	if l := s.kcm.leader; l != nil && l != sv && !serverStopped(l) {
		s.mu.Unlock()
		return
	}
	s.kcm.leader = sv
	s.kcm.rootCA = sv.RootCA()
	s.mu.Unlock()
	s.after(kubeControllerDelay, s.resyncAll)
}

// ServerStopped tells the store that a server's K3s stops (call it after
// closing sv.Stopped()). If it held the lease, the running server that
// has been ready longest takes it over. Safe on a nil Store.
func (s *Store) ServerStopped(sv Server) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.kcm.ready = slices.DeleteFunc(s.kcm.ready, func(r readyServer) bool { return r.sv == sv })
	held := s.kcm.leader == sv
	if held {
		s.kcm.leader = nil
	}
	s.mu.Unlock()
	if !held {
		return
	}
	// Off the stopping goroutine: the hand-over takes a lease period on
	// K3s.
	s.after(kubeControllerDelay, func() {
		s.mu.Lock()
		var next *readyServer
		for i, r := range s.kcm.ready {
			if r.sv == sv || !r.sv.Ready() || serverStopped(r.sv) {
				continue
			}
			if next == nil || r.at.Before(next.at) {
				next = &s.kcm.ready[i]
			}
		}
		var nsv Server
		if next != nil {
			nsv = next.sv
		}
		s.mu.Unlock()
		if nsv != nil {
			s.takeLease(nsv)
		}
	})
}

// resyncAll is a controller manager's start: every namespace's root CA
// ConfigMap and every token Secret.
func (s *Store) resyncAll() {
	s.mu.Lock()
	var nss []string
	for _, k := range s.keysLocked(nsResource(), "") {
		nss = append(nss, k.name)
	}
	var tokens []kubeKey
	for _, k := range s.keysLocked(secretResource(), "") {
		if isTokenSecret(s.objs[k]) {
			tokens = append(tokens, k)
		}
	}
	s.mu.Unlock()
	for _, ns := range nss {
		s.publishRootCA(ns)
	}
	for _, k := range tokens {
		s.syncToken(k.ns, k.name)
	}
}

// rootCAConfigMap is the ConfigMap the root CA publisher keeps in ns.
func rootCAConfigMapObj(ns string, root []byte) kubeObj {
	return kubeObj{
		"metadata": map[string]any{
			"name": rootCAConfigMap, "namespace": ns,
			"annotations": map[string]any{"kubernetes.io/description": rootCADescription},
		},
		"data": map[string]any{"ca.crt": string(root)},
	}
}

// publishRootCA is the root-ca-cert-publisher: kube-root-ca.crt in ns
// holds exactly the root CA (recreated if deleted, reverted if edited).
func (s *Store) publishRootCA(ns string) {
	if !s.exists(nsResource(), "", ns) {
		return
	}
	s.mu.Lock()
	root := s.kcm.rootCA
	s.mu.Unlock()
	if len(root) == 0 {
		return
	}
	_, err := s.create(cmResource(), ns, rootCAConfigMapObj(ns, root), false)
	if !apierrors.IsAlreadyExists(err) {
		return
	}
	s.mutate(cmResource(), ns, rootCAConfigMap, func(o kubeObj) bool {
		o["data"] = map[string]any{"ca.crt": string(s.kcm.rootCA)}
		u := meta(o)
		ann := u.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann["kubernetes.io/description"] = rootCADescription
		u.SetAnnotations(ann)
		return true
	})
}

// ensureDefaultSA is the service account controller: "default" in every
// namespace.
func (s *Store) ensureDefaultSA(ns string) {
	if !s.exists(nsResource(), "", ns) {
		return
	}
	_, _ = s.create(saResource(), ns, kubeObj{"metadata": map[string]any{"name": "default"}}, false)
}

// syncToken is the tokens controller on one legacy token Secret: deleted
// when its service account does not exist (or has another uid); else
// ca.crt set to the root CA whenever it differs, namespace and token
// filled in when missing, the service account's name and uid annotated.
func (s *Store) syncToken(ns, name string) {
	s.mu.Lock()
	sec, ok := s.objs[kubeKey{secretResource(), ns, name}]
	if !ok || !isTokenSecret(sec) {
		s.mu.Unlock()
		return
	}
	ann := meta(sec).GetAnnotations()
	sa, saOK := s.objs[kubeKey{saResource(), ns, ann[saNameAnnotation]}]
	if !saOK || (ann[saUIDAnnotation] != "" && ann[saUIDAnnotation] != string(meta(sa).GetUID())) {
		evs, _ := s.deleteLocked(secretResource(), ns, name, deleteOptions{uid: string(meta(sec).GetUID())})
		s.mu.Unlock()
		for _, ev := range evs {
			s.react(ev)
		}
		return
	}
	saUID := string(meta(sa).GetUID())
	s.mu.Unlock()
	s.mutate(secretResource(), ns, name, func(o kubeObj) bool {
		root := s.kcm.rootCA
		set := func(key string, v []byte) {
			_ = unstructured.SetNestedField(o, base64.StdEncoding.EncodeToString(v), "data", key)
		}
		if len(root) > 0 && !bytes.Equal(secretData(o, "ca.crt"), root) {
			set("ca.crt", root)
		}
		if len(secretData(o, "namespace")) == 0 {
			set("namespace", []byte(ns))
		}
		if len(secretData(o, "token")) == 0 {
			set("token", []byte(fakeToken(ns, ann[saNameAnnotation], name)))
		}
		u := meta(o)
		a := u.GetAnnotations()
		a[saUIDAnnotation] = saUID
		u.SetAnnotations(a)
		return true
	})
}

// deleteTokensOf: the tokens controller deletes the token Secrets of a
// deleted service account.
func (s *Store) deleteTokensOf(ns, saName, saUID string) {
	s.mu.Lock()
	var evs []kubeEvent
	for _, k := range s.keysLocked(secretResource(), ns) {
		o := s.objs[k]
		ann := meta(o).GetAnnotations()
		if isTokenSecret(o) && ann[saNameAnnotation] == saName && (ann[saUIDAnnotation] == "" || ann[saUIDAnnotation] == saUID) {
			e, _ := s.deleteLocked(secretResource(), k.ns, k.name, deleteOptions{})
			evs = append(evs, e...)
		}
	}
	s.mu.Unlock()
	for _, ev := range evs {
		s.react(ev)
	}
}

// fakeToken is a JWT-shaped opaque token: the claims of a legacy
// service-account token, a random signature nobody verifies.
func fakeToken(ns, sa, secret string) string {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "lab"})
	claims, _ := json.Marshal(map[string]string{
		"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:" + ns + ":" + sa,
		"kubernetes.io/serviceaccount/namespace": ns, "kubernetes.io/serviceaccount/secret.name": secret,
		"kubernetes.io/serviceaccount/service-account.name": sa,
	})
	sig := make([]byte, 64)
	_, _ = rand.Read(sig)
	return enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig)
}

// syncCRD is apiextensions-apiserver's naming controller: the names are
// accepted and the CRD established. (Its custom resources are not served.)
func (s *Store) syncCRD(name string) {
	res := kubeResourceByKind("apiextensions.k8s.io", "CustomResourceDefinition")
	s.mutate(res, "", name, func(o kubeObj) bool {
		names, found, _ := unstructured.NestedMap(o, "spec", "names")
		if !found {
			return false
		}
		var stored []any
		versions, _, _ := unstructured.NestedSlice(o, "spec", "versions")
		for _, v := range versions {
			if m, ok := v.(map[string]any); ok && m["storage"] == true {
				stored = append(stored, m["name"])
			}
		}
		conds, _, _ := unstructured.NestedSlice(o, "status", "conditions")
		now := nowRFC3339()
		conds = setCondition(conds, now, false, "NamesAccepted", "True", "NoConflicts", "no conflicts found")
		conds = setCondition(conds, now, false, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted")
		o["status"] = map[string]any{"acceptedNames": names, "conditions": conds, "storedVersions": stored}
		return true
	})
}

// setCondition sets a condition of a status, keeping lastTransitionTime
// while the status stays and (withUpdate) lastUpdateTime while reason and
// message stay.
func setCondition(conds []any, now string, withUpdate bool, typ, status, reason, message string) []any {
	c := map[string]any{"type": typ, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
	if withUpdate {
		c["lastUpdateTime"] = now
	}
	for i, old := range conds {
		m, ok := old.(map[string]any)
		if !ok || m["type"] != typ {
			continue
		}
		if m["status"] == status {
			c["lastTransitionTime"] = m["lastTransitionTime"]
			if withUpdate && m["reason"] == reason && m["message"] == message {
				c["lastUpdateTime"] = m["lastUpdateTime"]
			}
		}
		out := append([]any(nil), conds...)
		out[i] = c
		return out
	}
	return append(conds, c)
}
