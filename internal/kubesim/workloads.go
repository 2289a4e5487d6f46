package kubesim

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
)

// The workload controllers' status, as kube-controller-manager's
// deployment, daemonset and statefulset controllers report it once the
// pods of a rollout are ready, so that `kubectl rollout status`'s rules
// read a finished rollout. There are no ReplicaSets, pods or
// ControllerRevisions: only the workload's status changes.
//
// With the annotation NeverReadyAnnotation: "true" the new pods never
// become ready: on the first rollout none is ready; on a later one the
// controller has added one new pod (Deployment: surged; DaemonSet,
// StatefulSet: replaced one) that stays unready, and a Deployment's
// Progressing condition turns ProgressDeadlineExceeded after
// spec.progressDeadlineSeconds. Removing the annotation lets the rollout
// finish.

// rollout is the controllers' memory of one workload.
type rollout struct {
	current  string    // template hash of the last finished rollout ("" before any)
	update   string    // template hash being rolled out
	revision int64     // a Deployment's deployment.kubernetes.io/revision
	since    time.Time // when the rollout of update started
}

// agentCount is the number of nodes DaemonSet pods are scheduled to: the
// cluster's agents (Host.Agents).
func (s *Store) agentCount() int64 {
	if s.host == nil {
		return 0
	}
	return s.host.Agents()
}

// templateHash is a pod template's hash, the suffix of ReplicaSet and
// ControllerRevision names.
func templateHash(o kubeObj) string {
	t, _, _ := unstructured.NestedFieldNoCopy(o, "spec", "template")
	b, _ := json.Marshal(t)
	h := fnv.New32a()
	_, _ = h.Write(b)
	return utilrand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// syncWorkload writes a workload's status (and a Deployment's revision
// annotation) as its controller would.
func (s *Store) syncWorkload(res *kubeResource, ns, name string) {
	var recheck time.Duration
	s.mutate(res, ns, name, func(o kubeObj) bool {
		u := meta(o)
		ro := s.kcm.rollouts[u.GetUID()]
		if ro == nil {
			ro = &rollout{}
			s.kcm.rollouts[u.GetUID()] = ro
		}
		if h := templateHash(o); h != ro.update {
			ro.update, ro.since = h, time.Now()
			ro.revision++
		}
		old, _, _ := unstructured.NestedMap(o, "status")
		var st map[string]any
		var done bool
		switch res.kind {
		case "Deployment":
			st, done, recheck = deploymentStatus(o, old, ro)
			ann := u.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann["deployment.kubernetes.io/revision"] = fmt.Sprint(ro.revision)
			u.SetAnnotations(ann)
		case "DaemonSet":
			st, done = daemonSetStatus(o, ro, s.agentCount())
		case "StatefulSet":
			st, done = statefulSetStatus(o, ro)
		default:
			return false
		}
		if done {
			ro.current = ro.update
		}
		o["status"] = st
		return true
	})
	if recheck > 0 {
		s.after(recheck, func() { s.syncWorkload(res, ns, name) })
	}
}

// putCounts sets the counters of a status; zero ones are left out unless
// required (the typed status's omitempty).
func putCounts(st map[string]any, required map[string]bool, kv ...any) {
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		v := kv[i+1].(int64)
		if v != 0 || required[k] {
			st[k] = v
		}
	}
}

func specReplicas(o kubeObj) int64 {
	r, found, _ := unstructured.NestedInt64(o, "spec", "replicas")
	if !found {
		return 1
	}
	return r
}

