package boltjournal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/journal"
)

// ErrLinked is returned by [Journal.Compact] and [Repair] when the database
// file has more than one name (hard links): both replace the file by
// renaming a new one over it, which would leave the other names naming the
// old file, and a journal opened through one of them would miss what was
// written since.
var ErrLinked = errors.New("boltjournal: the database file has other hard links")

// How openDBFile opens and locks the database file.
type openMode int

const (
	readShared    openMode = iota // read it; others may read it too (ScanFile)
	readExclusive                 // read it, and no one else may have it open (Repair)
	readWrite                     // the journal's own (Open)
)

// resolvePath returns path with symbolic links resolved, so that the
// journal's lock file and its compaction, which renames a new file over
// the database, apply to the file itself whatever link led to it. For a
// path that does not exist yet, its directory is resolved. A link at path
// that leads nowhere is refused rather than replaced.
func resolvePath(path string) (string, error) {
	path = filepath.Clean(path)
	real, err := filepath.EvalSymlinks(path)
	if err == nil {
		return real, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("%s is a symbolic link to a file that does not exist: %w", path, fs.ErrNotExist)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.Base(path)), nil
}

// openDBFile opens the existing database file at path and locks it (see
// flockFile); it fails with journal.ErrLocked when someone else has it
// open, and with a *damage when path is not a regular file. A named pipe
// does not make it wait.
func openDBFile(path string, mode openMode) (*os.File, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, notRegular(fi.Mode())
	}
	flag := os.O_RDONLY
	if mode == readWrite {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|openNonblock, 0)
	if err != nil {
		return nil, nil, err
	}
	locked, err := flockFile(f, mode != readShared)
	if err == nil && !locked {
		err = journal.ErrLocked
	}
	if err == nil {
		// Read after the lock: a holder that just let go may have
		// grown the file.
		fi, err = f.Stat()
	}
	if err == nil && !fi.Mode().IsRegular() {
		err = notRegular(fi.Mode())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

func notRegular(m fs.FileMode) *damage {
	kind := "not a regular file"
	switch {
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeDevice != 0:
		kind = "a device"
	}
	return damagef(-1, "%s, not a database file", kind)
}

// openBolt hands the open file f to bbolt, which takes it over: bbolt
// closes it with the database, or when it fails. A panic or a memory fault
// inside bbolt (which trusts the pages it maps) is returned as an errPanic;
// checkFile is what keeps them from happening.
func openBolt(f *os.File, o bolt.Options) (db *bolt.DB, err error) {
	o.OpenFile = func(string, int, os.FileMode) (*os.File, error) { return f, nil }
	defer func() {
		if p := recover(); p != nil {
			f.Close()
			db, err = nil, errPanic{p}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return bolt.Open(f.Name(), 0o600, &o)
}

// createExcl creates a new file at name for the journal's own writing: it
// fails if anything, a planted link included, is there already.
func createExcl(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|openNoFollow, 0o600)
}

// checkDB checks the database file f (see checkFile) and decodes its ops,
// calling visit, when not nil, with each. What it finds wrong is a
// *damage; errors reading f and from visit are returned as they are.
func checkDB(f *os.File, size int64, visit func(e *journal.Entry, seq uint64) error) error {
	var maxSeq uint64
	opsSeq, err := checkFile(f, size, func(k, v []byte) error {
		e, seq, err := decodeOp(string(k), v)
		if err != nil {
			return &damage{off: -1, msg: err.Error(), cause: err}
		}
		maxSeq = max(maxSeq, seq)
		if visit != nil {
			return visit(&e, seq)
		}
		return nil
	})
	if err == nil && maxSeq > opsSeq {
		// The next op would take a sequence number already in use.
		err = damagef(-1, "an op has sequence %d, beyond the ops bucket's %d", maxSeq, opsSeq)
	}
	return err
}

// openDB opens the journal database at path: it locks the file, checks
// it (checkDB, loading its ops into mem when mem is not nil), and only then
// hands it to bbolt. A file it refuses is left as it was.
func openDB(path string, cfg config, mem *memIndex) (*bolt.DB, error) {
	f, fi, err := openDBFile(path, readWrite)
	if err != nil {
		return nil, openError("open", path, err)
	}
	var load func(*journal.Entry, uint64) error
	if mem != nil {
		load = func(e *journal.Entry, seq uint64) error {
			if err := mem.load(e, seq); err != nil {
				return &damage{off: -1, msg: err.Error(), cause: err}
			}
			return nil
		}
	}
	err = checkDB(f, fi.Size(), load)
	if err == nil && mem != nil {
		if ferr := mem.finishLoad(); ferr != nil {
			err = &damage{off: -1, msg: ferr.Error(), cause: ferr}
		}
	}
	if err != nil {
		f.Close()
		return nil, openError("open", path, err)
	}
	db, err := openBolt(f, *boltOptions(cfg))
	if err != nil {
		return nil, openError("open", path, err)
	}
	db.MaxBatchSize = cfg.maxBatchSize
	db.MaxBatchDelay = cfg.maxBatchDelay
	return db, nil
}

// openError says what opening path for op found: journal.ErrLocked, damage
// (an error matching journal.ErrCorrupt), or another error.
func openError(op, path string, err error) error {
	var d *damage
	switch {
	case errors.Is(err, journal.ErrLocked):
		return fmt.Errorf("boltjournal: %s %s: %w", op, path, journal.ErrLocked)
	case errors.As(err, &d), errors.As(err, new(errPanic)):
		return corrupt(path, err)
	}
	return fmt.Errorf("boltjournal: %s %s: %w", op, path, err)
}

// corruptError is a *journal.CorruptError that also unwraps to what was
// found wrong, so that errors.Is finds, besides journal.ErrCorrupt, the
// bbolt error that says the same (bbolt's ErrChecksum, ErrInvalid,
// ErrVersionMismatch), when there is one.
type corruptError struct {
	ce    *journal.CorruptError
	cause error
}

func (e *corruptError) Error() string   { return e.ce.Error() }
func (e *corruptError) Unwrap() []error { return []error{e.ce, e.cause} }

func corrupt(path string, err error) error {
	var ke *corruptError
	if errors.As(err, &ke) {
		return ke
	}
	var ce *journal.CorruptError
	if errors.As(err, &ce) {
		if ce.Path == "" {
			ce.Path = path
		}
		return ce
	}
	off := int64(-1)
	var d *damage
	if errors.As(err, &d) {
		off = d.off
	}
	return &corruptError{ce: &journal.CorruptError{Path: path, Offset: off, Reason: err.Error()}, cause: err}
}

// linked reports whether the file f has more than one name.
func linked(f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	return nlink(fi) > 1, nil
}
