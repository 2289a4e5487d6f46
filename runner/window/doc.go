// Package window enforces maintenance windows: a run (or a step) that may
// only change nodes inside configured times of day and days of week.
package window
