package boltjournal

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/internal/fsx"
	"github.com/guestward/guestward/journal"
)

// Compact prunes every expired operation and then rewrites the database into
// a fresh file holding only live data, which returns to the file system the
// space bbolt keeps for reuse after deletions. The new file is written under
// path+".compact", synced, and renamed over the old one; a crash at any point
// leaves one complete database, old or new. Appends and reads wait while it
// runs.
//
// Compact refuses, with an error matching [journal.ErrUnsafePath], to
// replace a database file that has gained another name (a hard link) or
// lost its own while open: the other name would keep the old file, a stale
// journal someone could open and trust. The journal stays usable.
//
// When ctx ends before the rename, Compact abandons the copy and returns an
// error wrapping ctx.Err(). If the database cannot be reopened afterwards,
// the journal becomes unusable (every method returns that error) and must be
// closed and opened again.
func (j *Journal) Compact(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, err)
	}
	if err := j.pruneAll(); err != nil {
		return err
	}
	if err := j.unlinked(); err != nil {
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, err)
	}
	before := fileSize(j.path)
	tmp := j.path + compactSuffix
	if err := copyDB(tmp, j.db, j.cfg); err != nil {
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, err)
	}
	if err := ctx.Err(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, err)
	}
	if err := j.cfg.fp.Eval("compact/before-rename"); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, err)
	}
	if err := j.db.Close(); err != nil {
		os.Remove(tmp)
		j.reopenLocked()
		return fmt.Errorf("boltjournal: %s: compact: close: %w", j.path, err)
	}
	j.db = nil
	renameErr := os.Rename(tmp, j.path)
	if renameErr == nil {
		renameErr = fsx.OS{}.SyncDir(j.dir)
	} else {
		os.Remove(tmp)
	}
	if err := j.reopenLocked(); err != nil {
		return errors.Join(renameErr, err)
	}
	if renameErr != nil {
		return fmt.Errorf("boltjournal: %s: compact: %w", j.path, renameErr)
	}
	j.log.Info("boltjournal: compacted", "path", j.path, "bytes_before", before, "bytes_after", fileSize(j.path))
	return nil
}

// reopenLocked opens j.path again after Compact closed it. j.mu is held.
func (j *Journal) reopenLocked() error {
	db, f, err := openDB(j.path, j.cfg, nil)
	if err != nil {
		j.broken = fmt.Errorf("boltjournal: %s: reopening after compaction failed; close and open the journal again: %w", j.path, err)
		j.log.Error("boltjournal: journal unusable", "path", j.path, "err", err)
		return j.broken
	}
	j.db, j.file = db, f
	return nil
}

// unlinked checks that the open database file still has one name, the
// journal's (see onlyName): a file that gained another name while open is
// not replaced. The check is made on the file bbolt has open.
func (j *Journal) unlinked() error {
	fi, err := j.file.Stat()
	if err == nil {
		err = onlyName(j.path, fi)
	}
	if errors.Is(err, fsx.ErrUnsafe) {
		return fmt.Errorf("refusing to replace the database file: %w: %w", journal.ErrUnsafePath, err)
	}
	return err
}

// copyDB writes a compact copy of src to a new file at dst and syncs it.
func copyDB(dst string, src *bolt.DB, cfg config) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := createExcl(dst)
	if err != nil {
		return err
	}
	out, err := openBolt(f, bolt.Options{NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		os.Remove(dst)
		return err
	}
	err = func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = errPanic{p}
			}
		}()
		return bolt.Compact(out, src, 4<<20)
	}()
	if err == nil && !cfg.noSync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// Stats describes a journal database. It is a plain value.
type Stats struct {
	Path     string
	Size     int64 // bytes in the database file
	Ops      int   // operations held
	InFlight int   // of which not terminal
	Keys     int   // idempotency keys held
}

// Verify checks the whole database without changing it: bbolt's own
// consistency check of its pages, the decoding of every stored entry, that
// no two operations share a sequence number or an idempotency key, and that
// the indexes the journal keeps in memory agree with the database. Damage
// is reported as an error matching [journal.ErrCorrupt].
func (j *Journal) Verify(ctx context.Context) (Stats, error) {
	st := Stats{Path: j.path}
	err := j.view(ctx, "verify", func(tx *bolt.Tx) error {
		ops, err := verifyTx(ctx, tx)
		if err != nil {
			return err
		}
		st.Ops = len(ops)
		keys := map[string]string{}
		for id, o := range ops {
			if !o.e.State.Terminal() {
				st.InFlight++
			}
			if k := o.e.IdempKey; k != "" {
				keys[k] = id
			}
		}
		st.Keys = len(keys)
		// Appends may be running: compare with the memory index only
		// what they cannot be changing, the ops this transaction sees
		// and memory agrees exist.
		j.memMu.Lock()
		defer j.memMu.Unlock()
		for k, id := range keys {
			if owner := j.mem.owner(k); owner != "" && owner != id {
				return fmt.Errorf("memory index gives key %q to op %q, the database to %q", k, owner, id)
			}
		}
		for _, r := range j.mem.ops() {
			if o, ok := ops[r.id]; ok && o.seq != r.seq {
				return fmt.Errorf("memory index has op %q with sequence %d, the database %d", r.id, r.seq, o.seq)
			}
		}
		return nil
	})
	st.Size = fileSize(j.path)
	return st, err
}

