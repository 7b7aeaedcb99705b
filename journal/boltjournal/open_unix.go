//go:build unix

package boltjournal

import (
	"os"
	"syscall"
)

// openNonblock keeps opening a named pipe from waiting for a writer; the
// journal refuses anything but a regular file, on which it has no effect.
// openNoFollow keeps a file the journal creates from being a link someone
// planted.
const (
	openNonblock = syscall.O_NONBLOCK
	openNoFollow = syscall.O_NOFOLLOW
)

// nlink returns the number of names (hard links) of the file fi describes.
func nlink(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
