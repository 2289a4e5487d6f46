package k8sops

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// RestartedAtAnnotation is the pod-template annotation a rollout restart
// sets, as `kubectl rollout restart` does: a new value makes the
// controller replace every pod.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// rolloutPoll is how often a rollout's status is read.
const rolloutPoll = 500 * time.Millisecond

// workloadKinds are the kinds a rollout restart applies to.
var workloadKinds = map[string]bool{"Deployment": true, "DaemonSet": true, "StatefulSet": true}

// RolloutRestart restarts a Deployment, DaemonSet or StatefulSet the way
// `kubectl rollout restart` does: it sets the restartedAt annotation of
// its pod template to now. A restart cannot be undone (the pods are
// replaced); nothing is recorded. In check mode it reports "would restart".
func (cl *Client) RolloutRestart(ctx context.Context, kind, namespace, name string, now time.Time) error {
	k, err := cl.workloadKind(kind, namespace)
	if err != nil {
		return err
	}
	_, err = cl.restart(ctx, k, namespace, name, now)
	return err
}

// restart patches the restartedAt annotation; it reports whether it did
// (false in check mode).
func (cl *Client) restart(ctx context.Context, k Kind, namespace, name string, now time.Time) (bool, error) {
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{RestartedAtAnnotation: now.UTC().Format(time.RFC3339)}}}}})
	run := cl.Server.Run
	ran := false
	err := run.Wet(fmt.Sprintf("restart %s %s (rollout restart)", k, qualified(namespace, name)), func() error {
		ran = true
		_, err := cl.resource(k, namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "caretaker"})
		if err != nil {
			return cl.errorf("rollout restart %s %s: %w", k, qualified(namespace, name), err)
		}
		run.MarkChanged()
		return nil
	})
	return ran && err == nil, err
}

// workloadKind resolves kind, refuses anything but the three workload
// kinds and checks the namespace.
func (cl *Client) workloadKind(kind, namespace string) (Kind, error) {
	k, err := cl.rolloutKind(kind)
	if err != nil {
		return Kind{}, err
	}
	if err := needNamespace(k, namespace); err != nil {
		return Kind{}, cl.errorf("%w", err)
	}
	return k, nil
}

// rolloutKind resolves kind and refuses anything but Deployments,
// DaemonSets and StatefulSets.
func (cl *Client) rolloutKind(kind string) (Kind, error) {
	k, err := cl.ResolveKind(kind)
	if err != nil {
		return Kind{}, cl.errorf("%w", err)
	}
	if !workloadKinds[k.Kind] {
		return Kind{}, cl.errorf("%s cannot be rolled out: give deployments, daemonsets or statefulsets", k)
	}
	return k, nil
}

// RolloutState is a workload's rollout progress.
type RolloutState struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Done      bool   `json:"done"`
	// Message says what the rollout waits for, as kubectl's rollout status
	// says it.
	Message string `json:"message"`
}

// RolloutStatus waits until the workload's rollout is complete, as
// `kubectl rollout status` judges it, or timeout passes (then Done is
// false and Message says what it still waited for). Read-only.
func (cl *Client) RolloutStatus(ctx context.Context, kind, namespace, name string, timeout time.Duration) (*RolloutState, error) {
	k, err := cl.workloadKind(kind, namespace)
	if err != nil {
		return nil, err
	}
	return cl.waitRollout(ctx, k, namespace, name, timeout)
}

func (cl *Client) waitRollout(ctx context.Context, k Kind, namespace, name string, timeout time.Duration) (*RolloutState, error) {
	st := &RolloutState{Kind: k.String(), Namespace: namespace, Name: name}
	deadline := time.Now().Add(timeout)
	for {
		u, err := cl.resource(k, namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, cl.errorf("rollout status of %s %s: %w", k, qualified(namespace, name), err)
		}
		st.Message, st.Done = rolloutProgress(u)
		// A Deployment past its progress deadline does not recover by
		// waiting: kubectl rollout status gives up at once too.
		if st.Done || !time.Now().Before(deadline) || strings.Contains(st.Message, "exceeded its progress deadline") {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(rolloutPoll):
		}
	}
}

// rolloutProgress judges one workload as kubectl's status viewers do:
// the controller has seen the latest spec, and every replica is updated
// and available.
func rolloutProgress(u *unstructured.Unstructured) (string, bool) {
	gen := u.GetGeneration()
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if observed < gen {
		return fmt.Sprintf("waiting for the %s controller to observe generation %d (it has seen %d)", u.GetKind(), gen, observed), false
	}
	n := func(path ...string) int64 {
		v, _, _ := unstructured.NestedInt64(u.Object, path...)
		return v
	}
	switch u.GetKind() {
	case "Deployment":
		if c := deploymentCondition(u, "Progressing"); c != nil && c["reason"] == "ProgressDeadlineExceeded" {
			return fmt.Sprintf("deployment %q exceeded its progress deadline", u.GetName()), false
		}
		want := int64(1)
		if r, found, _ := unstructured.NestedInt64(u.Object, "spec", "replicas"); found {
			want = r
		}
		switch updated, total, avail := n("status", "updatedReplicas"), n("status", "replicas"), n("status", "availableReplicas"); {
		case updated < want:
			return fmt.Sprintf("%d of %d updated replicas are available... (%d updated)", avail, want, updated), false
		case total > updated:
			return fmt.Sprintf("%d old replicas are pending termination", total-updated), false
		case avail < updated:
			return fmt.Sprintf("%d of %d updated replicas are available", avail, updated), false
		}
		return fmt.Sprintf("deployment %q successfully rolled out", u.GetName()), true
	case "DaemonSet":
		desired, updated, avail := n("status", "desiredNumberScheduled"), n("status", "updatedNumberScheduled"), n("status", "numberAvailable")
		if updated < desired {
			return fmt.Sprintf("%d out of %d new pods have been updated", updated, desired), false
		}
		if avail < desired {
			return fmt.Sprintf("%d of %d updated pods are available", avail, desired), false
		}
		return fmt.Sprintf("daemon set %q successfully rolled out", u.GetName()), true
	default: // StatefulSet
		want := n("spec", "replicas")
		if ready := n("status", "readyReplicas"); ready < want {
			return fmt.Sprintf("%d of %d pods are ready", ready, want), false
		}
		cur, _, _ := unstructured.NestedString(u.Object, "status", "currentRevision")
		upd, _, _ := unstructured.NestedString(u.Object, "status", "updateRevision")
		if upd != "" && cur != upd {
			return fmt.Sprintf("waiting for the rolling update to finish: %d pods at revision %s", n("status", "updatedReplicas"), upd), false
		}
		return fmt.Sprintf("statefulset %q rolled out (%d pods ready)", u.GetName(), want), true
	}
}

// deploymentCondition is the status condition of a type, or nil.
func deploymentCondition(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}
