package boltjournal

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/guestward/guestward/internal/fsx"
	"github.com/guestward/guestward/journal"
)

// The database layout, version 1. Every op ID and key is stored as its
// bytes; seq is a uint64 big-endian (the ops bucket's sequence, so it orders
// operations by start); at is a time as 8 big-endian bytes that sort in time
// order (Unix nanoseconds with the sign bit flipped).
//
//	meta      "format" → "guestward-journal-bolt/1"
//	ops       op ID → seq + the op's latest merged entry (journal.Entry.MarshalBinary)
//	inflight  seq → op ID, for every op not terminal
//	keys      idempotency key → op ID of the op that holds it
//	done      at + op ID → "", terminal ops under WithRetention
//	applied   at + op ID → "", succeeded ops holding a key, under WithKeyRetention
var (
	bucketMeta     = []byte("meta")
	bucketOps      = []byte("ops")
	bucketInflight = []byte("inflight")
	bucketKeys     = []byte("keys")
	bucketDone     = []byte("done")
	bucketApplied  = []byte("applied")
	allBuckets     = [][]byte{bucketMeta, bucketOps, bucketInflight, bucketKeys, bucketDone, bucketApplied}

	keyFormat   = []byte("format")
	formatValue = []byte("guestward-journal-bolt/1")
)

// Sibling files of a journal at path. Only the lock file outlives a call.
const (
	lockSuffix    = ".lock"
	createSuffix  = ".create"
	compactSuffix = ".compact"
)

// pruneBatch bounds the expired operations one append prunes, so that a
// long-overdue retention pass does not stall a single writer.
const pruneBatch = 8

// Journal is a [journal.Journal] stored in a bbolt database. Open one with
// [Open].
//
// A Journal is safe for concurrent use. Only one Journal, in one process, may
// have a given database open at a time.
type Journal struct {
	path string
	dir  string
	cfg  config
	log  *slog.Logger
	lock io.Closer

	// mu is held shared by every call that uses db, for as long as it
	// does, and exclusively by Compact (which replaces db) and Close.
	mu     sync.RWMutex
	db     *bolt.DB
	closed bool
	broken error // set when Compact could not reopen the database

	active atomic.Int64 // appends in progress
}

var (
	_ journal.Journal   = (*Journal)(nil)
	_ journal.KeyLookup = (*Journal)(nil)
)

// Open opens the journal database at path, creating it when it does not
// exist or is empty. Creation is crash-safe: the database is initialised
// under path+".create", synced, renamed into place, and the directory synced,
// so path never names a half-made database. Expired terminal operations are
// pruned (see [WithRetention]).
//
// A database bbolt finds damaged, or one that is not a guestward journal,
// fails with an error matching [journal.ErrCorrupt]; see [Repair]. A
// database that another process has open fails with [journal.ErrLocked].
//
// Next to path the journal keeps path+".lock" (an advisory lock, left in
// place) and, while they are being written, path+".create" and
// path+".compact"; leftovers of those from a crash are removed.
func Open(path string, opts ...Option) (*Journal, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if path == "" {
		return nil, errors.New("boltjournal: open: empty path")
	}
	path = filepath.Clean(path)
	lock, err := takeLock(path)
	if err != nil {
		return nil, err
	}
	j := &Journal{path: path, dir: filepath.Dir(path), cfg: cfg, log: loggerOrDiscard(cfg.logger), lock: lock}
	if err := j.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return j, nil
}

func takeLock(path string) (io.Closer, error) {
	lock, err := fsx.OS{}.Lock(path + lockSuffix)
	if errors.Is(err, fsx.ErrLocked) {
		return nil, fmt.Errorf("boltjournal: open %s: %w", path, journal.ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("boltjournal: open %s: %w", path, err)
	}
	return lock, nil
}

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

func (j *Journal) load() error {
	for _, leftover := range []string{j.path + createSuffix, j.path + compactSuffix} {
		if err := os.Remove(leftover); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("boltjournal: open %s: remove leftover: %w", j.path, err)
		}
	}
	fi, err := os.Stat(j.path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0 && fi.Mode().IsRegular():
		if err := create(j.path); err != nil {
			return fmt.Errorf("boltjournal: create %s: %w", j.path, err)
		}
	case err != nil:
		return fmt.Errorf("boltjournal: open %s: %w", j.path, err)
	}
	db, err := openDB(j.path, j.cfg)
	if err != nil {
		return err
	}
	j.db = db
	if err := j.pruneAll(); err != nil {
		db.Close()
		return err
	}
	return nil
}

