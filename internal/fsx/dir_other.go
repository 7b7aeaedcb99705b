//go:build !unix

package fsx

// syncDir is a no-op where directories cannot be opened for syncing
// (Windows): NTFS journals directory updates itself.
func syncDir(string) error { return nil }
