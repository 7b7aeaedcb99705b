package boltjournal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/internal/fsx"
	"github.com/guestward/guestward/journal"
)

// How openDBFile opens and locks the database file.
type openMode int

const (
	readShared    openMode = iota // read it; others may read it too (ScanFile)
	readExclusive                 // read it, and no one else may have it open (Repair)
	readWrite                     // the journal's own (Open)
)

// resolvePath resolves the symbolic links in path (see fsx.OS.Resolve),
// so that the journal's lock file and its compaction, which renames a new
// file over the database, apply to the file itself whatever name led to
// it; and it refuses a path that a user other than the caller and root
// could redirect.
func resolvePath(op, path string) (string, error) {
	real, err := fsx.OS{}.Resolve(path)
	if err != nil {
		return "", ownerError(op, path, err)
	}
	return real, nil
}

// ownerError maps fsx's refusals to the journal's sentinels, as the file
// journal does.
func ownerError(op, path string, err error) error {
	switch {
	case errors.Is(err, fsx.ErrLocked), errors.Is(err, journal.ErrLocked):
		return fmt.Errorf("boltjournal: %s %s: %w", op, path, journal.ErrLocked)
	case errors.Is(err, fsx.ErrUnsafe):
		return fmt.Errorf("boltjournal: %s %s: %w: %w", op, path, journal.ErrUnsafePath, err)
	}
	return fmt.Errorf("boltjournal: %s %s: %w", op, path, err)
}

// openDBFile opens the existing database file at path (resolved, with the
// journal's lock file held) and locks the file itself (see flockFile),
// which catches an opener that came by another name (a hard link). It
// fails with journal.ErrLocked when someone else has the file open, and
// with fsx.ErrUnsafe when path is not a regular file (refused before it is
// opened: a named pipe would make opening wait) or, for a file the journal
// may replace (mode readWrite or readExclusive), when the file is not
// private to the caller or has another name than path.
func openDBFile(path string, mode openMode) (*os.File, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fsx.CheckFile(path, fi)
	}
	flag := os.O_RDONLY
	if mode == readWrite {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|openNonblock|fsx.NoFollow, 0)
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
		err = fsx.CheckFile(path, fi)
	}
	if err == nil && mode != readShared {
		err = fsx.CheckFile(path, fi)
		if err == nil {
			err = onlyName(path, fi)
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// onlyName checks that the open database file fi has one name, path: the
// journal replaces the file by renaming a new one over path (Compact,
// RepairFile), which would leave any other name holding the old file, a stale
// journal someone could open and trust.
func onlyName(path string, fi os.FileInfo) error {
	if n, ok := fsx.Links(fi); ok && n != 1 {
		return &fsx.UnsafeError{Path: path, Reason: fmt.Sprintf("the database file has %d names (hard links); "+
			"replacing it would leave all but one holding a stale copy", n)}
	}
	pfi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &fsx.UnsafeError{Path: path, Reason: "the database file is no longer at its path (renamed or removed while open)"}
	}
	if err != nil {
		return err
	}
	if !fsx.SameFile(fi, pfi) {
		// Only another owner replaces the file; it came by another name.
		return fmt.Errorf("%w: the database file was replaced while being opened", journal.ErrLocked)
	}
	return nil
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
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|fsx.NoFollow, 0o600)
}

// checkDB checks the database file f (see checkFile) and decodes its ops,
// calling visit, when not nil, with each. What it finds wrong is a
// *damage; errors reading f and from visit are returned as they are.
func checkDB(f *os.File, size int64, visit func(e journal.Entry, seq uint64) error) error {
	var maxSeq uint64
	opsSeq, err := checkFile(f, size, func(k, v []byte) error {
		e, seq, err := decodeOp(string(k), v)
		if err != nil {
			return &damage{off: -1, msg: err.Error(), cause: err}
		}
		maxSeq = max(maxSeq, seq)
		if visit != nil {
			return visit(e, seq)
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
// hands it to bbolt. A file it refuses is left as it was. It returns the
// open file too, which bbolt owns and closes.
func openDB(path string, cfg config, mem *memIndex) (*bolt.DB, *os.File, error) {
	f, fi, err := openDBFile(path, readWrite)
	if err != nil {
		return nil, nil, openError("open", path, err)
	}
	var load func(journal.Entry, uint64) error
	if mem != nil {
		load = func(e journal.Entry, seq uint64) error {
			if err := mem.load(&e, seq); err != nil {
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
		return nil, nil, openError("open", path, err)
	}
	db, err := openBolt(f, *boltOptions(cfg))
	if err != nil {
		return nil, nil, openError("open", path, err)
	}
	db.MaxBatchSize = cfg.maxBatchSize
	db.MaxBatchDelay = cfg.maxBatchDelay
	return db, f, nil
}

// openError says what opening path for op found: journal.ErrLocked,
// journal.ErrUnsafePath, damage (an error matching journal.ErrCorrupt), or
// another error.
func openError(op, path string, err error) error {
	var d *damage
	if errors.As(err, &d) || errors.As(err, new(errPanic)) {
		return corrupt(path, err)
	}
	return ownerError(op, path, err)
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
