//go:build unix

package crashtest

import (
	"os"
	"syscall"
)

// killSelf ends the process at once with SIGKILL, as a crash or the OOM
// killer would: no deferred function runs and nothing is flushed.
func killSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	// SIGKILL to oneself takes effect before the system call returns to
	// this thread; should it ever fail, die anyway.
	os.Exit(137)
}