// deploymentStatus is the deployment controller's status; recheck > 0
// asks for a sync when the progress deadline passes.
func deploymentStatus(o, old map[string]any, ro *rollout) (st map[string]any, done bool, recheck time.Duration) {
	r := specReplicas(o)
	rs := fmt.Sprintf("%s-%s", meta(o).GetName(), ro.update)
	conds, _, _ := unstructured.NestedSlice(old, "conditions")
	now := nowRFC3339()
	st = map[string]any{"observedGeneration": meta(o).GetGeneration()}
	if !neverReady(o) || r == 0 {
		putCounts(st, nil, "replicas", r, "updatedReplicas", r, "readyReplicas", r, "availableReplicas", r)
		conds = setCondition(conds, now, true, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
		conds = setCondition(conds, now, true, "Progressing", "True", "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q has successfully progressed.", rs))
		st["conditions"] = conds
		return st, true, 0
	}
	if ro.current == "" {
		putCounts(st, nil, "replicas", r, "updatedReplicas", r, "unavailableReplicas", r)
		conds = setCondition(conds, now, true, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
	} else {
		putCounts(st, nil, "replicas", r+1, "updatedReplicas", int64(1), "readyReplicas", r, "availableReplicas", r, "unavailableReplicas", int64(1))
		conds = setCondition(conds, now, true, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
	}
	pds, found, _ := unstructured.NestedInt64(o, "spec", "progressDeadlineSeconds")
	if !found {
		pds = 600
	}
	recheck = time.Until(ro.since.Add(time.Duration(pds) * time.Second))
	if recheck <= 0 {
		recheck = 0
		conds = setCondition(conds, now, true, "Progressing", "False", "ProgressDeadlineExceeded", fmt.Sprintf("ReplicaSet %q has timed out progressing.", rs))
	} else {
		conds = setCondition(conds, now, true, "Progressing", "True", "ReplicaSetUpdated", fmt.Sprintf("ReplicaSet %q is progressing.", rs))
	}
	st["conditions"] = conds
	return st, false, recheck
}

// daemonSetStatus is the daemonset controller's status with n nodes.
func daemonSetStatus(o kubeObj, ro *rollout, n int64) (map[string]any, bool) {
	required := map[string]bool{"currentNumberScheduled": true, "numberMisscheduled": true, "desiredNumberScheduled": true, "numberReady": true}
	st := map[string]any{"observedGeneration": meta(o).GetGeneration()}
	switch {
	case !neverReady(o) || n == 0:
		putCounts(st, required, "currentNumberScheduled", n, "numberMisscheduled", int64(0), "desiredNumberScheduled", n, "numberReady", n, "updatedNumberScheduled", n, "numberAvailable", n)
		return st, true
	case ro.current == "":
		putCounts(st, required, "currentNumberScheduled", n, "numberMisscheduled", int64(0), "desiredNumberScheduled", n, "numberReady", int64(0), "updatedNumberScheduled", n, "numberUnavailable", n)
	default:
		putCounts(st, required, "currentNumberScheduled", n, "numberMisscheduled", int64(0), "desiredNumberScheduled", n, "numberReady", n-1, "updatedNumberScheduled", int64(1), "numberAvailable", n-1, "numberUnavailable", int64(1))
	}
	return st, false
}

// statefulSetStatus is the statefulset controller's status (OrderedReady,
// RollingUpdate: pods replaced from the highest ordinal down).
func statefulSetStatus(o kubeObj, ro *rollout) (map[string]any, bool) {
	name := meta(o).GetName()
	r := specReplicas(o)
	rev := name + "-" + ro.update
	required := map[string]bool{"replicas": true, "availableReplicas": true}
	st := map[string]any{"observedGeneration": meta(o).GetGeneration(), "collisionCount": int64(0), "updateRevision": rev}
	switch {
	case !neverReady(o) || r == 0:
		putCounts(st, required, "replicas", r, "readyReplicas", r, "currentReplicas", r, "updatedReplicas", r, "availableReplicas", r)
		st["currentRevision"] = rev
		return st, true
	case ro.current == "":
		putCounts(st, required, "replicas", int64(1), "readyReplicas", int64(0), "currentReplicas", int64(1), "updatedReplicas", int64(1), "availableReplicas", int64(0))
		st["currentRevision"] = rev
	default:
		putCounts(st, required, "replicas", r, "readyReplicas", r-1, "currentReplicas", r-1, "updatedReplicas", int64(1), "availableReplicas", r-1)
		st["currentRevision"] = name + "-" + ro.current
	}
	return st, false
}
