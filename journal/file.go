package journal

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/guestward/guestward/internal/fsx"
)

// Sibling files of a journal at path. Only the lock file outlives a call.
const (
	lockSuffix    = ".lock"    // held while the journal is open
	createSuffix  = ".create"  // a new journal, before it is renamed into place
	compactSuffix = ".compact" // a compacted journal, before it is renamed into place
)

// FileJournal is a [Journal] stored in one append-only file. See the package
// documentation for the file's life: group commit, recovery, compaction,
// repair. Open one with [OpenFile].
//
// A FileJournal is safe for concurrent use. Only one FileJournal, in one
// process, may have a given file open at a time: OpenFile takes a lock.
type FileJournal struct {
	path string
	dir  string
	cfg  fileConfig
	log  *slog.Logger
	lock io.Closer

	mu          sync.Mutex
	idx         *index             // acknowledged state; only the token holder changes it
	pendingOps  map[string]pending // ops with queued records: state after the last one
	pendingKeys map[string]string  // idempotency keys claimed by queued records
	recNo       uint64             // records accepted, durable or queued
	open        *batch             // the batch Append adds to
	spareBuf    []byte
	spareRecs   []pending
	broken      error // sticky write failure
	closed      bool
	size        int64 // bytes in the file; written by the token holder under mu
	compactions int
	batches     int64 // batches written since open
	appended    int64 // records written since open

	// The commit token. Its holder is the only one writing to the file,
	// changing idx, or compacting. An Append that finds the token free
	// takes it and commits its own batch at once, on its own goroutine,
	// which spares a lone writer any hand-off; when it is done and more
	// work waits (records queued meanwhile, a compaction), it passes the
	// token to the writer goroutine, which works until none is left. So
	// under load the writer writes batch after batch, and the appenders
	// only queue and wait.
	held        bool
	idle        *sync.Cond // on mu; signalled when the token becomes free
	compactReqs []compactRequest

	// entering counts the appends between their start and the moment
	// their record is queued.
	entering atomic.Int64

	kick chan struct{} // capacity 1: the token was passed to the writer
	stop chan struct{}
	done chan struct{} // closed when the writer has returned

	// Owned by the token holder.
	f             fsx.File
	alloc         int64 // bytes in the file, counting the zeros preallocated past size
	zeros         []byte
	compactedSize int64
	nextCompact   int64 // size at which the next automatic compaction is due
	lingered      int   // yields before the batch now open is sealed
}

// Failpoints (tests only; see withFailpoints), in the order a record meets
// them: "append/queued" after Append queued its record; "append/before-write"
// and "append/before-sync" in the token holder, for each batch; and, in a
// compaction, "compact/before-write", "compact/before-sync",
// "compact/before-rename" and "compact/before-syncdir". An error from one of
// the append points fails the batch as a write error would.

// batch is a group of records written with one write and made durable with
// one sync.
type batch struct {
	buf  []byte // frames, sealed just before the write
	recs []pending
	done chan struct{} // closed once err is final
	err  error
}

// pending is an op's state after a queued record, and that record's number.
type pending struct {
	st    opState
	recNo uint64
}

// compactRequest asks the token holder to compact.
type compactRequest struct {
	stop   func() error
	result chan error // capacity 1
}

var (
	_ Journal   = (*FileJournal)(nil)
	_ KeyLookup = (*FileJournal)(nil)
	_ OpLister  = (*FileJournal)(nil)
)