func boltOptions(cfg config) *bolt.Options {
	return &bolt.Options{
		// Our lock file already excludes other guestward processes;
		// bbolt's own lock only waits for other tools.
		Timeout:      100 * time.Millisecond,
		NoSync:       cfg.noSync,
		FreelistType: bolt.FreelistMapType,
	}
}

// create makes an empty journal database at path, crash-safely.
func create(path string) error {
	tmp := path + createSuffix
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, formatValue)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = fsx.OS{}.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// openDB opens an existing journal database and checks that it is one.
func openDB(path string, cfg config) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, boltOptions(cfg))
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("boltjournal: open %s: %w", path, journal.ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, &journal.CorruptError{Path: path, Offset: -1, Reason: err.Error()}
	case err != nil:
		return nil, fmt.Errorf("boltjournal: open %s: %w", path, err)
	}
	err = safeView(db, func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("no %q bucket: not a guestward journal database", name)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keyFormat); string(v) != string(formatValue) {
			return fmt.Errorf("format %q is not %q", v, formatValue)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, corrupt(path, err)
	}
	db.MaxBatchSize = cfg.maxBatchSize
	db.MaxBatchDelay = cfg.maxBatchDelay
	return db, nil
}

func corrupt(path string, err error) error {
	var ce *journal.CorruptError
	if errors.As(err, &ce) {
		if ce.Path == "" {
			ce.Path = path
		}
		return ce
	}
	return &journal.CorruptError{Path: path, Offset: -1, Reason: err.Error()}
}

// errPanic marks a panic inside bbolt, which it raises on some kinds of
// damaged pages.
type errPanic struct{ v any }

func (e errPanic) Error() string {
	return fmt.Sprintf("bbolt panicked, the database is likely damaged: %v", e.v)
}

func safeView(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errPanic{p}
		}
	}()
	return db.View(fn)
}

func safeUpdate(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errPanic{p}
		}
	}()
	return db.Update(fn)
}

func safeBatch(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errPanic{p}
		}
	}()
	return db.Batch(fn)
}

// Path returns the database's file path.
func (j *Journal) Path() string { return j.path }

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func timeKey(at time.Time, opID string) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(opID)), uint64(at.UnixNano())^(1<<63))
	return append(k, opID...)
}

func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k)^(1<<63))).UTC()
}

func encodeOp(seq uint64, e *journal.Entry) ([]byte, error) {
	return e.AppendBinary(binary.BigEndian.AppendUint64(make([]byte, 0, 256), seq))
}

func decodeOp(opID string, v []byte) (journal.Entry, uint64, error) {
	var e journal.Entry
	if len(v) < 8 {
		return e, 0, fmt.Errorf("op %q: stored value of %d bytes is too short", opID, len(v))
	}
	if err := e.UnmarshalBinary(v[8:]); err != nil {
		return e, 0, fmt.Errorf("op %q: %w", opID, err)
	}
	if e.OpID != opID {
		return e, 0, fmt.Errorf("op %q: stored entry names op %q", opID, e.OpID)
	}
	return e, binary.BigEndian.Uint64(v), nil
}

// Append implements [journal.Journal]. It commits through bbolt's Batch when
// other appends are in progress, so they share one transaction and one sync,
// and in a transaction of its own otherwise. Once a record is submitted, an
// ending ctx makes Append return early, but the commit goes on.
func (j *Journal) Append(ctx context.Context, e journal.Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltjournal: append op %q: %w", e.OpID, err)
	}
	if e.At.IsZero() {
		e.At = j.cfg.now()
	}
	e.At = e.At.UTC()
	if err := e.Validate(); err != nil {
		return err
	}
	j.mu.RLock()
	if err := j.usable(); err != nil {
		j.mu.RUnlock()
		return fmt.Errorf("boltjournal: append op %q: %w", e.OpID, err)
	}
	db := j.db
	lone := j.active.Add(1) == 1
	if ctx.Done() == nil {
		defer j.mu.RUnlock()
		defer j.active.Add(-1)
		return j.commit(db, e, lone)
	}
	res := make(chan error, 1)
	go func() {
		// The read lock is held until the commit ends, so Close and
		// Compact wait for it.
		defer j.mu.RUnlock()
		defer j.active.Add(-1)
		res <- j.commit(db, e, lone)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("boltjournal: append op %q: %w (the record was submitted and may still become durable)", e.OpID, ctx.Err())
	}
}

