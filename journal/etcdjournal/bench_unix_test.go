//go:build unix

package etcdjournal

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time this process has used, in user and
// system mode. With etcd embedded in the process it counts the server's
// work as well as the client's; other processes on the machine do not
// count, which makes it the steadier figure on a shared machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
