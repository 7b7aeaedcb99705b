//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package boltjournal

import (
	"os"
	"syscall"
)

// flockFile takes flock(2) on f without waiting, exclusive or shared, the
// lock bbolt itself takes on the database file. flock belongs to the open
// file description, so it also refuses a second open of the same file in
// this process, whatever name (a symbolic or hard link) reached it. When
// the journal hands f to bbolt, bbolt's own flock on it succeeds at once.
func flockFile(f *os.File, exclusive bool) (locked bool, err error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	how := syscall.LOCK_SH | syscall.LOCK_NB
	if exclusive {
		how = syscall.LOCK_EX | syscall.LOCK_NB
	}
	var lerr error
	if err := sc.Control(func(fd uintptr) {
		for {
			if lerr = syscall.Flock(int(fd), how); lerr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return false, err
	}
	if lerr == syscall.EWOULDBLOCK {
		return false, nil
	}
	if lerr != nil {
		return false, &os.PathError{Op: "flock", Path: f.Name(), Err: lerr}
	}
	return true, nil
}
