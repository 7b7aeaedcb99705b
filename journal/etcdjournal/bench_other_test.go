//go:build !unix

package etcdjournal

import "time"

// processCPU is not measured here: the CPU figures read zero.
func processCPU() time.Duration { return 0 }