// OpenFile opens the journal stored in the file at path, creating it (with
// mode 0600) when it does not exist, and replays it. An empty file at path
// is refused with a [*CorruptError]: a journal this package created always
// holds its header, so an empty file lost its contents, and starting afresh
// would forget which idempotency keys were spent.
//
// A torn final write left by a crash is dropped and the file truncated to its
// last intact record. Damage anywhere else fails with a [*CorruptError]
// (matching [ErrCorrupt]) that gives the byte offset; see [RepairFile].
//
// One FileJournal at a time, in this process or another, may have a journal
// open, whatever path each was given: OpenFile fails with [ErrLocked] while
// the file is open elsewhere, through the same path or another (a symbolic
// link to it or to a directory above it, a relative path, one with ".."
// components, a hard link, or the name it was renamed to). It fails with
// [ErrUnsafePath] when someone other than the caller's user and root could
// change which file path names, or write the file: see "Where a journal may
// live" in the package documentation. A journal file with more than one
// name (hard links) is refused with [ErrUnsafePath] too: compaction replaces
// the file, which would leave the other names holding a stale copy.
//
// Symbolic links in path are resolved once, here: the journal then works
// with the file the links led to, and compaction replaces that file, not
// the links. [FileJournal.Path] says which file it is.
//
// Next to that file the journal keeps its name plus ".lock" (an advisory
// lock, left in place) and, while they are being written, its name plus
// ".create" and ".compact"; leftovers of those two from a crash are removed.
func OpenFile(path string, opts ...FileOption) (*FileJournal, error) {
	cfg := defaultFileConfig()
	for _, o := range opts {
		if o != nil {
			o.applyFile(&cfg)
		}
	}
	if path == "" {
		return nil, errors.New("journal: open: empty path")
	}
	real, lock, err := claim(cfg.fs, "open", path)
	if err != nil {
		return nil, err
	}
	j := &FileJournal{
		path:        real,
		dir:         filepath.Dir(real),
		cfg:         cfg,
		log:         cfg.logger,
		lock:        lock,
		pendingOps:  make(map[string]pending),
		pendingKeys: make(map[string]string),
		open:        &batch{done: make(chan struct{})},
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	j.idle = sync.NewCond(&j.mu)
	if err := j.load(); err != nil {
		lock.Close()
		return nil, err
	}
	go j.run()
	return j, nil
}

// ErrUnsafePath is returned by [OpenFile] and [RepairFile] when the journal's
// path, or the file itself, could be changed by someone other than the
// caller's user and root, or reaches the journal file by a name that is not
// its only one; and by [FileJournal.Compact] when the open journal file has
// gained another name or lost the one it was opened by. The error says which
// path and why.
var ErrUnsafePath = errors.New("journal: unsafe path")

// Ownership of a journal. Two locks make the caller the journal's one owner,
// and each covers what the other cannot:
//
//   - the lock file, named after the journal file's resolved path, serialises
//     everyone who reaches the journal by that path, however they spelled it
//     (the links are resolved first). It outlives compaction, which replaces
//     the journal file but not the lock file: an opener that comes while the
//     old file is being swapped for the new one finds it held.
//   - a lock on the journal file itself (its inode, see [fsx.File.TryLock])
//     catches an opener that reaches the same file by another name: a hard
//     link, or the name the file was renamed to while open. The owner takes
//     it on every file it makes the journal, before that file gets the
//     journal's name, and holds it until the file is replaced or closed.
//
// A lock on the file alone would not do, since compaction swaps the file: an
// opener could open the old file just before the swap and lock it just
// after, and own a file nobody will read again. A lock file alone would not
// do either: two names for one file are two lock files. Compaction must also
// not split a journal whose file has another name, or no longer has its
// own: the new file would get the journal's name and the old one would live
// on under the other, as a stale journal a second owner could open. So the
// owner checks, before each swap, that its file still has exactly one name,
// the journal's.

// claim resolves path and takes the journal's lock file. The returned path
// is the journal file's, with links resolved.
func claim(fsys fsx.FS, op, path string) (string, io.Closer, error) {
	real, err := fsys.Resolve(path)
	if err != nil {
		return "", nil, ownerError(op, path, err)
	}
	lock, err := fsys.Lock(real + lockSuffix)
	if err != nil {
		return "", nil, ownerError(op, real, err)
	}
	return real, lock, nil
}

// ownerError maps fsx's refusals to the journal's sentinels.
func ownerError(op, path string, err error) error {
	switch {
	case errors.Is(err, fsx.ErrLocked):
		return fmt.Errorf("journal: %s %s: %w", op, path, ErrLocked)
	case errors.Is(err, fsx.ErrUnsafe):
		return fmt.Errorf("journal: %s %s: %w: %w", op, path, ErrUnsafePath, err)
	}
	return fmt.Errorf("journal: %s %s: %w", op, path, err)
}

// openOwned opens the existing journal file at path (resolved by claim,
// whose lock file the caller holds) for reading and writing, locks the file
// itself, and checks that it is a private regular file whose only name is
// path.
func openOwned(fsys fsx.FS, op, path string) (fsx.File, error) {
	f, err := fsys.OpenFile(path, os.O_RDWR|fsx.NoFollow, 0)
	if err != nil {
		return nil, ownerError(op, path, err)
	}
	err = f.TryLock()
	var fi os.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	if err == nil {
		err = fsx.CheckFile(path, fi)
	}
	if err == nil {
		err = onlyName(fsys, path, fi)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, errReplaced) {
			// Only another owner replaces the file: it reached it by
			// another name, and holds it.
			err = fmt.Errorf("%w: %w", fsx.ErrLocked, err)
		}
		return nil, ownerError(op, path, err)
	}
	return f, nil
}

