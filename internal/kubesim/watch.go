package kubesim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubeWatchBuffer is how many events a slow watcher may fall behind
// before its watch is closed (the client then lists again).
const kubeWatchBuffer = 256

// kubeWatcher is one open watch.
type kubeWatcher struct {
	res    *kubeResource
	ns     string // "" for every namespace
	ch     chan kubeEvent
	closed bool // ch closed; guarded by the store's lock
}

// notifyLocked hands an event to the watchers of its resource.
func (s *Store) notifyLocked(ev kubeEvent) {
	for w := range s.watchers {
		if w.res != ev.key.res || (w.ns != "" && w.ns != ev.key.ns) {
			continue
		}
		select {
		case w.ch <- ev:
		default:
			w.closed = true
			close(w.ch)
			delete(s.watchers, w)
		}
	}
}

// startWatch registers a watcher of res in ns and returns the events it
// starts with: every current object as ADDED (resourceVersion "" or "0",
// or sendInitialEvents), else the writes after resourceVersion; and the
// current revision. A revision older than the event log is expired (410).
func (s *Store) startWatch(res *kubeResource, ns, fromRV string, initial bool) (*kubeWatcher, []kubeEvent, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var backlog []kubeEvent
	if initial || fromRV == "" || fromRV == "0" {
		for _, k := range s.keysLocked(res, ns) {
			o := s.objs[k]
			rv, _ := strconv.ParseInt(meta(o).GetResourceVersion(), 10, 64)
			backlog = append(backlog, kubeEvent{typ: evAdded, key: k, rv: rv, obj: o})
		}
	} else {
		n, err := strconv.ParseInt(fromRV, 10, 64)
		if err != nil {
			return nil, nil, 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resourceVersion %q", fromRV))
		}
		oldest := s.rv
		if len(s.log) > 0 {
			oldest = s.log[0].rv - 1
		}
		if n < oldest {
			return nil, nil, s.rv, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", n, oldest))
		}
		for _, ev := range s.log {
			if ev.rv > n && ev.key.res == res && (ns == "" || ev.key.ns == ns) {
				backlog = append(backlog, ev)
			}
		}
	}
	w := &kubeWatcher{res: res, ns: ns, ch: make(chan kubeEvent, kubeWatchBuffer)}
	s.watchers[w] = struct{}{}
	return w, backlog, s.rv, nil
}

func (s *Store) unwatch(w *kubeWatcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.watchers, w)
}

// watchEventFor is the event a watcher with sel sees for ev, as the
// apiserver's watch cache filters: an object that starts or stops
// matching is ADDED or DELETED. "" when the watcher sees nothing.
func watchEventFor(res *kubeResource, sel kubeSelectors, ev kubeEvent) string {
	now := sel.matches(res, ev.obj)
	was := ev.old != nil && sel.matches(res, ev.old)
	switch {
	case ev.typ != evModified && now:
		return ev.typ
	case ev.typ != evModified:
		return ""
	case now && was:
		return evModified
	case now:
		return evAdded
	case was:
		return evDeleted
	}
	return ""
}

// serveWatch streams watch events (JSON, one per line) until the client
// goes away, timeoutSeconds pass, the server's K3s stops or the watcher
// falls too far behind. Bookmarks are sent only to end the initial events
// of a sendInitialEvents watch (client-go's watch-list).
func (h *kubeHandler) serveWatch(w http.ResponseWriter, r *http.Request, t kubeTarget, sel kubeSelectors) {
	q := r.URL.Query()
	initial := q.Get("sendInitialEvents") == "true"
	timeout := 30 * time.Minute
	if v, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && v > 0 {
		timeout = time.Duration(v) * time.Second
	}
	wt, backlog, rv, err := h.store.startWatch(t.res, t.ns, q.Get("resourceVersion"), initial)
	if err != nil && !apierrors.IsResourceExpired(err) {
		writeKubeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	send := func(typ string, obj any) error {
		return enc.Encode(struct {
			Type   string `json:"type"`
			Object any    `json:"object"`
		}{typ, obj})
	}
	if err != nil {
		st := err.(*apierrors.StatusError).ErrStatus
		st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
		_ = send("ERROR", &st)
		return
	}
	defer h.store.unwatch(wt)
	for _, ev := range backlog {
		if typ := watchEventFor(t.res, sel, ev); typ != "" {
			_ = send(typ, ev.obj)
		}
	}
	if initial {
		_ = send("BOOKMARK", kubeObj{"kind": t.res.kind, "apiVersion": t.res.apiVersion(), "metadata": map[string]any{
			"resourceVersion": fmt.Sprint(rv), "annotations": map[string]any{"k8s.io/initial-events-end": "true"},
		}})
	}
	flush()
	h.streamWatch(r, wt, timeout, func(ev kubeEvent) error {
		if typ := watchEventFor(t.res, sel, ev); typ != "" {
			if err := send(typ, ev.obj); err != nil {
				return err
			}
			flush()
		}
		return nil
	})
}

func (h *kubeHandler) streamWatch(r *http.Request, wt *kubeWatcher, timeout time.Duration, send func(kubeEvent) error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-wt.ch:
			if !ok || send(ev) != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-timer.C:
			return
		case <-h.sup.Stopped():
			return
		}
	}
}
