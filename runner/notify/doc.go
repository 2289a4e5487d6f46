// Package notify posts a run's outcome as JSON to the webhook of
// --notify-url: when a run ends, when a step fails and when a run is
// refused before it starts (for unattended runs from cron or timers).
package notify
