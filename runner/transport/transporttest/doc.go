// Package transporttest is test support for transports: in-process SSH
// nodes with pinned host keys and the ExecutorSuite every Executor
// implementation must pass.
package transporttest
