//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package boltjournal

import "os"

// flockFile takes no lock where there is no flock(2): the journal's lock
// file and bbolt's own lock, taken when it opens the file, are all there is.
func flockFile(*os.File, bool) (bool, error) { return true, nil }