var errReplaced = errors.New("the journal file was replaced while being opened")

// onlyName checks that fi, an open journal file, has one name, and that
// path is it. It returns an error matching fsx.ErrUnsafe, or errReplaced
// when path names another file.
func onlyName(fsys fsx.FS, path string, fi os.FileInfo) error {
	if n, ok := fsx.Links(fi); ok && n != 1 {
		return &fsx.UnsafeError{Path: path, Reason: fmt.Sprintf("the journal file has %d names (hard links); "+
			"compaction would leave all but one holding a stale copy", n)}
	}
	pfi, err := fsys.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &fsx.UnsafeError{Path: path, Reason: "the journal file is no longer at its path (renamed or removed while open)"}
	}
	if err != nil {
		return err
	}
	if !fsx.SameFile(fi, pfi) {
		return errReplaced
	}
	return nil
}

func (j *FileJournal) load() error {
	for _, leftover := range []string{j.path + createSuffix, j.path + compactSuffix} {
		if err := j.cfg.fs.Remove(leftover); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal: open %s: remove leftover: %w", j.path, err)
		}
	}
	fi, err := j.cfg.fs.Stat(j.path)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		// Refused before it is opened: opening a FIFO or a device can
		// block, or do worse.
		return ownerError("open", j.path, fsx.CheckFile(j.path, fi))
	case err == nil && fi.Size() == 0:
		// create never leaves an empty file at path (it renames a file
		// holding the header into place), so an empty one lost its
		// contents, or is not ours. Starting afresh there would forget
		// which idempotency keys were spent.
		return &CorruptError{Path: j.path, Offset: 0, Reason: "empty file: a journal always holds at least its header; remove the file to start a new, empty journal"}
	case errors.Is(err, fs.ErrNotExist):
		if err := j.create(); err != nil {
			return fmt.Errorf("journal: create %s: %w", j.path, err)
		}
	case err != nil:
		return fmt.Errorf("journal: open %s: %w", j.path, err)
	}
	f, err := openOwned(j.cfg.fs, "open", j.path)
	if err != nil {
		return err
	}
	idx, res, recs, err := replayFile(nil, f, j.path, nil)
	if err != nil {
		f.Close()
		return err
	}
	if res.torn != "" {
		j.log.Warn("journal: dropping the torn final write left by a crash",
			"path", j.path, "offset", res.end, "reason", res.torn)
		err := f.Truncate(res.end)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("journal: %s: truncate torn tail at offset %d: %w", j.path, res.end, err)
		}
	}
	alloc := res.end
	if res.torn == "" {
		// What follows the log, if anything, is preallocated zeros.
		if fi, err := f.Stat(); err == nil && fi.Size() > alloc {
			alloc = fi.Size()
		}
	}
	j.f, j.idx, j.size, j.alloc, j.recNo = f, idx, res.end, alloc, recs
	return nil
}

// create writes an empty journal next to path and renames it into place, so
// that path never names a file without a complete header. load has removed
// any leftover at the temporary name; one that appears since is refused, not
// followed.
func (j *FileJournal) create() error {
	tmp := j.path + createSuffix
	f, err := j.cfg.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|fsx.NoFollow, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(appendFileHeader(nil))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = j.cfg.fs.Rename(tmp, j.path)
	}
	if err == nil {
		err = j.cfg.fs.SyncDir(j.dir)
	}
	return err
}

