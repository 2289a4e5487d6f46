package k8sops

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner"
)

// WorkloadSelection selects the workloads RestartWorkloads restarts.
type WorkloadSelection struct {
	// Namespaces to take workloads from; "*" (or none) means every
	// namespace.
	Namespaces []string
	// Selector is a label selector the workloads must match ("" all).
	Selector string
	// Kinds are the workload kinds (default deployments, daemonsets,
	// statefulsets).
	Kinds []string
}

// WaveOptions shape the restart.
type WaveOptions struct {
	// Wave is how many workloads restart at once (default 5).
	Wave int
	// MaxUnready is how many workloads of one wave may fail to become
	// ready before the restart stops (default 0: the first one stops it).
	MaxUnready int
	// Timeout is how long one wave may take to become ready (default 5m).
	Timeout time.Duration
	// Now is the restartedAt value written (default time.Now()).
	Now time.Time
}

// WorkloadsResult is what RestartWorkloads did.
type WorkloadsResult struct {
	// Selected are the workloads selected, "kind namespace/name", in the
	// order they restart.
	Selected []string `json:"selected"`
	// Restarted and Ready are those restarted, and those whose rollout
	// completed.
	Restarted []string `json:"restarted"`
	Ready     []string `json:"ready"`
	// NotReady are the workloads of the wave that stopped the restart.
	NotReady []RolloutState `json:"not_ready"`
	// NotRestarted are the workloads left alone after a wave stopped it.
	NotRestarted []string `json:"not_restarted"`
	Waves        int      `json:"waves"`
	Stopped      bool     `json:"stopped"`
	// Planned is true in check mode (nothing was restarted).
	Planned bool `json:"planned"`
}

// workload is one selected workload.
type workload struct {
	kind            Kind
	namespace, name string
}

func (w workload) String() string { return w.kind.String() + " " + qualified(w.namespace, w.name) }

// RestartWorkloads rolls the selected workloads in waves, like `kubectl
// rollout restart` followed by `kubectl rollout status`: each wave's
// workloads are restarted at once, then their rollouts are awaited; a
// wave in which more than MaxUnready workloads do not become ready within
// Timeout stops the restart (the later waves are not touched) and is an
// error. Selecting no workload is an error (a typo must not pass as
// done). In check mode it reports what each wave would restart.
func (cl *Client) RestartWorkloads(ctx context.Context, sel WorkloadSelection, o WaveOptions) (*WorkloadsResult, error) {
	o = o.withDefaults()
	ws, err := cl.selectWorkloads(ctx, sel)
	if err != nil {
		return nil, err
	}
	res := &WorkloadsResult{Selected: names(ws), Restarted: []string{}, Ready: []string{}, NotReady: []RolloutState{}, NotRestarted: []string{}}
	for start := 0; start < len(ws); start += o.Wave {
		wave := ws[start:min(start+o.Wave, len(ws))]
		res.Waves++
		cl.Server.Run.Output(runner.StreamLog, fmt.Sprintf("wave %d: %s", res.Waves, strings.Join(names(wave), ", ")))
		restarted, err := cl.restartWave(ctx, wave, o.Now)
		res.Restarted = append(res.Restarted, names(restarted)...)
		if err != nil {
			res.NotRestarted = names(ws[start+len(restarted):])
			return res, err
		}
		if len(restarted) == 0 { // check mode
			res.Planned = true
			continue
		}
		states, err := cl.waitWave(ctx, restarted, o.Timeout)
		if err != nil {
			return res, err
		}
		for _, st := range states {
			if st.Done {
				res.Ready = append(res.Ready, st.Kind+" "+qualified(st.Namespace, st.Name))
			} else {
				res.NotReady = append(res.NotReady, st)
			}
		}
		if len(res.NotReady) > o.MaxUnready {
			res.Stopped = true
			res.NotRestarted = names(ws[start+len(wave):])
			return res, cl.errorf("wave %d did not become ready within %s: %s; not restarted: %s", res.Waves, o.Timeout, describeStates(res.NotReady), listOrNone(res.NotRestarted))
		}
	}
	return res, nil
}

func (o WaveOptions) withDefaults() WaveOptions {
	if o.Wave <= 0 {
		o.Wave = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	return o
}

// selectWorkloads lists the workloads of sel, kinds in the order given,
// then by namespace and name.
func (cl *Client) selectWorkloads(ctx context.Context, sel WorkloadSelection) ([]workload, error) {
	if _, err := ParseSelector(sel.Selector); err != nil {
		return nil, cl.errorf("%w", err)
	}
	kinds := sel.Kinds
	if len(kinds) == 0 {
		kinds = []string{"deployments", "daemonsets", "statefulsets"}
	}
	nss := sel.Namespaces
	if len(nss) == 0 || (len(nss) == 1 && nss[0] == "*") {
		nss = []string{""}
	}
	var out []workload
	for _, kind := range kinds {
		k, err := cl.rolloutKind(kind)
		if err != nil {
			return nil, err
		}
		for _, ns := range nss {
			items, err := cl.list(ctx, k, ListOptions{Namespace: ns, Selector: sel.Selector})
			if err != nil {
				return nil, err
			}
			for _, u := range items {
				out = append(out, workload{kind: k, namespace: u.GetNamespace(), name: u.GetName()})
			}
		}
	}
	if len(out) == 0 {
		return nil, cl.errorf("no %s in namespaces %s match selector %q: nothing to restart (check the namespaces and the selector)",
			strings.Join(kinds, ", "), strings.Join(sel.Namespaces, ", "), sel.Selector)
	}
	return out, nil
}

// restartWave restarts each workload of a wave; it returns those
// restarted (none in check mode).
func (cl *Client) restartWave(ctx context.Context, wave []workload, now time.Time) ([]workload, error) {
	var done []workload
	for _, w := range wave {
		ran, err := cl.restart(ctx, w.kind, w.namespace, w.name, now)
		if err != nil {
			return done, err
		}
		if ran {
			done = append(done, w)
		}
	}
	return done, nil
}

// waitWave waits for every rollout of a wave at once.
func (cl *Client) waitWave(ctx context.Context, wave []workload, timeout time.Duration) ([]RolloutState, error) {
	states := make([]RolloutState, len(wave))
	errs := make([]error, len(wave))
	var wg sync.WaitGroup
	for i, w := range wave {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := cl.waitRollout(ctx, w.kind, w.namespace, w.name, timeout)
			if err == nil {
				states[i] = *st
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return states, nil
}

func names(ws []workload) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.String()
	}
	return out
}

func describeStates(sts []RolloutState) string {
	parts := make([]string, len(sts))
	for i, st := range sts {
		parts[i] = fmt.Sprintf("%s %s (%s)", st.Kind, qualified(st.Namespace, st.Name), st.Message)
	}
	return strings.Join(parts, "; ")
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