type storedOp struct {
	e   journal.Entry
	seq uint64
}

// verifyTx runs bbolt's page check, decodes every op and checks that
// sequence numbers and idempotency keys are unique.
func verifyTx(ctx context.Context, tx *bolt.Tx) (map[string]storedOp, error) {
	if err := checkLayout(tx); err != nil {
		return nil, err
	}
	var first error
	for err := range tx.Check() {
		if err != nil && first == nil {
			first = err // keep draining so bbolt's checker can finish
		}
	}
	if first != nil {
		return nil, fmt.Errorf("bbolt page check: %w", first)
	}
	ops := map[string]storedOp{}
	seqs := map[uint64]string{}
	keys := map[string]string{}
	err := tx.Bucket(bucketOps).ForEach(func(k, v []byte) error {
		if len(ops)&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		e, seq, err := decodeOp(string(k), v)
		if err != nil {
			return err
		}
		if other, dup := seqs[seq]; dup {
			return fmt.Errorf("ops %q and %q share sequence %d", other, k, seq)
		}
		seqs[seq] = string(k)
		if key := e.IdempKey; key != "" {
			if other, dup := keys[key]; dup {
				return fmt.Errorf("ops %q and %q both hold idempotency key %q", other, k, key)
			}
			keys[key] = string(k)
		}
		ops[string(k)] = storedOp{e, seq}
		return nil
	})
	return ops, err
}

// RepairReport describes what [RepairFile] did. It is a plain value.
type RepairReport struct {
	Path string
	// Repaired is false when Verify found nothing wrong and the database
	// was left untouched.
	Repaired bool
	// Reason is the damage Verify found.
	Reason string
	// Backup is the copy of the database as it was before the repair.
	Backup string
	// Kept is how many operations the rebuilt database holds.
	Kept int
	// Lost lists what could not be carried over: op IDs whose entries did
	// not decode, or a note that the rest of the ops bucket was unreadable.
	Lost []string
}

