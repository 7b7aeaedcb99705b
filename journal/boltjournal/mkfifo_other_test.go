//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package boltjournal

import "errors"

func mkfifo(string) error { return errors.ErrUnsupported }