// replayFile checks the header of an open journal file and replays its
// records into a new index, calling visit (when not nil) for each record.
// It returns the number of records replayed.
func replayFile(stop func() error, f fsx.File, path string, visit visitFunc) (*index, scanResult, uint64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, scanResult{}, 0, fmt.Errorf("journal: %s: %w", path, err)
	}
	size := fi.Size()
	h := make([]byte, fileHeaderSize)
	n, err := f.ReadAt(h, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, scanResult{}, 0, fmt.Errorf("journal: %s: read header: %w", path, err)
	}
	if err := checkFileHeader(h[:n]); err != nil {
		return nil, scanResult{}, 0, &CorruptError{Path: path, Offset: 0, Reason: err.Error()}
	}
	idx := newIndexSized(int(size / 300))
	idx.replaying = true
	// An op's records lie close together in the log, so most records find
	// their op among the recently started ones, in a small table that
	// stays in the CPU's cache, rather than in the big one.
	recent := newRecentOps(4096)
	var seq uint64
	res, err := scanLog(stop, f, size, func(r *scanRec) error {
		seq++
		var st *opState
		if r.id != nil {
			// The map lookups with string(r.id) do not allocate.
			var ok bool
			if st, ok = recent.cur[string(r.id)]; !ok {
				if st, ok = recent.prev[string(r.id)]; !ok {
					st = idx.ops[string(r.id)]
				}
			}
			if st != nil {
				r.e.OpID = st.e.OpID
			} else {
				r.e.OpID = string(r.id)
			}
		} else {
			// A record that starts an op: the op should be new, and
			// every recent op is in the index too.
			st = idx.ops[r.e.OpID]
		}
		st2, err := idx.replayAt(st, r.fresh, &r.e, r.params, r.snapshot, seq)
		if err != nil {
			return err
		}
		if st == nil {
			recent.put(st2)
		}
		if visit != nil {
			return visit(r)
		}
		return nil
	})
	idx.buildInflight()
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Path = path
			return nil, res, 0, ce
		}
		return nil, res, 0, fmt.Errorf("journal: %s: %w", path, err)
	}
	return idx, res, seq, nil
}

// Path returns the journal's file path: the path given to [OpenFile], made
// absolute, with its symbolic links resolved. It names the file the journal
// reads, and the one compaction replaces.
func (j *FileJournal) Path() string { return j.path }

// Append implements [Journal]. Concurrent calls share writes and syncs
// (group commit); each returns once its own record is durable. Records are
// stored, and become visible to readers, in the order Append accepted them.
//
// An Append that finds no write in progress writes and syncs its record
// itself, on the caller's goroutine, and returns when that is done: ctx is
// not consulted during the write (no sync can be interrupted anyway). One
// that finds a write in progress queues its record for the next batch and
// returns early, as [Journal.Append] says, if ctx ends while it waits.
//
// After a write or sync fails, the journal accepts no more records (the
// state of the file is unknown): every later Append returns an error wrapping
// the first failure. Close it and open it again, which recovers from the
// file.
func (j *FileJournal) Append(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("journal: append op %q: %w", e.OpID, err)
	}
	j.entering.Add(1)
	queued := false
	defer func() {
		if !queued {
			j.entering.Add(-1)
		}
	}()
	e = normalizeAt(e, j.cfg.now)
	if err := e.Validate(); err != nil {
		return err
	}
	params := encodeParams(e.Params)

	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return fmt.Errorf("journal: append op %q: %w", e.OpID, ErrClosed)
	}
	if j.broken != nil {
		err := j.broken
		j.mu.Unlock()
		return fmt.Errorf("journal: append op %q: journal unusable after a write failure: %w", e.OpID, err)
	}
	prev := j.tipLocked(e.OpID)
	next, err := nextState(prev, &e, params)
	if err == nil && prev == nil && e.IdempKey != "" {
		if owner := j.keyOwnerLocked(e.IdempKey); owner != "" {
			err = keyConflict(e.OpID, e.IdempKey, owner)
		}
	}
	if err != nil {
		j.mu.Unlock()
		return err
	}
	j.recNo++
	if prev == nil {
		next.seq = j.recNo
		if e.IdempKey != "" {
			j.pendingKeys[e.IdempKey] = e.OpID
		}
	}
	b := j.open
	b.buf = appendFrame(b.buf, kindRecord, &e)
	b.recs = append(b.recs, pending{st: next, recNo: j.recNo})
	j.pendingOps[e.OpID] = pending{st: next, recNo: j.recNo}
	queued = true
	j.entering.Add(-1)
	if !j.held {
		// Nobody is writing: commit this batch here and now.
		j.held = true
		b, broken := j.sealLocked()
		j.mu.Unlock()
		j.cfg.fp.Eval("append/queued")
		j.commit(b, broken)
		j.release()
		return b.err
	}
	j.mu.Unlock()
	j.cfg.fp.Eval("append/queued")

	select {
	case <-b.done:
		return b.err
	default:
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return fmt.Errorf("journal: append op %q: %w (the record was queued and may still become durable)", e.OpID, ctx.Err())
	}
}