// RepairFile rebuilds a damaged journal database. It checks the database at
// path as Open does and as [Journal.Verify] does; if that finds damage, it
// copies the file, as it is, to path + ".damaged-" + a UTC timestamp, then
// writes a new database from every operation it can still read and decode,
// rebuilding all indexes from them, and renames it into place. What could
// not be carried over is listed in the report, never skipped silently.
//
// A file Repair finds nothing to rebuild from (no valid meta page, no ops
// bucket: an empty file, or one that is not a journal) is left alone, and
// RepairFile fails with an error matching [journal.ErrCorrupt]; move it away to
// start a new journal.
//
// RepairFile takes the journal's lock and fails with [journal.ErrLocked] while
// the journal is open, and with [journal.ErrUnsafePath] where Open would:
// see the package doc, Files and permissions. Of the options, only WithLogger and WithClock (for the
// backup's name) have an effect.
func RepairFile(ctx context.Context, path string, opts ...Option) (RepairReport, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	path, err := resolvePath("repair", path)
	if err != nil {
		return RepairReport{Path: path}, err
	}
	rep := RepairReport{Path: path}
	lock, err := takeLock(path)
	if err != nil {
		return rep, err
	}
	defer lock.Close()
	f, fi, err := openDBFile(path, readExclusive)
	if err != nil {
		return rep, openError("repair", path, err)
	}
	defer f.Close()
	size := fi.Size()
	_, verr := verifyFile(ctx, f, size)
	if verr == nil {
		return rep, nil
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("boltjournal: repair %s: %w", path, err)
	}
	var d *damage
	if !errors.As(verr, &d) {
		return rep, fmt.Errorf("boltjournal: repair %s: %w", path, verr)
	}
	var ops []storedOp
	lost, err := salvageFile(f, size, func(k, v []byte) error {
		e, seq, err := decodeOp(string(k), v)
		if err != nil {
			rep.Lost = append(rep.Lost, err.Error())
			return nil
		}
		ops = append(ops, storedOp{e, seq})
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("boltjournal: repair %s: nothing to rebuild from: %w", path, openError("repair", path, err))
	}
	rep.Lost = append(lost, rep.Lost...)
	rep.Reason = verr.Error()
	rep.Backup = path + ".damaged-" + cfg.now().UTC().Format("20060102T150405.000000000Z")
	if err := copyFile(io.NewSectionReader(f, 0, size), rep.Backup); err != nil {
		return rep, fmt.Errorf("boltjournal: repair %s: keep a copy: %w", path, err)
	}
	if err := create(path, func(b *bolt.Bucket) error { return rebuild(ops, b, &rep) }); err != nil {
		return rep, fmt.Errorf("boltjournal: repair %s: %w", path, err)
	}
	rep.Repaired = true
	cfg.logger.Warn("boltjournal: repaired", "path", path, "backup", rep.Backup,
		"kept", rep.Kept, "lost", len(rep.Lost), "reason", rep.Reason)
	return rep, nil
}

// rebuild puts ops, read from a damaged database, in the empty ops bucket
// b. Of two ops holding the same idempotency key, the one that started
// first keeps it and the other is left out (and reported); ops that share a
// sequence number are numbered after all others.
func rebuild(ops []storedOp, b *bolt.Bucket, rep *RepairReport) error {
	slices.SortFunc(ops, func(a, b storedOp) int { return cmp.Compare(a.seq, b.seq) })
	keys := map[string]bool{}
	seqs := map[uint64]bool{}
	var maxSeq uint64
	var renumber []storedOp
	put := func(o storedOp) error {
		v, err := encodeOp(o.seq, &o.e)
		if err != nil {
			return err
		}
		rep.Kept++
		return b.Put([]byte(o.e.OpID), v)
	}
	for _, o := range ops {
		if k := o.e.IdempKey; k != "" {
			if keys[k] {
				rep.Lost = append(rep.Lost, fmt.Sprintf("op %q: idempotency key %q is held by an op that started earlier", o.e.OpID, k))
				continue
			}
			keys[k] = true
		}
		if seqs[o.seq] {
			renumber = append(renumber, o)
			continue
		}
		seqs[o.seq] = true
		maxSeq = max(maxSeq, o.seq)
		if err := put(o); err != nil {
			return err
		}
	}
	for _, o := range renumber {
		maxSeq++
		o.seq = maxSeq
		if err := put(o); err != nil {
			return err
		}
	}
	return b.SetSequence(maxSeq)
}

// copyFile copies in to a new file at dst and syncs it.
func copyFile(in io.Reader, dst string) error {
	out, err := createExcl(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = fsx.DataSync(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsx.OS{}.SyncDir(filepath.Dir(dst))
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// Stats counts what the journal holds, without the checks of Verify. It
// has the fields of the file journal's FileStats that a database has too
// (Path, Size, Ops, InFlight, Keys), but unlike FileJournal.Stats, which
// returns counters the file journal keeps in memory, it reads the database
// in a transaction: hence its context and its error.
func (j *Journal) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Path: j.path}
	err := j.view(ctx, "stats", func(tx *bolt.Tx) error {
		st.Ops = tx.Bucket(bucketOps).Stats().KeyN
		return nil
	})
	j.memMu.Lock()
	st.InFlight, st.Keys = j.mem.live, j.mem.nkeys
	j.memMu.Unlock()
	st.Size = fileSize(j.path)
	return st, err
}

// ScanFile reads and checks the journal database at path without changing
// it, as [Journal.Verify] does, and then calls visit (when not nil) with the
// latest state of every operation, in the order they started. It reads the
// file itself, without pruning anything, and fails with [journal.ErrLocked]
// while another process has the journal open. Damage, or a file that is not
// a journal database, is reported as an error matching [journal.ErrCorrupt].
func ScanFile(ctx context.Context, path string, visit func(journal.Entry) error) (Stats, error) {
	st := Stats{Path: path, Size: -1}
	// Reading needs none of the checks that guard the journal's writes
	// (fsx.OS.Resolve); only the links are resolved.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return st, openError("scan", path, err)
	}
	f, fi, err := openDBFile(real, readShared)
	if err != nil {
		return st, openError("scan", path, err)
	}
	defer f.Close()
	st.Size = fi.Size()
	ops, err := verifyFile(ctx, f, st.Size)
	if err != nil {
		return st, openError("scan", path, err)
	}
	sorted := make([]storedOp, 0, len(ops))
	for _, o := range ops {
		sorted = append(sorted, o)
		if !o.e.State.Terminal() {
			st.InFlight++
		}
		if o.e.IdempKey != "" {
			st.Keys++
		}
	}
	st.Ops = len(ops)
	slices.SortFunc(sorted, func(a, b storedOp) int { return cmp.Compare(a.seq, b.seq) })
	if visit != nil {
		for _, o := range sorted {
			if err := visit(o.e); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// verifyFile checks the database file f, of size bytes, as checkDB does,
// and that no two ops share a sequence number or an idempotency key. It
// returns the ops by ID. What it finds wrong is a *damage.
func verifyFile(ctx context.Context, f *os.File, size int64) (map[string]storedOp, error) {
	ops := map[string]storedOp{}
	seqs := map[uint64]string{}
	keys := map[string]string{}
	err := checkDB(f, size, func(e journal.Entry, seq uint64) error {
		if len(ops)&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if other, dup := seqs[seq]; dup {
			return damagef(-1, "ops %q and %q share sequence %d", other, e.OpID, seq)
		}
		seqs[seq] = e.OpID
		if key := e.IdempKey; key != "" {
			if other, dup := keys[key]; dup {
				return damagef(-1, "ops %q and %q both hold idempotency key %q", other, e.OpID, key)
			}
			keys[key] = e.OpID
		}
		ops[e.OpID] = storedOp{e, seq}
		return nil
	})
	return ops, err
}
