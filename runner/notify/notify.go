package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
)

// Notification is the JSON body --notify-url receives: once when a run
// ends (whatever its status), and at once when a step fails or a run is
// refused before it starts (locked, outside its window). Text is a
// human-readable summary, so chat webhooks that show a "text" field work
// unchanged.
type Notification struct {
	// Event is "run_done", "step_failed" or "run_refused".
	Event    string                `json:"event"`
	RunID    string                `json:"run_id,omitempty"`
	Playbook string                `json:"playbook,omitempty"`
	Cluster  string                `json:"cluster,omitempty"`
	Host     string                `json:"host,omitempty"`
	Status   string                `json:"status"` // ok, failed, aborted, refused
	Counts   map[runner.Status]int `json:"counts,omitempty"`
	Failed   []NotifyFailed        `json:"failed,omitempty"`
	Notes    []string              `json:"notes,omitempty"`
	Error    string                `json:"error,omitempty"`
	Journal  string                `json:"journal,omitempty"`
	Duration float64               `json:"duration_seconds,omitempty"`
	At       time.Time             `json:"at"`
	Text     string                `json:"text"`
}

// NotifyFailed is a failed step on a node.
type NotifyFailed struct {
	Node  string `json:"node"`
	Step  string `json:"step"`
	Error string `json:"error"`
}

// Notifier posts notifications to a URL (--notify-url). It is a Sink:
// put it in the run's MultiSink. Posting happens in the background with a
// timeout and one retry; a failure is logged through Logf, never returned
// and never fails the run. Call Wait before the process exits.
type Notifier struct {
	// URL receives the POSTs. It may carry a secret (a webhook token), so
	// messages only ever name its scheme and host.
	URL string
	// Client is the HTTP client; nil means one with a 10 s timeout.
	Client *http.Client
	// Logf reports failures; nil means stderr.
	Logf func(format string, args ...any)
	// Retries after a failed attempt (default 1), RetryDelay between them
	// (default 1 s).
	Retries    int
	RetryDelay time.Duration

	mu      sync.Mutex
	wg      sync.WaitGroup
	started runner.RunStarted
	host    string
	journal string
}

// New posts to rawURL. It checks the URL's form only.
func New(rawURL string) (*Notifier, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--notify-url: give an http:// or https:// URL: %w", errs.ErrBadInput)
	}
	_, host := runner.Operator()
	return &Notifier{URL: rawURL, Retries: 1, RetryDelay: time.Second, host: host}, nil
}

// SetJournal names the journal file in notifications.
func (n *Notifier) SetJournal(path string) {
	n.mu.Lock()
	n.journal = path
	n.mu.Unlock()
}

// Emit posts at run end and on step failures.
func (n *Notifier) Emit(ev runner.Event) {
	switch e := ev.(type) {
	case runner.RunStarted:
		n.mu.Lock()
		n.started = e
		n.mu.Unlock()
	case runner.StepDone:
		if e.Status != runner.StatusFailed {
			return
		}
		msg := n.base("step_failed", "failed", e.At)
		msg.Failed = []NotifyFailed{{Node: e.Node, Step: e.StepName, Error: e.Error}}
		msg.Error = e.Error
		msg.Text = fmt.Sprintf("caretaker %s on %s: step %q FAILED on %s: %s (run %s continues or stops per its failure policy)", msg.Playbook, msg.Cluster, e.StepName, e.Node, e.Error, msg.RunID)
		n.post(msg)
	case runner.RunDone:
		msg := n.base("run_done", e.Status, e.At)
		if msg.RunID == "" {
			msg.RunID = e.RunID
		}
		msg.Counts, msg.Notes, msg.Error = e.Counts, e.Notes, e.Error
		msg.Duration = e.Duration.Seconds()
		for _, f := range e.Failed {
			msg.Failed = append(msg.Failed, NotifyFailed{Node: f.Node, Step: f.StepName, Error: f.Error})
		}
		if e.Journal != "" {
			msg.Journal = e.Journal
		}
		msg.Text = fmt.Sprintf("caretaker %s on %s: %s", msg.Playbook, msg.Cluster, runner.Summary(e))
		n.post(msg)
	}
}

// Refused posts that a run did not start (locked, outside its window,
// bad input) and why.
func (n *Notifier) Refused(runID, playbook, cluster string, err error) {
	msg := n.base("run_refused", "refused", time.Now())
	msg.RunID, msg.Playbook, msg.Cluster = runID, playbook, cluster
	msg.Error = err.Error()
	msg.Text = fmt.Sprintf("caretaker %s on %s did not start: %v", playbook, cluster, err)
	n.post(msg)
}

func (n *Notifier) base(event, status string, at time.Time) Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return Notification{Event: event, RunID: n.started.RunID, Playbook: n.started.Playbook, Cluster: n.started.Cluster, Host: n.host, Status: status, Journal: n.journal, At: at}
}

func (n *Notifier) post(msg Notification) {
	body, err := json.Marshal(msg)
	if err != nil {
		n.logf("notify: encode the notification: %v", err)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.send(body, msg.Event)
	}()
}

func (n *Notifier) send(body []byte, event string) {
	client := n.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	delay := n.RetryDelay
	if delay <= 0 {
		delay = time.Second
	}
	var lastErr error
	for attempt := 0; attempt <= max(n.Retries, 0); attempt++ {
		if attempt > 0 {
			time.Sleep(delay)
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, n.URL, bytes.NewReader(body))
		if err != nil {
			lastErr = err
			break
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "caretaker")
		resp, err := client.Do(req)
		if err != nil {
			lastErr = stripURL(err)
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // drained for connection reuse only
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return
		}
		lastErr = fmt.Errorf("HTTP status %s", resp.Status)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			break // the receiver will not change its mind
		}
	}
	n.logf("notify: could not post the %s notification to %s: %v (the run itself is not affected)", event, n.redactedURL(), lastErr)
}

// stripURL drops the URL (it may hold a webhook token) from a client error.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (n *Notifier) redactedURL() string {
	u, err := url.Parse(n.URL)
	if err != nil {
		return "the notify URL"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

func (n *Notifier) logf(format string, args ...any) {
	if n.Logf != nil {
		n.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "caretaker: "+format+"\n", args...)
}

// Wait blocks until every notification was sent or given up, or ctx ends.
func (n *Notifier) Wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.logf("notify: gave up waiting for notifications to be sent: %v", ctx.Err())
	}
}
