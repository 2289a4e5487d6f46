// Package runner is caretaker's engine: it loads a Starlark playbook into a
// Plan (steps, node selectors, parameters), runs it node by node with
// ordering, serial batches, failure thresholds, confirmations and check
// mode, and reports every step as Events to Sinks. Thread environments
// (Env) give builtins the node, executor, check-mode guard (Wet), undo
// registry and output of the step that calls them. It imports none of the
// packages that use it (builtins, tui, lab, cmd).
package runner
