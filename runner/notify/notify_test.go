package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/notify"
)

type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	got    []notify.Notification
	ctypes []string
	status int
	hits   int
}

func newHookServer(t *testing.T, status int) *hookServer {
	h := &hookServer{status: status}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.hits++
		if r.Method != http.MethodPost {
			t.Errorf("method %s, want POST", r.Method)
		}
		var n notify.Notification
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("body is not a notification: %v: %s", err, body)
		}
		h.got = append(h.got, n)
		h.ctypes = append(h.ctypes, r.Header.Get("Content-Type"))
		w.WriteHeader(h.status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) received() []notify.Notification {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]notify.Notification(nil), h.got...)
}

func TestNotifyPostsFailureAndSummary(t *testing.T) {
	srv := newHookServer(t, http.StatusNoContent)
	n, err := notify.New(srv.URL + "/hook")
	if err != nil {
		t.Fatal(err)
	}
	n.SetJournal("/state/runs/r1/journal.jsonl")
	f := runtest.NewFixture(t)
	plan := f.MustLoad(`
def ok(node):
    pass
def bad(node):
    if node.name == "s2":
        fail("disk full")
step("prepare", ok, nodes="servers")
step("act", bad, nodes="servers")
`)
	done, _ := f.Run(plan, runner.RunOptions{RunID: "r1", Sink: n})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Wait(ctx)
	got := srv.received()
	if len(got) != 2 {
		t.Fatalf("got %d notifications, want 2 (step_failed, run_done): %+v", len(got), got)
	}
	byEvent := map[string]notify.Notification{}
	for _, g := range got {
		byEvent[g.Event] = g
	}
	sf := byEvent["step_failed"]
	if sf.RunID != "r1" || sf.Cluster != "t" || len(sf.Failed) != 1 || sf.Failed[0].Node != "s2" || !strings.Contains(sf.Error, "disk full") {
		t.Errorf("step_failed = %+v", sf)
	}
	rd := byEvent["run_done"]
	if rd.Status != "failed" || rd.Status != done.Status || rd.Counts[runner.StatusFailed] != 1 || rd.Journal != "/state/runs/r1/journal.jsonl" {
		t.Errorf("run_done = %+v", rd)
	}
	if !strings.Contains(rd.Text, "FAILED s2 [act]") || !strings.Contains(rd.Text, "caretaker resume r1") {
		t.Errorf("run_done text = %q", rd.Text)
	}
	for _, ct := range srv.ctypes {
		if ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
}

// A receiver that fails or is down never fails the run: the notifier
// retries, logs without the URL's secret parts, and returns.
func TestNotifyFailuresAreLoggedNotFatal(t *testing.T) {
	srv := newHookServer(t, http.StatusBadGateway)
	n, err := notify.New(srv.URL + "/hook/SECRET-TOKEN?key=SECRET2")
	if err != nil {
		t.Fatal(err)
	}
	n.RetryDelay = 10 * time.Millisecond
	var mu sync.Mutex
	var logs []string
	n.Logf = func(format string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	n.Emit(runner.RunStarted{RunID: "r2", Playbook: "pb", Cluster: "c"})
	n.Emit(runner.RunDone{RunID: "r2", Status: "ok"})
	n.Refused("r3", "pb", "c", fmt.Errorf("cluster locked: %w", errs.ErrLocked))
	n.Wait(context.Background())
	if hits := len(srv.received()); hits != 4 {
		t.Errorf("server saw %d posts, want 4 (two notifications, each retried once)", hits)
	}
	if len(logs) != 2 {
		t.Fatalf("logs = %q, want one line per notification", logs)
	}
	for _, l := range logs {
		if !strings.Contains(l, "502") || !strings.Contains(l, "not affected") || strings.Contains(l, "SECRET") {
			t.Errorf("log line %q", l)
		}
	}
	// Notifications are posted concurrently: find the refusal, whatever
	// order the receiver saw them in.
	refused := false
	for _, got := range srv.received() {
		if got.Event == "run_refused" {
			refused = true
			if !strings.Contains(got.Error, "locked") {
				t.Errorf("refused notification = %+v", got)
			}
		}
	}
	if !refused {
		t.Errorf("no run_refused notification among %+v", srv.received())
	}

	// Nobody listening at all.
	srv.Close()
	logs = nil
	n.Emit(runner.RunDone{RunID: "r2", Status: "ok"})
	n.Wait(context.Background())
	if len(logs) != 1 || strings.Contains(logs[0], "SECRET") || !strings.Contains(logs[0], "could not post") {
		t.Errorf("logs with the receiver down = %q", logs)
	}

	for _, bad := range []string{"", "ftp://x/y", "not a url", "http://"} {
		if _, err := notify.New(bad); !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("NewNotifier(%q) = %v, want ErrBadInput", bad, err)
		}
	}
}