func (j *Journal) usable() error {
	if j.closed {
		return journal.ErrClosed
	}
	return j.broken
}

// commit runs the append's transaction. With Batch the function may run
// more than once (bbolt reruns a batch when one of its functions fails); it
// does all its work inside tx, so a rerun starts from the rolled-back state
// and never duplicates a record. A rejected record is reported through
// reject, not as the function's error, so that it does not force the other
// appends of its batch to rerun.
func (j *Journal) commit(db *bolt.DB, e journal.Entry, lone bool) error {
	var reject error
	fn := func(tx *bolt.Tx) error {
		reject = nil
		if err := j.cfg.fp.Eval("append/tx"); err != nil {
			return err
		}
		var err error
		reject, err = j.put(tx, e)
		return err
	}
	var err error
	if lone {
		err = safeUpdate(db, fn)
	} else {
		err = safeBatch(db, fn)
	}
	if err != nil {
		var ce *journal.CorruptError
		if errors.As(err, &ce) || errors.As(err, new(errPanic)) {
			return corrupt(j.path, err)
		}
		return fmt.Errorf("boltjournal: %s: append op %q: %w", j.path, e.OpID, err)
	}
	return reject
}

// put applies one record inside tx. It returns the rule the record breaks
// (nothing written), or a fatal error.
func (j *Journal) put(tx *bolt.Tx, e journal.Entry) (reject, err error) {
	ops := tx.Bucket(bucketOps)
	var prev *journal.Entry
	var seq uint64
	if v := ops.Get([]byte(e.OpID)); v != nil {
		p, s, err := decodeOp(e.OpID, v)
		if err != nil {
			return nil, corrupt(j.path, err)
		}
		prev, seq = &p, s
	}
	merged, err := journal.Merge(prev, e)
	if err != nil {
		return err, nil
	}
	if prev == nil {
		if e.IdempKey != "" {
			if owner := tx.Bucket(bucketKeys).Get([]byte(e.IdempKey)); owner != nil {
				return fmt.Errorf("journal: op %q: %w: key %q belongs to op %q", e.OpID, journal.ErrKeyConflict, e.IdempKey, owner), nil
			}
			if err := tx.Bucket(bucketKeys).Put([]byte(e.IdempKey), []byte(e.OpID)); err != nil {
				return nil, err
			}
		}
		if seq, err = ops.NextSequence(); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bucketInflight).Put(seqKey(seq), []byte(e.OpID)); err != nil {
			return nil, err
		}
	}
	v, err := encodeOp(seq, &merged)
	if err != nil {
		return nil, err
	}
	if err := ops.Put([]byte(e.OpID), v); err != nil {
		return nil, err
	}
	if merged.State.Terminal() {
		if err := tx.Bucket(bucketInflight).Delete(seqKey(seq)); err != nil {
			return nil, err
		}
		if err := tx.Bucket(retentionBucket(&merged)).Put(timeKey(merged.At, merged.OpID), []byte{}); err != nil {
			return nil, err
		}
	}
	if _, err := j.prune(tx, j.cfg.now(), pruneBatch); err != nil {
		return nil, err
	}
	return nil, nil
}

func retentionBucket(e *journal.Entry) []byte {
	if e.State == journal.Succeeded && e.IdempKey != "" {
		return bucketApplied
	}
	return bucketDone
}