// tipLocked returns the latest state of opID counting queued records, or
// nil when the journal holds no record of the op.
func (j *FileJournal) tipLocked(opID string) *opState {
	if p, ok := j.pendingOps[opID]; ok {
		return &p.st
	}
	return j.idx.ops[opID]
}

func (j *FileJournal) keyOwnerLocked(key string) string {
	if owner, ok := j.pendingKeys[key]; ok {
		return owner
	}
	return j.idx.keys[key]
}

// sealLocked takes the open batch for writing and opens a new one. It also
// returns the journal's write failure, if any. j.mu is held.
func (j *FileJournal) sealLocked() (*batch, error) {
	b := j.open
	j.open = &batch{buf: j.spareBuf[:0], recs: j.spareRecs[:0], done: make(chan struct{})}
	j.spareBuf, j.spareRecs = nil, nil
	return b, j.broken
}

// release is called by the token holder when it is done: it passes the
// token to the writer goroutine when work waits, and frees it otherwise.
func (j *FileJournal) release() {
	j.mu.Lock()
	if len(j.open.recs) > 0 || len(j.compactReqs) > 0 || j.compactDue() {
		j.mu.Unlock()
		j.kick <- struct{}{} // never blocks: only the holder sends, and the writer takes it
		return
	}
	j.held = false
	j.idle.Broadcast()
	j.mu.Unlock()
}

// run is the writer goroutine. It works while it holds the token, which
// only release passes to it.
func (j *FileJournal) run() {
	defer close(j.done)
	for {
		select {
		case <-j.kick:
			j.drain()
		case <-j.stop:
			return
		}
	}
}

// drain does the waiting work and frees the token when none is left. A
// waiting Compact goes first, between two batches, so that a steady stream
// of appends cannot starve it.
func (j *FileJournal) drain() {
	for {
		j.mu.Lock()
		switch {
		case len(j.compactReqs) > 0:
			req := j.compactReqs[0]
			j.compactReqs = j.compactReqs[1:]
			j.mu.Unlock()
			req.result <- j.compact(req.stop)
		case len(j.open.recs) > 0:
			if j.lingerLocked() {
				continue
			}
			b, broken := j.sealLocked()
			j.mu.Unlock()
			j.commit(b, broken)
		case j.compactDue():
			j.mu.Unlock()
			j.autoCompact()
		default:
			j.held = false
			j.idle.Broadcast()
			j.mu.Unlock()
			return
		}
	}
}

// commit writes and syncs b, then makes its records visible and wakes its
// appenders.
func (j *FileJournal) commit(b *batch, broken error) {
	err := broken
	if err == nil {
		err = j.writeBatch(b.buf)
	}
	j.mu.Lock()
	if err != nil {
		if j.broken == nil {
			j.broken = err
			j.log.Error("journal: write failed; no more records accepted until reopened", "path", j.path, "err", err)
		}
		err = fmt.Errorf("journal: append: journal unusable after a write failure: %w", j.broken)
	} else {
		j.size += int64(len(b.buf))
		j.batches++
		j.appended += int64(len(b.recs))
		for i := range b.recs {
			r := &b.recs[i]
			id := r.st.e.OpID
			j.idx.apply(r.st)
			if p, ok := j.pendingOps[id]; ok && p.recNo == r.recNo {
				delete(j.pendingOps, id)
			}
			if k := r.st.e.IdempKey; k != "" && j.pendingKeys[k] == id {
				delete(j.pendingKeys, k)
			}
		}
	}
	clear(b.recs)
	j.spareBuf, j.spareRecs = b.buf[:0], b.recs[:0]
	b.buf, b.recs = nil, nil
	j.mu.Unlock()
	b.err = err
	close(b.done)
}

func (j *FileJournal) writeBatch(buf []byte) error {
	sealFrames(buf, j.size)
	if err := j.preallocate(j.size + int64(len(buf))); err != nil {
		return fmt.Errorf("journal: %s: preallocate: %w", j.path, err)
	}
	if err := j.cfg.fp.Eval("append/before-write"); err != nil {
		return fmt.Errorf("journal: %s: write: %w", j.path, err)
	}
	if _, err := j.f.WriteAt(buf, j.size); err != nil {
		return fmt.Errorf("journal: %s: write: %w", j.path, err)
	}
	if j.cfg.noSync {
		return nil
	}
	if err := j.cfg.fp.Eval("append/before-sync"); err != nil {
		return fmt.Errorf("journal: %s: sync: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal: %s: sync: %w", j.path, err)
	}
	return nil
}

