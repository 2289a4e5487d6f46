package errs

import (
	"context"
	"errors"
)

// Sentinel errors. Each says whether trying again can help.
var (
	// ErrAborted: the run was cancelled by the operator (Ctrl-C, q) or a
	// closing maintenance window. The run can be resumed.
	ErrAborted = errors.New("run aborted")
	// ErrUnreachable: a node could not be connected to (refused, timed out,
	// no route). Retrying helps once the node or network is back.
	ErrUnreachable = errors.New("node unreachable")
	// ErrAuth: SSH authentication failed. Retrying does not help until the
	// keys or user are fixed.
	ErrAuth = errors.New("ssh authentication failed")
	// ErrHostKey: the node's host key is unknown (strict mode) or changed.
	// Never retried automatically: verify the key out of band.
	ErrHostKey = errors.New("host key verification failed")
	// ErrNonZeroExit: a command exited non-zero. See *ExitError.
	ErrNonZeroExit = errors.New("command exited non-zero")
	// ErrLocked: another run holds the cluster lock. Retry after it ends.
	ErrLocked = errors.New("cluster locked by another run")
	// ErrBadInput: a playbook, inventory, parameter or flag is invalid.
	// Retrying does not help until the input is fixed.
	ErrBadInput = errors.New("bad input")
	// ErrNeedsConfirm: a playbook asked for confirmation but nobody can
	// answer (no terminal and no --yes).
	ErrNeedsConfirm = errors.New("confirmation needed but no terminal to ask (use --yes)")
	// ErrDrift: a check found the cluster working but in need of
	// maintenance: CA drift, or certificates expired or expiring. Retrying
	// does not help until it is maintained. See Drift.
	ErrDrift = errors.New("drift or expiring certificates")
)

// Drift marks err as ErrDrift (errors.Is) without changing its message.
func Drift(err error) error {
	if err == nil {
		return nil
	}
	return driftError{err}
}

type driftError struct{ error }

func (e driftError) Unwrap() []error { return []error{e.error, ErrDrift} }

// Kinds of errors, as events and journals name them (StepDone.Kind): a
// consumer (the session, the TUI, a monitoring job reading JSON events)
// tells a confirmation nobody could answer from an unreachable node
// without matching error texts.
const (
	KindAborted      = "aborted"
	KindUnreachable  = "unreachable"
	KindAuth         = "auth"
	KindHostKey      = "host-key"
	KindNonZeroExit  = "exit"
	KindLocked       = "locked"
	KindBadInput     = "bad-input"
	KindNeedsConfirm = "needs-confirm"
	KindTimeout      = "timeout"
	KindDrift        = "drift"
	KindOther        = "error"
)

// Kind names the kind of err: the first sentinel of this package it wraps,
// KindTimeout for a deadline, KindOther for anything else ("" for nil).
func Kind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNeedsConfirm):
		return KindNeedsConfirm
	case errors.Is(err, ErrBadInput):
		return KindBadInput
	case errors.Is(err, ErrLocked):
		return KindLocked
	case errors.Is(err, ErrHostKey):
		return KindHostKey
	case errors.Is(err, ErrAuth):
		return KindAuth
	case errors.Is(err, ErrUnreachable):
		return KindUnreachable
	case errors.Is(err, ErrAborted):
		return KindAborted
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, ErrNonZeroExit):
		return KindNonZeroExit
	case errors.Is(err, ErrDrift):
		return KindDrift
	}
	return KindOther
}
