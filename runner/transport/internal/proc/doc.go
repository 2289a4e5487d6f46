// Package proc holds what the transports share: atomic file writes through
// a temporary file and rename, output gates that bound what a command may
// print, pooled copies and process-kill timing.
package proc