// lingerLocked lets appends that have started but not yet queued their
// record catch the batch about to be sealed. Appenders woken by the last
// commit are typically in that state: without this, each batch would carry
// only the appenders that happened to be quick, and concurrent appenders
// would share fewer syncs. It yields the processor a bounded number of
// times, never sleeps, and costs nothing when no append is starting. It
// returns true, with j.mu released, when it yielded; the caller looks at
// the batch again.
func (j *FileJournal) lingerLocked() bool {
	if j.entering.Load() == 0 || j.lingered >= maxLinger {
		j.lingered = 0
		return false
	}
	j.lingered++
	j.mu.Unlock()
	runtime.Gosched()
	return true
}

// maxLinger bounds the yields before one batch is sealed.
const maxLinger = 8

// Preallocation: the log is extended with written zeros, a growing step at
// a time, so that batches overwrite blocks that already exist. A sync after
// an append must also commit the file's new size and block allocation (on
// ext4 that is a journal commit); a sync after an overwrite flushes data
// only. fallocate would not do: its unwritten extents need the same
// metadata commit when first written.
const (
	minPrealloc = 64 << 10
	maxPrealloc = 4 << 20
)

// preallocate makes sure the file holds at least end bytes, writing zeros
// past the log. The zeros need no sync of their own: the next batch's sync
// makes durable everything needed to read the batch back.
func (j *FileJournal) preallocate(end int64) error {
	if end <= j.alloc {
		return nil
	}
	step := int64(minPrealloc)
	if j.cfg.prealloc > 0 {
		step = j.cfg.prealloc
	}
	grow := min(max(j.alloc/4, step), maxPrealloc)
	target := max(end, j.alloc+grow)
	if j.zeros == nil {
		j.zeros = make([]byte, min(step, minPrealloc))
	}
	for j.alloc < target {
		n := min(int64(len(j.zeros)), target-j.alloc)
		if _, err := j.f.WriteAt(j.zeros[:n], j.alloc); err != nil {
			return err
		}
		j.alloc += n
	}
	return nil
}

// compactDue says whether the journal should compact by itself now. The
// token holder calls it with j.mu held.
func (j *FileJournal) compactDue() bool {
	return j.cfg.threshold > 0 && j.broken == nil && j.size >= max(j.cfg.threshold, j.nextCompact)
}

// autoCompact runs a compaction the journal decided on by itself. A failed
// one is tried again only after the log has grown by another threshold.
func (j *FileJournal) autoCompact() {
	if err := j.compact(nil); err != nil {
		j.nextCompact = j.size + j.cfg.threshold
		j.log.Error("journal: automatic compaction failed", "path", j.path, "err", err)
	}
}

// Compact rewrites the journal as its live state and swaps the new file in
// atomically: the latest state of every operation not yet terminal, every
// terminal operation still within the retention window (see
// [WithRetention]), and every operation holding an applied idempotency key
// (see [WithKeyRetention]). Operations past retention are dropped from
// memory too. Appends wait while it runs.
//
// A crash at any point leaves a complete journal, the old or the new one.
// When ctx ends before the swap, Compact abandons the new file and returns
// an error wrapping ctx.Err(); after the swap it completes.
//
// Compact refuses, with an error wrapping [ErrUnsafePath], to replace a
// journal file that has gained another name (a hard link) or lost its own
// (renamed or removed) since it was opened: the old file would live on as a
// second, stale journal. The journal keeps working without compacting.
func (j *FileJournal) Compact(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("journal: %s: compact: %w", j.path, err)
	}
	req := compactRequest{stop: ctx.Err, result: make(chan error, 1)}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return fmt.Errorf("journal: %s: compact: %w", j.path, ErrClosed)
	}
	j.compactReqs = append(j.compactReqs, req)
	if !j.held {
		j.held = true
		j.kick <- struct{}{}
	}
	j.mu.Unlock()
	// The token holder serves every request before it frees the token,
	// and Close waits for that, so the reply always comes; the compaction
	// itself watches ctx.
	return <-req.result
}

