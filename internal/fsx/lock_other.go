//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package fsx

import (
	"io"
	"os"
)

// lockFile only creates the lock file on platforms without flock: there is
// no protection against a second process opening the same journal.
func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|NoFollow, 0o600)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// tryLock does nothing where there is no flock.
func tryLock(*os.File) error { return nil }
