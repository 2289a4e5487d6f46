package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// MultiSink sends every event to each of its sinks in order.
type MultiSink []Sink

// Emit forwards e to every sink.
func (m MultiSink) Emit(e Event) {
	for _, s := range m {
		if s != nil {
			s.Emit(e)
		}
	}
}

// JSONSink writes one JSON object per event and line: the event's fields
// plus "type" (see README, "JSON events").
type JSONSink struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSONSink writes JSON lines to w.
func NewJSONSink(w io.Writer) *JSONSink { return &JSONSink{w: w} }

// Emit writes e as one line.
func (s *JSONSink) Emit(e Event) {
	line, err := MarshalEvent(e)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"type":"error","error":%q}`, err.Error()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.Write(append(line, '\n'))
}

// MarshalEvent encodes an event as a JSON object with a "type" field first.
func MarshalEvent(e Event) ([]byte, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `{"type":%q`, e.EventType())
	if len(body) > 2 {
		buf.WriteByte(',')
		buf.Write(body[1:])
	} else {
		buf.WriteByte('}')
	}
	return buf.Bytes(), nil
}

// PlainSink writes one human-readable line per event, for logs and cron
// mail. Output lines are prefixed with the node name. Each fact is written
// once: a failed cell's error and the run's notes are in the summary at
// the end (what tail, cron mail and the terminal view show), so the live
// line of a failed cell only says when it failed and points there, and
// notes are not echoed as they arrive (JSON output has both as events).
type PlainSink struct {
	mu      sync.Mutex
	w       io.Writer
	verbose bool
	steps   []StepInfo
}

// NewPlainSink writes lines to w; verbose adds the Starlark backtrace of
// failed steps.
func NewPlainSink(w io.Writer, verbose bool) *PlainSink { return &PlainSink{w: w, verbose: verbose} }

// Emit writes e as text.
func (s *PlainSink) Emit(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := func(t time.Time) string { return t.Format("15:04:05") }
	switch e := e.(type) {
	case RunStarted:
		s.steps = e.Steps
		mode := ""
		if e.Check {
			mode = " (check mode: nothing will be changed)"
		}
		fmt.Fprintf(s.w, "%s run %s: playbook %s on cluster %s, %d steps, %d nodes%s\n", ts(e.At), e.RunID, e.Playbook, e.Cluster, len(e.Steps), len(e.Nodes), mode)
	case StepStarted:
		fmt.Fprintf(s.w, "%s [%s] %s: started\n", ts(e.At), e.StepName, e.Node)
	case OutputLine:
		tag := ""
		switch e.Stream {
		case StreamStderr:
			tag = " (stderr)"
		case StreamCheck:
			tag = " (check)"
		}
		fmt.Fprintf(s.w, "%s [%s] %s%s | %s\n", ts(e.At), s.stepName(e.Step), e.Node, tag, e.Text)
	case StepDone:
		extra := ""
		switch {
		case e.Status == StatusFailed:
			extra = " (the error is in the summary at the end)"
		case e.Reason != "":
			extra = " (" + e.Reason + ")"
		}
		fmt.Fprintf(s.w, "%s [%s] %s: %s in %s%s\n", ts(e.At), e.StepName, e.Node, strings.ToUpper(string(e.Status)), e.Duration.Round(time.Millisecond), extra)
		if e.Status == StatusFailed && s.verbose && e.Detail != "" && e.Detail != e.Error {
			for _, l := range strings.Split(strings.TrimRight(e.Detail, "\n"), "\n") {
				fmt.Fprintf(s.w, "    %s\n", l)
			}
		}
	case Prompt:
		fmt.Fprintf(s.w, "%s [%s] %s: question: %s\n", ts(e.At), s.stepName(e.Step), e.Node, e.Question)
	case PromptAnswered:
		ans := "no"
		if e.Answer {
			ans = "yes"
		}
		fmt.Fprintf(s.w, "%s answer: %s (by %s)\n", ts(e.At), ans, e.By)
	case RunPaused:
		fmt.Fprintf(s.w, "%s run paused\n", ts(e.At))
	case RunResumed:
		fmt.Fprintf(s.w, "%s run resumed\n", ts(e.At))
	case Note:
		// In the summary (RunDone.Notes).
	case RunDone:
		fmt.Fprint(s.w, Summary(e))
	}
}

func (s *PlainSink) stepName(i int) string {
	if i >= 0 && i < len(s.steps) {
		return s.steps[i].Name
	}
	return fmt.Sprint(i)
}

// Summary renders the end of a run for a terminal or a log: counts per
// status, failed nodes with their first error line, notes, where the
// journal is, and what to do next.
func Summary(e RunDone) string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s %s in %s:", e.RunID, strings.ToUpper(e.Status), e.Duration.Round(time.Millisecond))
	var keys []string
	for k := range e.Counts {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, e.Counts[Status(k)])
	}
	b.WriteString("\n")
	for _, f := range e.Failed {
		fmt.Fprintf(&b, "  FAILED %s [%s]: %s\n", f.Node, f.StepName, f.Error)
	}
	if e.Error != "" && len(e.Failed) == 0 {
		fmt.Fprintf(&b, "  %s\n", e.Error)
	}
	for _, n := range e.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	if e.Journal != "" {
		fmt.Fprintf(&b, "  journal: %s\n", e.Journal)
	}
	if len(e.Left) > 0 {
		writeLeft(&b, e)
	} else if len(e.Recorded) > 0 {
		fmt.Fprintf(&b, "  changes this attempt made before it stopped (resume finishes the playbook, undo reverts them):\n")
		for _, r := range e.Recorded {
			fmt.Fprintf(&b, "    %s\n", r)
		}
	}
	switch {
	case (e.Status == "failed" || e.Status == "aborted") && e.Check:
		b.WriteString("  next: fix the cause and rehearse again with --check (a check-mode run changes nothing: there is nothing to resume or undo)\n")
	case e.Status == "failed" || e.Status == "aborted":
		fmt.Fprintf(&b, "  next: fix the cause, then `caretaker resume %s` to continue, or `caretaker undo %s` to roll back recorded changes\n", e.RunID, e.RunID)
	}
	return b.String()
}
