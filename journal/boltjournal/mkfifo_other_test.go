//go:build !unix

package boltjournal

import "errors"

func mkfifo(string) error { return errors.ErrUnsupported }