// waitIdle waits until nobody holds the token: no batch is being written
// and no compaction runs, including one the journal started by itself.
func (j *FileJournal) waitIdle() {
	j.mu.Lock()
	for j.held {
		j.idle.Wait()
	}
	j.mu.Unlock()
}

// compact runs in the token holder, between batches. Only the holder
// changes j.idx, so it reads it here without holding j.mu.
func (j *FileJournal) compact(stop func() error) error {
	j.mu.Lock()
	broken := j.broken
	j.mu.Unlock()
	if broken != nil {
		return fmt.Errorf("journal: %s: compact: journal unusable after a write failure: %w", j.path, broken)
	}
	now := j.cfg.now()
	var kept []*opState
	var dropped []string
	for id, st := range j.idx.ops {
		if j.cfg.retention.keep(&st.e, now) {
			kept = append(kept, st)
		} else {
			dropped = append(dropped, id)
		}
	}
	slices.SortFunc(kept, func(a, b *opState) int { return cmp.Compare(a.seq, b.seq) })

	// The file is replaced only while it has exactly one name, the
	// journal's: see "Ownership of a journal" above.
	if fi, err := j.f.Stat(); err != nil {
		return fmt.Errorf("journal: %s: compact: %w", j.path, err)
	} else if err := onlyName(j.cfg.fs, j.path, fi); err != nil {
		if errors.Is(err, errReplaced) {
			err = &fsx.UnsafeError{Path: j.path, Reason: "another file took the journal's name while it was open"}
		}
		return fmt.Errorf("journal: %s: compact: refusing to replace the journal file: %w: %w", j.path, ErrUnsafePath, err)
	}

	tmp := j.path + compactSuffix
	fail := func(f fsx.File, err error) error {
		if f != nil {
			f.Close()
		}
		j.cfg.fs.Remove(tmp)
		return fmt.Errorf("journal: %s: compact: %w", j.path, err)
	}
	// The temporary name is the journal's own: whatever is there is a
	// leftover of ours, or was planted. Removing it removes a planted link,
	// not what it leads to; and the new file is created only if the name
	// is still free, never through a link.
	if err := j.cfg.fs.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal: %s: compact: %w", j.path, err)
	}
	f, err := j.cfg.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|fsx.NoFollow, 0o600)
	if err != nil {
		return fail(nil, err)
	}
	// Locked before it takes the journal's name, and held until it is
	// replaced in turn or closed.
	if err := f.TryLock(); err != nil {
		return fail(f, err)
	}
	if err := j.cfg.fp.Eval("compact/before-write"); err != nil {
		return fail(f, err)
	}
	if _, err := f.WriteAt(appendFileHeader(nil), 0); err != nil {
		return fail(f, err)
	}
	size := int64(fileHeaderSize)
	var buf []byte
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		sealFrames(buf, size)
		if _, err := f.WriteAt(buf, size); err != nil {
			return err
		}
		size += int64(len(buf))
		buf = buf[:0]
		if stop != nil {
			return stop()
		}
		return nil
	}
	for _, st := range kept {
		buf = appendFrameRaw(buf, kindSnapshot, &st.e, st.params)
		if len(buf) >= windowSize {
			if err := flush(); err != nil {
				return fail(f, err)
			}
		}
	}
	if err := flush(); err != nil {
		return fail(f, err)
	}
	if err := j.cfg.fp.Eval("compact/before-sync"); err != nil {
		return fail(f, err)
	}
	if err := f.Sync(); err != nil {
		return fail(f, err)
	}
	if err := j.cfg.fp.Eval("compact/before-rename"); err != nil {
		return fail(f, err)
	}
	if stop != nil {
		if err := stop(); err != nil {
			return fail(f, err)
		}
	}
	if err := j.cfg.fs.Rename(tmp, j.path); err != nil {
		return fail(f, err)
	}
	// From here on the name refers to the new file, which holds the same
	// live state: the journal works with it from now on, and lets the old
	// one go. Until the directory is synced a crash may still bring back
	// the old file, which is complete too; but no record may be
	// acknowledged in the new file before then.
	old := j.f
	j.f, j.alloc = f, size
	old.Close()
	err = j.cfg.fp.Eval("compact/before-syncdir")
	if err == nil {
		err = j.cfg.fs.SyncDir(j.dir)
	}
	if err != nil {
		err = fmt.Errorf("journal: %s: compact: sync directory after rename: %w", j.path, err)
		j.mu.Lock()
		if j.broken == nil {
			j.broken = err
		}
		j.mu.Unlock()
		j.log.Error("journal: compaction left the journal unusable until reopened", "path", j.path, "err", err)
		return err
	}
	before := j.size
	j.mu.Lock()
	for _, id := range dropped {
		j.idx.remove(id)
	}
	j.size = size
	j.compactions++
	j.mu.Unlock()
	j.compactedSize = size
	j.nextCompact = 2 * size
	j.log.Info("journal: compacted", "path", j.path, "bytes_before", before, "bytes_after", size,
		"ops_kept", len(kept), "ops_dropped", len(dropped))
	return nil
}

