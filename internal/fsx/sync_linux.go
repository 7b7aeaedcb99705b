//go:build linux

package fsx

import (
	"os"
	"syscall"
)

// DataSync makes f's data, and the metadata needed to read it back (its
// size), durable. On Linux it is fdatasync(2), which skips the timestamp
// updates a full fsync would also flush.
func DataSync(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
