// schedule notify: the unit_failed webhook post of a failed unit or cron job.

package main

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
	"time"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/notify"
)

// exitMeanings are what caretaker's exit codes mean, for unit_failed.
var exitMeanings = map[string]string{
	"1": "a step failed, the run was aborted, or a node could not be reached",
	"2": "bad input: playbook, inventory, parameter or flag",
	"3": "locked by another run",
	"4": "CA drift or expired/expiring certificates",
	"5": "outside the maintenance window",
}

// unitFailure is the body `schedule notify` posts: the fields of every
// notification, plus the unit and how it ended.
type unitFailure struct {
	notify.Notification
	Unit          string `json:"unit"`
	ExitStatus    string `json:"exit_status,omitempty"`
	ServiceResult string `json:"service_result,omitempty"`
	InvocationID  string `json:"invocation_id,omitempty"`
}

func newScheduleNotifyCommand() *cobra.Command {
	var unit, rawURL, exitStatus, logFile string
	c := &cobra.Command{
		Use:   "notify --unit NAME",
		Short: "Post a unit_failed notification to $" + notifyURLEnv + " (the OnFailure= unit and crontab line of schedule print run it)",
		Long: `notify posts {"event": "unit_failed", "status": "failed", "unit": ..., "exit_status": ...,
"text": ...} (JSON, like the notifications of --notify-url) to the URL in $` + notifyURLEnv + `
(or --url; the units read it from their env file, so that it is in no
unit file and no process list). systemd (251 or later) tells an OnFailure=
unit how the failed unit ended ($MONITOR_EXIT_STATUS, $MONITOR_SERVICE_RESULT,
$MONITOR_INVOCATION_ID); a crontab line passes --exit-status $?.
Each POST has a 10 s timeout and one retry; it exits 1 when the POST fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if unit == "" {
				return usageError{fmt.Errorf("schedule notify: give --unit NAME (the unit or job that failed)")}
			}
			rawURL = orDefault(rawURL, os.Getenv(notifyURLEnv))
			if rawURL == "" {
				return usageError{fmt.Errorf("schedule notify: no URL: set $%s (the env file of the schedule) or give --url", notifyURLEnv)}
			}
			if _, err := notify.New(rawURL); err != nil {
				return usageError{err}
			}
			msg := unitFailureMessage(unit, orDefault(exitStatus, os.Getenv("MONITOR_EXIT_STATUS")), logFile, time.Now())
			body, err := json.Marshal(msg)
			if err != nil {
				return fmt.Errorf("schedule notify: %w", err)
			}
			if err := postJSON(cmd.Context(), rawURL, body); err != nil {
				return fmt.Errorf("schedule notify: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&unit, "unit", "", "the unit (or crontab job) that failed (required)")
	c.Flags().StringVar(&rawURL, "url", "", "webhook URL (default $"+notifyURLEnv+"; a URL on the command line shows in process lists)")
	c.Flags().StringVar(&exitStatus, "exit-status", "", "how it ended (default $MONITOR_EXIT_STATUS, which systemd sets)")
	c.Flags().StringVar(&logFile, "log", "", "where its output is (default: the journal of the unit)")
	return c
}

// unitFailureMessage is the unit_failed notification of unit.
func unitFailureMessage(unit, exitStatus, logFile string, now time.Time) unitFailure {
	_, host := runner.Operator()
	m := unitFailure{
		Notification:  notify.Notification{Event: "unit_failed", Host: host, Status: "failed", At: now.UTC()},
		Unit:          unit,
		ExitStatus:    exitStatus,
		ServiceResult: os.Getenv("MONITOR_SERVICE_RESULT"),
		InvocationID:  os.Getenv("MONITOR_INVOCATION_ID"),
	}
	how := "failed"
	switch {
	case exitMeanings[exitStatus] != "":
		how = fmt.Sprintf("failed with exit status %s (%s)", exitStatus, exitMeanings[exitStatus])
	case exitStatus != "":
		how = "failed: exit status " + exitStatus
	case m.ServiceResult != "":
		how = "failed: " + m.ServiceResult
	}
	m.Error = how
	where := "journalctl -u " + unit
	if m.InvocationID != "" {
		where = "journalctl _SYSTEMD_INVOCATION_ID=" + m.InvocationID
	}
	if logFile != "" {
		where = logFile
	}
	m.Text = fmt.Sprintf("caretaker: %s on %s %s; see %s", unit, host, how, where)
	return m
}

// postJSON posts body to rawURL: 10 s timeout, one retry after a second.
// Its errors name the URL's scheme and host only: the path or query may
// hold a token.
func postJSON(ctx context.Context, rawURL string, body []byte) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("parse the URL: %w", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("post to %s://%s: %w", u.Scheme, u.Host, stripURLError(err))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			last = stripURLError(err)
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		last = fmt.Errorf("HTTP %s", resp.Status)
	}
	return fmt.Errorf("post to %s://%s: %w", u.Scheme, u.Host, last)
}

// stripURLError drops the URL from an *url.Error.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