func (j *FileJournal) readCheck(ctx context.Context) error {
	if j.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// Latest implements [Journal].
func (j *FileJournal) Latest(ctx context.Context, opID string) (Entry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.readCheck(ctx); err != nil {
		return Entry{}, false, fmt.Errorf("journal: latest of op %q: %w", opID, err)
	}
	e, ok := j.idx.latest(opID)
	return e, ok, nil
}

// InFlight implements [Journal].
func (j *FileJournal) InFlight(ctx context.Context) ([]Entry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.readCheck(ctx); err != nil {
		return nil, fmt.Errorf("journal: in-flight ops: %w", err)
	}
	return j.idx.inFlight(), nil
}

// AlreadyApplied implements [Journal].
func (j *FileJournal) AlreadyApplied(ctx context.Context, idempKey string) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.readCheck(ctx); err != nil {
		return false, fmt.Errorf("journal: key %q: %w", idempKey, err)
	}
	return j.idx.applied(idempKey), nil
}

// LatestByKey implements [KeyLookup].
func (j *FileJournal) LatestByKey(ctx context.Context, idempKey string) (Entry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.readCheck(ctx); err != nil {
		return Entry{}, false, fmt.Errorf("journal: key %q: %w", idempKey, err)
	}
	e, ok := j.idx.byKey(idempKey)
	return e, ok, nil
}

// Ops returns the latest state of every operation the journal holds, in the
// order they started.
func (j *FileJournal) Ops(ctx context.Context) ([]Entry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.readCheck(ctx); err != nil {
		return nil, fmt.Errorf("journal: ops: %w", err)
	}
	return j.idx.all(), nil
}

// FileStats describes an open [FileJournal]. It is a plain value.
type FileStats struct {
	Path string
	// Size is the length of the log. The file may be longer: the journal
	// extends it with zeros ahead of its writes (preallocation).
	Size        int64
	Ops         int // operations held
	InFlight    int // of which not terminal
	Keys        int // idempotency keys held
	Compactions int // compactions since the journal was opened
	// Appended records were written since the journal was opened, in
	// Batches writes (each followed by one sync): their ratio shows how
	// many appends group commit let share a sync.
	Appended, Batches int64
	// Err is the write failure that made the journal stop accepting
	// records, or nil.
	Err error
}

// Stats returns a snapshot of the journal's size and contents, from counters
// it keeps in memory: it does no I/O and cannot fail. (boltjournal's Stats
// has the same fields where they apply, but reads its database, so it takes
// a context and returns an error.)
func (j *FileJournal) Stats() FileStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return FileStats{
		Path:        j.path,
		Size:        j.size,
		Ops:         len(j.idx.ops),
		InFlight:    len(j.idx.inflight),
		Keys:        len(j.idx.keys),
		Compactions: j.compactions,
		Appended:    j.appended,
		Batches:     j.batches,
		Err:         j.broken,
	}
}

// Close implements [Journal]. It waits until every record already accepted
// by Append is written and synced, then closes the file and releases the
// lock. It returns the write failure that broke the journal, if any.
func (j *FileJournal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	// No record or compaction can be added now; wait for the ones queued.
	for j.held {
		j.idle.Wait()
	}
	j.mu.Unlock()
	close(j.stop)
	<-j.done
	err := j.f.Close()
	if lerr := j.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		err = fmt.Errorf("journal: close %s: %w", j.path, err)
	}
	j.mu.Lock()
	broken := j.broken
	j.mu.Unlock()
	if broken != nil {
		err = errors.Join(err, fmt.Errorf("journal: close %s: earlier write failure: %w", j.path, broken))
	}
	return err
}
