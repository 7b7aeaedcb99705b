// Package fsx is the narrow file-system surface the journal writes through,
// with the durability helpers the standard library leaves out: a data sync
// that maps to fdatasync (Linux) or F_FULLFSYNC (macOS), a directory sync,
// and an exclusive advisory lock file.
//
// Code that must survive power loss writes through an [FS] so that tests can
// substitute the simulated disk in package fsxtest, which forgets everything
// that was not synced when it "loses power". Production code uses [OS].
package fsx

import (
	"errors"
	"io"
	"os"
)

// ErrLocked is returned by [FS.Lock] when another process (or another open
// handle in this process) holds the lock.
var ErrLocked = errors.New("fsx: lock held elsewhere")

// FS is the file-system surface durable code needs. Implementations are safe
// for concurrent use; the [File] values they return are not, except that
// ReadAt may run concurrently with anything.
type FS interface {
	// OpenFile opens name like [os.OpenFile].
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Rename renames oldpath to newpath like [os.Rename], replacing newpath.
	// The rename is durable only after [FS.SyncDir] of the directory.
	Rename(oldpath, newpath string) error
	// Remove removes name like [os.Remove].
	Remove(name string) error
	// Stat describes name like [os.Stat].
	Stat(name string) (os.FileInfo, error)
	// SyncDir makes the directory entries of dir durable: files created,
	// renamed or removed in dir survive a power loss once it returns.
	SyncDir(dir string) error
	// Lock takes an exclusive advisory lock on the file name, creating it
	// with mode 0600 if needed, without waiting. It returns an error
	// wrapping [ErrLocked] when the lock is held elsewhere. Closing the
	// returned Closer releases the lock; the lock file is left in place.
	Lock(name string) (io.Closer, error)
}

// File is an open file. Sync makes the file's data and size durable; it is
// the only durability barrier for file contents.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Seeker
	io.Closer
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
}

// OS is the real file system. Its File.Sync uses the strongest data barrier
// the platform offers for file contents: fdatasync on Linux, F_FULLFSYNC on
// macOS (plain fsync there does not flush the drive's cache), fsync
// elsewhere. The zero value is ready to use and safe for concurrent use.
type OS struct{}

var _ FS = OS{}

// OpenFile implements [FS].
func (OS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Rename implements [FS].
func (OS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// Remove implements [FS].
func (OS) Remove(name string) error { return os.Remove(name) }

// Stat implements [FS].
func (OS) Stat(name string) (os.FileInfo, error) { return os.Stat(name) }

// SyncDir implements [FS].
func (OS) SyncDir(dir string) error { return syncDir(dir) }

// Lock implements [FS].
func (OS) Lock(name string) (io.Closer, error) { return lockFile(name) }

type osFile struct{ *os.File }

// Sync replaces os.File.Sync with the platform's data barrier.
func (f osFile) Sync() error { return DataSync(f.File) }
