package errs

import "errors"

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
)
