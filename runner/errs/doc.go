// Package errs holds the sentinel errors caretaker classifies failures by
// (aborted, unreachable, auth, host key, non-zero exit, locked, bad input,
// needs-confirm, drift) and their kinds as events name them, so that consumers
// tell them apart with errors.Is or StepDone.Kind, never by error text.
package errs
