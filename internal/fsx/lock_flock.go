//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package fsx

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// lockFile takes flock(LOCK_EX|LOCK_NB) on name. flock locks belong to the
// open file description, so a second open handle in the same process is
// refused too, which is what a single-writer journal needs. The lock file
// is never opened through a link: one planted at its name could otherwise
// make us create, or lock, a file of the planter's choosing.
func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|NoFollow, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, unsafePath(name, "lock file is a symbolic link")
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = CheckFile(name, fi)
	}
	if err == nil {
		err = tryLock(f)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	// Closing the descriptor releases the flock.
	return f, nil
}

// tryLock takes flock(LOCK_EX|LOCK_NB) on f.
func tryLock(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := sc.Control(func(fd uintptr) {
		for {
			lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
			if lerr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(lerr, syscall.EWOULDBLOCK) {
		return fmt.Errorf("lock %s: %w", f.Name(), ErrLocked)
	}
	if lerr != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: lerr}
	}
	return nil
}
