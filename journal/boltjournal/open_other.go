//go:build !unix

package boltjournal

// Windows has no named pipes in the file system to wait on.
const openNonblock = 0
