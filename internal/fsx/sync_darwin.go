//go:build darwin

package fsx

import (
	"os"
	"syscall"
)

// DataSync makes f's data durable. On macOS fsync(2) only hands the data to
// the drive, whose cache may still lose it; F_FULLFSYNC asks the drive to
// flush too. File systems that do not support it fall back to fsync.
func DataSync(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := sc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_FULLFSYNC, 0)
	}); err != nil {
		return err
	}
	if errno != 0 {
		return f.Sync()
	}
	return nil
}
