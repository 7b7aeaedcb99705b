// Package fsx is the narrow file-system surface the journal writes through,
// with the durability helpers the standard library leaves out: a data sync
// that maps to fdatasync (Linux) or F_FULLFSYNC (macOS), a directory sync,
// and exclusive advisory locks, on a lock file or on an open file itself.
//
// It also holds the checks that keep other users from choosing which file
// durable code writes: [FS.Resolve] refuses a path whose directories others
// could change, [CheckFile] a file others could write, and [NoFollow] keeps
// a file from being created or opened through a planted symbolic link.
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

// ErrLocked is returned by [FS.Lock] and [File.TryLock] when another process
// (or another open handle in this process) holds the lock.
var ErrLocked = errors.New("fsx: lock held elsewhere")

// ErrUnsafe is the [errors.Is] target of the [*UnsafeError] returned by
// [FS.Resolve], [FS.Lock] and [CheckFile] for a path or file that another
// user could change or replace.
var ErrUnsafe = errors.New("fsx: unsafe path")

// UnsafeError says which path is unsafe and why. It matches [ErrUnsafe].
type UnsafeError struct {
	Path   string
	Reason string
}

// Error implements error.
func (e *UnsafeError) Error() string { return e.Path + ": " + e.Reason }

// Is reports whether target is [ErrUnsafe].
func (e *UnsafeError) Is(target error) bool { return target == ErrUnsafe }

func unsafePath(path, reason string) error { return &UnsafeError{Path: path, Reason: reason} }

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
	// wrapping [ErrLocked] when the lock is held elsewhere, and one
	// matching [ErrUnsafe] when name is a symbolic link or a file that
	// [CheckFile] refuses. Closing the returned Closer releases the lock;
	// the lock file is left in place.
	Lock(name string) (io.Closer, error)
	// Resolve returns the absolute path name refers to, with every
	// symbolic link resolved and every ".." applied after the link before
	// it, as the kernel applies it. The file itself need not exist (its
	// directory must); a final component that is a symbolic link to
	// nothing is refused, since creating the file would create it where
	// the link leads. It also refuses, with an error matching
	// [ErrUnsafe], a path that a user other than the caller and root
	// could make name another file: see [OS.Resolve] for the rule.
	Resolve(name string) (string, error)
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
	// TryLock takes an exclusive advisory lock on the file itself (on what
	// every name of it leads to, not on one name) without waiting. It
	// returns an error wrapping [ErrLocked] when another open file,
	// in this process or another, holds it. Closing the file releases it.
	TryLock() error
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

// Resolve implements [FS]. On Unix systems every directory from the root
// down to the file's own must be owned by the caller's effective user or by
// root, and must not be writable by its group or by others unless it has the
// sticky bit (as /tmp has): whoever can write to a directory without the
// sticky bit can rename what is in it, and the owner of a directory can do
// so whatever its mode. That is the rule ssh applies to the files it trusts,
// with the exception some distributions patch into ssh: a directory of the
// caller's that is writable by the caller's own user-private group (its
// effective group, named as the user is) passes, since that group has no
// other member; those distributions set umask 002, which makes every new
// directory group-writable.
// In a sticky directory others can still create names, which [NoFollow] and
// O_EXCL keep from being followed or reused, so they can stop a writer but
// not redirect it. Elsewhere (Windows) no permissions are checked.
func (OS) Resolve(name string) (string, error) { return resolve(name) }

type osFile struct{ *os.File }

// Sync replaces os.File.Sync with the platform's data barrier.
func (f osFile) Sync() error { return DataSync(f.File) }

// TryLock implements [File].
func (f osFile) TryLock() error { return tryLock(f.File) }

// SameFile reports whether a and b describe the same file, as [os.SameFile]
// does; it also understands the FileInfo of a simulated file system that
// implements SameFile(os.FileInfo) bool.
func SameFile(a, b os.FileInfo) bool {
	if s, ok := a.(interface{ SameFile(os.FileInfo) bool }); ok {
		return s.SameFile(b)
	}
	return os.SameFile(a, b)
}

// Links returns the number of names (hard links) of the file fi describes,
// and false where the platform or file system does not say.
func Links(fi os.FileInfo) (uint64, bool) { return links(fi) }

// CheckFile returns an error matching [ErrUnsafe] when fi, which describes
// name, is not a regular file, or could be written by a user other than the
// caller and root: on Unix systems it must be owned by the caller's
// effective user or by root and not be writable by its group or others.
func CheckFile(name string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return unsafePath(name, "not a regular file (mode "+fi.Mode().String()+")")
	}
	return checkPrivate(name, fi)
}
