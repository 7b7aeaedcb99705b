//go:build !linux && !darwin

package fsx

import "os"

// DataSync makes f's data durable with fsync(2) (or the platform's
// equivalent, through [os.File.Sync]).
func DataSync(f *os.File) error { return f.Sync() }
