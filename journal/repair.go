package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/guestward/guestward/internal/fsx"
)

// Record is one record of a journal file, as [ScanFile] reports it. It is a
// plain value, which the caller owns.
type Record struct {
	// Offset is the record's byte offset in the file.
	Offset int64
	// Snapshot is true for a record written by compaction, which holds an
	// operation's merged state rather than one step of its lifecycle.
	Snapshot bool
	// Entry is the record as stored (not merged with earlier records).
	Entry Entry
}

// FileReport describes what [ScanFile] found in a journal file. It is a
// plain value.
type FileReport struct {
	Path     string
	Size     int64 // bytes in the file
	Records  int   // intact records read
	Ops      int   // operations they describe
	InFlight int   // of which not terminal
	Keys     int   // idempotency keys held
	// GoodSize is the offset just past the last intact record. When it
	// is less than Size and the scan returned no error, the bytes after
	// it are either zeros the journal preallocated (TornReason is empty)
	// or a torn final write, which OpenFile would drop; TornReason says
	// why they were judged torn.
	GoodSize   int64
	TornReason string
}

// ScanFile reads and checks the journal file at path without changing it,
// calling visit (when not nil) for every intact record in file order. It
// checks what [OpenFile] checks: framing, checksums, entry encoding and the
// lifecycle rules between records.
//
// It returns a [*CorruptError] for damage that is not a torn final write
// (the report then covers the records before it), and visit's error if visit
// fails. It takes no lock: scanning a journal another process is writing may
// report that process's unfinished write as a torn tail. Of the options,
// only [WithLogger] has an effect.
func ScanFile(ctx context.Context, path string, visit func(Record) error, opts ...FileOption) (FileReport, error) {
	cfg := defaultFileConfig()
	for _, o := range opts {
		if o != nil {
			o.applyFile(&cfg)
		}
	}
	rep := FileReport{Path: path}
	f, err := cfg.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return rep, fmt.Errorf("journal: scan %s: %w", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		rep.Size = fi.Size()
	}
	var visitErr error
	var v visitFunc
	if visit != nil {
		v = func(r *scanRec) error {
			rec := Record{Offset: r.off, Snapshot: r.snapshot, Entry: r.e}
			rec.Entry.Params = decodeParams(r.params)
			if err := visit(rec); err != nil {
				visitErr = err
				return err
			}
			return nil
		}
	}
	idx, res, n, err := replayFile(ctx.Err, f, path, v)
	if visitErr != nil {
		return rep, visitErr
	}
	rep.GoodSize = res.end
	if err != nil {
		rep.Records = res.records
		return rep, err
	}
	rep.Records = int(n)
	rep.TornReason = res.torn
	rep.Ops, rep.InFlight, rep.Keys = len(idx.ops), len(idx.inflight), len(idx.keys)
	return rep, nil
}

// RepairReport describes what [RepairFile] did. It is a plain value.
type RepairReport struct {
	Path string
	// Repaired is false when the journal had no damage and was left
	// untouched.
	Repaired bool
	// Offset is where the damage began: the file now ends there.
	Offset int64
	// DroppedBytes is how many bytes were cut from the end of the file.
	DroppedBytes int64
	// Backup is the copy of the whole file as it was before the repair.
	Backup string
	// Reason says what was wrong at Offset.
	Reason string
}

// RepairFile is the explicit way past damage that [OpenFile] refuses to
// skip. It copies the journal file at path, as it is, to a backup next to it
// (path + ".damaged-" + a UTC timestamp), then truncates the journal to its
// last intact record before the first damage. Every record after that point
// is gone from the journal (but kept in the backup), including intact ones:
// the journal cannot tell what they depended on.
//
// A journal without damage is left untouched (Repaired false); a torn tail
// counts as damage here, though OpenFile would drop it by itself. A file
// whose header is damaged is refused, since nothing shows it is a journal.
// RepairFile takes the journal's locks and fails with [ErrLocked] while the
// journal is open, and with [ErrUnsafePath] where [OpenFile] would. The
// backup is created only under a name that is free, never through a link. Of the options, only [WithLogger] and [WithClock] (for the
// backup's name) have an effect.
func RepairFile(ctx context.Context, path string, opts ...FileOption) (RepairReport, error) {
	cfg := defaultFileConfig()
	for _, o := range opts {
		if o != nil {
			o.applyFile(&cfg)
		}
	}
	rep := RepairReport{Path: path}
	// The same guards as OpenFile: one owner, whatever path, and a path
	// and file no one else can change.
	path, lock, err := claim(cfg.fs, "repair", path)
	if err != nil {
		return rep, err
	}
	defer lock.Close()
	rep.Path = path
	f, err := openOwned(cfg.fs, "repair", path)
	if err != nil {
		return rep, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return rep, fmt.Errorf("journal: repair %s: %w", path, err)
	}
	size := fi.Size()
	_, res, _, err := replayFile(ctx.Err, f, path, nil)
	var ce *CorruptError
	switch {
	case errors.As(err, &ce) && ce.Offset == 0:
		return rep, fmt.Errorf("journal: repair %s: refusing to repair a file without a valid journal header: %w", path, err)
	case errors.As(err, &ce):
		rep.Offset, rep.Reason = ce.Offset, ce.Reason
	case err != nil:
		return rep, err
	case res.torn != "":
		rep.Offset, rep.Reason = res.end, "torn final write: "+res.torn
	default:
		return rep, nil
	}
	rep.Backup = path + ".damaged-" + cfg.now().UTC().Format("20060102T150405.000000000Z")
	if err := copyFile(cfg.fs, f, size, rep.Backup); err != nil {
		return rep, fmt.Errorf("journal: repair %s: keep a copy: %w", path, err)
	}
	if err := cfg.fs.SyncDir(filepath.Dir(path)); err != nil {
		return rep, fmt.Errorf("journal: repair %s: keep a copy: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("journal: repair %s: %w (a copy was kept at %s; the journal is unchanged)", path, err, rep.Backup)
	}
	if err := f.Truncate(rep.Offset); err != nil {
		return rep, fmt.Errorf("journal: repair %s: truncate at offset %d: %w", path, rep.Offset, err)
	}
	if err := f.Sync(); err != nil {
		return rep, fmt.Errorf("journal: repair %s: sync: %w", path, err)
	}
	rep.Repaired = true
	rep.DroppedBytes = size - rep.Offset
	cfg.logger.Warn("journal: repaired", "path", path, "offset", rep.Offset,
		"dropped_bytes", rep.DroppedBytes, "backup", rep.Backup, "reason", rep.Reason)
	return rep, nil
}

func copyFile(fs fsx.FS, src io.ReaderAt, size int64, dst string) error {
	out, err := fs.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|fsx.NoFollow, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.NewSectionReader(src, 0, size))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fs.Remove(dst)
	}
	return err
}