// prune deletes up to limit expired terminal operations (limit <= 0: all)
// and returns how many it deleted.
func (j *Journal) prune(tx *bolt.Tx, now time.Time, limit int) (int, error) {
	n := 0
	for _, r := range []struct {
		bucket []byte
		keep   time.Duration
	}{{bucketDone, j.cfg.retention}, {bucketApplied, j.cfg.keyRetention}} {
		if r.keep < 0 {
			continue
		}
		cutoff := now.Add(-r.keep)
		b := tx.Bucket(r.bucket)
		var victims [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && (limit <= 0 || n+len(victims) < limit); k, _ = c.Next() {
			if len(k) < 8 || !keyTime(k).Before(cutoff) {
				break
			}
			victims = append(victims, append([]byte(nil), k...))
		}
		for _, k := range victims {
			opID := k[8:]
			if err := b.Delete(k); err != nil {
				return n, err
			}
			v := tx.Bucket(bucketOps).Get(opID)
			if v == nil {
				continue
			}
			e, _, err := decodeOp(string(opID), v)
			if err != nil {
				return n, corrupt(j.path, err)
			}
			if !e.State.Terminal() || !e.At.Equal(keyTime(k)) {
				// The op ID was reused after an earlier prune
				// left a stale index entry; keep the newer op.
				continue
			}
			if err := tx.Bucket(bucketOps).Delete(opID); err != nil {
				return n, err
			}
			if e.IdempKey != "" {
				keys := tx.Bucket(bucketKeys)
				if owner := keys.Get([]byte(e.IdempKey)); string(owner) == string(opID) {
					if err := keys.Delete([]byte(e.IdempKey)); err != nil {
						return n, err
					}
				}
			}
			n++
		}
	}
	return n, nil
}

func (j *Journal) pruneAll() error {
	var n int
	err := safeUpdate(j.db, func(tx *bolt.Tx) error {
		var err error
		n, err = j.prune(tx, j.cfg.now(), 0)
		return err
	})
	if err != nil {
		return corrupt(j.path, err)
	}
	if n > 0 {
		j.log.Info("boltjournal: pruned expired operations", "path", j.path, "ops", n)
	}
	return nil
}

// view runs fn in a read transaction, unless ctx has ended or the journal
// is closed.
func (j *Journal) view(ctx context.Context, what string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltjournal: %s: %w", what, err)
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if err := j.usable(); err != nil {
		return fmt.Errorf("boltjournal: %s: %w", what, err)
	}
	if err := safeView(j.db, fn); err != nil {
		return corrupt(j.path, err)
	}
	return nil
}

func getOp(tx *bolt.Tx, opID string) (journal.Entry, bool, error) {
	v := tx.Bucket(bucketOps).Get([]byte(opID))
	if v == nil {
		return journal.Entry{}, false, nil
	}
	e, _, err := decodeOp(opID, v)
	return e, err == nil, err
}

// Latest implements [journal.Journal].
func (j *Journal) Latest(ctx context.Context, opID string) (e journal.Entry, ok bool, err error) {
	err = j.view(ctx, fmt.Sprintf("latest of op %q", opID), func(tx *bolt.Tx) error {
		e, ok, err = getOp(tx, opID)
		return err
	})
	return e, ok, err
}

// InFlight implements [journal.Journal].
func (j *Journal) InFlight(ctx context.Context) ([]journal.Entry, error) {
	var out []journal.Entry
	err := j.view(ctx, "in-flight ops", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInflight).ForEach(func(k, v []byte) error {
			e, ok, err := getOp(tx, string(v))
			if err != nil {
				return err
			}
			if !ok || e.State.Terminal() {
				return fmt.Errorf("in-flight index names op %q, which is missing or terminal", v)
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// AlreadyApplied implements [journal.Journal].
func (j *Journal) AlreadyApplied(ctx context.Context, idempKey string) (bool, error) {
	e, ok, err := j.LatestByKey(ctx, idempKey)
	return ok && e.State == journal.Succeeded, err
}

// LatestByKey implements [journal.KeyLookup].
func (j *Journal) LatestByKey(ctx context.Context, idempKey string) (e journal.Entry, ok bool, err error) {
	err = j.view(ctx, fmt.Sprintf("key %q", idempKey), func(tx *bolt.Tx) error {
		if idempKey == "" {
			return nil
		}
		owner := tx.Bucket(bucketKeys).Get([]byte(idempKey))
		if owner == nil {
			return nil
		}
		e, ok, err = getOp(tx, string(owner))
		if err == nil && !ok {
			return fmt.Errorf("key %q names op %q, which is missing", idempKey, owner)
		}
		return err
	})
	return e, ok, err
}

// Ops returns the latest state of every operation the journal holds, in the
// order they started.
func (j *Journal) Ops(ctx context.Context) ([]journal.Entry, error) {
	var out []journal.Entry
	type seqEntry struct {
		seq uint64
		e   journal.Entry
	}
	var all []seqEntry
	err := j.view(ctx, "ops", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOps).ForEach(func(k, v []byte) error {
			e, seq, err := decodeOp(string(k), v)
			if err != nil {
				return err
			}
			all = append(all, seqEntry{seq, e})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b seqEntry) int { return cmp.Compare(a.seq, b.seq) })
	for _, s := range all {
		out = append(out, s.e)
	}
	return out, nil
}

// Close implements [journal.Journal]. It waits for appends in progress.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	var err error
	if j.db != nil {
		err = j.db.Close()
	}
	if lerr := j.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("boltjournal: close %s: %w", j.path, err)
	}
	return nil
}
