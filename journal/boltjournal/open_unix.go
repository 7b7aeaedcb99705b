//go:build unix

package boltjournal

import "syscall"

// openNonblock keeps opening a named pipe from waiting for a writer, should
// one replace the database file between the check that it is a regular
// file and the open; on a regular file it has no effect.
const openNonblock = syscall.O_NONBLOCK
