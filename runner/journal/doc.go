// Package journal records runs on the controller: an append-only,
// fsync'ed journal per run (steps, results, undo records, shared values)
// that `caretaker runs`, `resume` and `undo` read back. Secrets never
// reach it: values are redacted before they are written.
package journal
