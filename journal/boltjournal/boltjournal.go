package boltjournal

import (
	"bytes"
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

	"github.com/guestward/guestward/internal/fsx"
	"github.com/guestward/guestward/journal"
)

// The database layout, version 1. Op IDs are stored as their bytes; seq is
// a uint64, big-endian, from the ops bucket's sequence, so it orders ops by
// start.
//
//	meta  "format" → "guestward-journal-bolt/1"
//	ops   op ID → seq + the op's latest merged entry (journal.Entry.MarshalBinary)
//
// Nothing else is stored: who holds which idempotency key, which ops are in
// flight and when terminal ops expire all follow from the ops, and live in
// memory (see memIndex).
var (
	bucketMeta = []byte("meta")
	bucketOps  = []byte("ops")
	allBuckets = [][]byte{bucketMeta, bucketOps}

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
	file   *os.File // db's file, which bbolt owns; for Stat only
	closed bool
	broken error // set when Compact could not reopen the database

	scratch txScratch // for write transactions only

	// mem is what the journal derives from the ops bucket. memMu is taken
	// inside write transactions and by their commit handlers, and around
	// read transactions that check mem; never around a write
	// transaction. memCond, on memMu, is broadcast when pending starts
	// commit or fail.
	memMu   sync.Mutex
	mem     *memIndex
	memCond *sync.Cond
	waiters int // appends waiting on memCond

	// The flusher goroutine moves new keys into the key index's large
	// map; see keyIndex.
	flushWake chan struct{}
	flushStop chan struct{}
	flushDone chan struct{}

	active atomic.Int64 // appends in progress
	peak   atomic.Int64 // recent concurrency of appends; see alone
	// nextExpiry is when (Unix nanoseconds) the next terminal op may
	// expire, so that appends skip the retention heaps until then. It
	// may be early, never late.
	nextExpiry atomic.Int64
}

var (
	_ journal.Journal   = (*Journal)(nil)
	_ journal.KeyLookup = (*Journal)(nil)
	_ journal.OpLister  = (*Journal)(nil)
)

// Open opens the journal database at path, creating it when it does not
// exist, reads every operation to rebuild the indexes it keeps in memory,
// and prunes expired terminal operations (see [WithRetention]). Creation is
// crash-safe: the database is initialised under path+".create", synced,
// renamed into place, and the directory synced, so path never names a
// half-made database. A symbolic link at path is followed, and the journal
// works on the file it leads to.
//
// Open reads and checks the whole file itself before bbolt maps it (see
// the package doc, Damage). A file that is damaged or is not a guestward
// journal database fails with an error matching [journal.ErrCorrupt] that
// says what is wrong, and is left exactly as it was; see [RepairFile]. So does
// an empty file: Open never leaves one at path, so an empty file is a
// journal that lost its contents, and starting a new one there would
// forget which idempotency keys were applied (remove it to start afresh).
// A database that another process, or another Journal in this one, has
// open, by whatever name, fails with [journal.ErrLocked]. A path others
// could redirect, and a database file that is not a private regular file
// with one name, fail with [journal.ErrUnsafePath] (see the package doc,
// Files and permissions). A file Open may not read or write fails with an
// error matching [fs.ErrPermission], which is not damage either.
//
// Next to path the journal keeps path+".lock" (an advisory lock, left in
// place) and, while they are being written, path+".create" and
// path+".compact"; leftovers of those from a crash are removed.
//
// A Journal runs one goroutine of its own, which Close stops.
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
	path, err := resolvePath("open", path)
	if err != nil {
		return nil, err
	}
	lock, err := takeLock(path)
	if err != nil {
		return nil, err
	}
	j := &Journal{path: path, dir: filepath.Dir(path), cfg: cfg, log: cfg.logger, lock: lock}
	j.memCond = sync.NewCond(&j.memMu)
	if err := j.load(); err != nil {
		lock.Close()
		return nil, err
	}
	j.flushWake, j.flushStop, j.flushDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	j.mem.keys.wake = j.flushWake
	go j.flusher()
	return j, nil
}

// flushChunk bounds the keys the flusher moves under one hold of memMu, so
// that transactions do not wait long for it.
const flushChunk = 256

// flusher moves new keys into the key index's large map when told, until
// Close.
func (j *Journal) flusher() {
	defer close(j.flushDone)
	for {
		select {
		case <-j.flushWake:
		case <-j.flushStop:
			return
		}
		for {
			j.memMu.Lock()
			n := j.mem.keys.flush(flushChunk)
			j.memMu.Unlock()
			if n < flushChunk {
				break
			}
		}
	}
}

func takeLock(path string) (io.Closer, error) {
	lock, err := fsx.OS{}.Lock(path + lockSuffix)
	if err != nil {
		return nil, ownerError("open", path, err)
	}
	return lock, nil
}

func (j *Journal) load() error {
	for _, leftover := range []string{j.path + createSuffix, j.path + compactSuffix} {
		if err := os.Remove(leftover); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("boltjournal: open %s: remove leftover: %w", j.path, err)
		}
	}
	mem := newMemIndex()
	db, f, err := openDB(j.path, j.cfg, mem)
	if errors.Is(err, fs.ErrNotExist) {
		if err := create(j.path, nil); err != nil {
			return fmt.Errorf("boltjournal: create %s: %w", j.path, err)
		}
		mem = newMemIndex()
		db, f, err = openDB(j.path, j.cfg, mem)
	}
	if err != nil {
		return err
	}
	j.db, j.file, j.mem = db, f, mem
	if err := j.pruneAll(); err != nil {
		db.Close()
		return err
	}
	return nil
}

func boltOptions(cfg config) *bolt.Options {
	return &bolt.Options{
		// The journal has locked the file already (see flockFile); where
		// it cannot, bbolt's own lock waits a little for other tools.
		Timeout:      100 * time.Millisecond,
		NoSync:       cfg.noSync,
		FreelistType: bolt.FreelistMapType,
	}
}

// create makes a journal database at path, crash-safely: it is built
// under path+".create", synced, renamed into place, and the directory
// synced. fill, when not nil, puts ops in it in the same transaction.
func create(path string, fill func(ops *bolt.Bucket) error) error {
	tmp := path + createSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := createExcl(tmp)
	if err != nil {
		return err
	}
	db, err := openBolt(f, bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		os.Remove(tmp)
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keyFormat, formatValue); err != nil {
			return err
		}
		if fill != nil {
			return fill(tx.Bucket(bucketOps))
		}
		return nil
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

// checkLayout checks, inside a transaction, that the database holds the
// journal's buckets.
func checkLayout(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("no %q bucket: not a guestward journal database", name)
		}
	}
	if v := tx.Bucket(bucketMeta).Get(keyFormat); string(v) != string(formatValue) {
		return fmt.Errorf("format %q is not %q", v, formatValue)
	}
	return nil
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
// other appends are in progress, so that they share one transaction and one
// sync, and in a transaction of its own otherwise. Once a record is
// submitted, an ending ctx makes Append return early, but the commit goes
// on.
func (j *Journal) Append(ctx context.Context, e journal.Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltjournal: append op %q: %w", e.OpID, err)
	}
	if e.At.IsZero() {
		e.At = j.cfg.now()
	}
	e.At = e.At.UTC()
	// A started record is the whole state of a new op: its stored value
	// is known now but for the sequence number, so it is encoded here
	// (which validates it), outside the transaction, whose functions
	// bbolt runs one by one.
	var fresh []byte
	var err error
	if e.State == journal.Started {
		fresh, err = e.AppendBinary(make([]byte, 8, 8+256))
	} else {
		err = e.Validate()
	}
	if err != nil {
		return err
	}
	j.mu.RLock()
	if err := j.usable(); err != nil {
		j.mu.RUnlock()
		return fmt.Errorf("boltjournal: append op %q: %w", e.OpID, err)
	}
	db := j.db
	lone := j.alone()
	if ctx.Done() == nil {
		defer j.mu.RUnlock()
		defer j.active.Add(-1)
		return j.commit(db, e, fresh, lone)
	}
	res := make(chan error, 1)
	go func() {
		// The read lock is held until the commit ends, so Close and
		// Compact wait for it.
		defer j.mu.RUnlock()
		defer j.active.Add(-1)
		res <- j.commit(db, e, fresh, lone)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("boltjournal: append op %q: %w (the record was submitted and may still become durable)", e.OpID, ctx.Err())
	}
}

// alone counts an append in (the caller takes it out again from active)
// and says whether it should commit by itself rather than through Batch,
// which waits up to the batch delay for company. It looks at recent
// concurrency, not just the present: when a batch commits, all its appends
// return at once, and the first to come back may find itself alone for a
// moment; committing alone then would hold the write lock for a whole
// commit while the others wait for it to join their batch. The peak halves
// with every append that finds itself alone, so a writer that really is
// alone gets its own transactions again after a few appends. Appends in
// company write the peak only when they raise it, which keeps them from
// passing its cache line back and forth between cores.
func (j *Journal) alone() bool {
	n := j.active.Add(1)
	if n > 1 {
		if n > j.peak.Load() {
			j.peak.Store(n) // a lost update only shifts the heuristic a little
		}
		return false
	}
	p := j.peak.Load() / 2
	j.peak.Store(p)
	return p <= 1
}

func (j *Journal) usable() error {
	if j.closed {
		return journal.ErrClosed
	}
	return j.broken
}

// commit runs the append's transaction, which also brings the memory index
// up to date. With Batch the transaction function may run more than once
// (bbolt reruns a batch when one of its functions fails); it does all its
// writing inside tx, and what it notes outside is reset by each run, so a
// rerun starts from the rolled-back state and never duplicates a record. A
// rejected record is reported through reject, not as the function's
// error, so that it does not make the other appends of its batch run
// again.
func (j *Journal) commit(db *bolt.DB, e journal.Entry, fresh []byte, lone bool) error {
	for {
		a := &appendTx{j: j, e: e, fresh: fresh}
		if fresh != nil {
			a.rec = &opRec{id: e.OpID, key: e.IdempKey}
		}
		if now := j.cfg.now(); now.UnixNano() >= j.nextExpiry.Load() {
			j.memMu.Lock()
			a.victims = j.mem.takeExpired(now, j.cfg.retention, j.cfg.keyRetention, pruneBatch)
			j.nextExpiry.Store(j.mem.nextExpiry(j.cfg.retention, j.cfg.keyRetention))
			j.memMu.Unlock()
		}
		var err error
		if lone {
			err = safeUpdate(db, a.run)
		} else {
			err = safeBatch(db, a.run)
		}
		if !a.settled {
			// The transaction failed (its commit handler never ran).
			j.abandon(a)
		}
		if err != nil {
			var ce *journal.CorruptError
			if errors.As(err, &ce) || errors.As(err, new(errPanic)) {
				return corrupt(j.path, err)
			}
			return fmt.Errorf("boltjournal: %s: append op %q: %w", j.path, e.OpID, err)
		}
		if !a.retry {
			return a.reject
		}
		// An append outside the transaction was starting an op with
		// the same key; wait until it has committed or failed, and try
		// again.
		j.memMu.Lock()
		for j.mem.busy(e.IdempKey, nil) {
			j.waiters++
			j.memCond.Wait()
			j.waiters--
		}
		j.memMu.Unlock()
	}
}

func keyConflict(e *journal.Entry, owner string) error {
	return fmt.Errorf("%w: op %q: key %q belongs to op %q", journal.ErrKeyConflict, e.OpID, e.IdempKey, owner)
}

// appendTx is one append's transaction function and what it leaves behind.
// The fields are gathered in one value so that an append allocates once for
// them, not once per variable its function captures.
type appendTx struct {
	j       *Journal
	e       journal.Entry
	fresh   []byte
	victims []expiry
	rec     *opRec // for a started record, the op it starts

	// Set by each run of the transaction function.
	reject error
	retry  bool // another append is starting an op with the key: nothing written
	wrote  bool
	isNew  bool // wrote the start of a new op
	pruned []expiry
	state  *journal.Entry // the op after this record, when wrote
	seq    uint64

	settled bool // the commit handler ran
}

func (a *appendTx) run(tx *bolt.Tx) error {
	a.reject, a.retry, a.wrote, a.isNew, a.state, a.pruned = nil, false, false, false, nil, a.pruned[:0]
	if err := a.j.cfg.fp.Eval("append/tx"); err != nil {
		return err
	}
	s := a.j.scratch.begin(a.j, tx)
	var err error
	if len(a.victims) > 0 {
		if a.pruned, err = a.j.prune(s.ops, a.victims, a.pruned); err != nil {
			return err
		}
	}
	if err = a.j.put(s, a); err == nil {
		s.done.appends = append(s.done.appends, a)
	}
	return err
}

// txDone is what the commit handler of one write transaction records in
// the memory index: its appends, in the order their functions ran. One
// handler per transaction, rather than one per append, takes the index's
// lock once per batch.
type txDone struct {
	j       *Journal
	appends []*appendTx
}

// committed records in the memory index what the appends of a committed
// transaction did: the ops they started or ended, and the ops they pruned.
// bbolt runs commit handlers after a successful commit, on the goroutine
// that committed, before any append of the batch returns; a rolled-back
// attempt's handlers never run.
func (d *txDone) committed() {
	j := d.j
	j.memMu.Lock()
	defer j.memMu.Unlock()
	wake := false
	for _, a := range d.appends {
		a.settled = true
		j.mem.pruned(a.pruned)
		switch {
		case a.isNew:
			j.mem.started(a)
			wake = true
		case a.rec != nil:
			// A start that was refused, or retried, after an earlier
			// attempt of its function claimed a record.
			j.mem.release(a)
			wake = true
		}
		if a.wrote && a.state.State.Terminal() {
			j.mem.ended(a.seq, a.state)
			j.nextExpiry.Store(j.mem.nextExpiry(j.cfg.retention, j.cfg.keyRetention))
		}
	}
	if wake && j.waiters > 0 {
		j.memCond.Broadcast()
	}
}

// put applies append a's record inside tx, setting a's outcome: the op's
// state after the record and its sequence number; or the rule the record
// breaks, or a retry (nothing written). It returns only fatal errors.
func (j *Journal) put(s *txScratch, a *appendTx) error {
	ops, tx := s.ops, s.tx
	e := &a.e
	v := s.lookup(e.OpID)
	var prev *journal.Entry
	var seq uint64
	if v != nil {
		p, pseq, err := decodeOp(e.OpID, v)
		if err != nil {
			return corrupt(j.path, err)
		}
		prev, seq = &p, pseq
	}
	state := e
	if prev != nil || a.fresh == nil {
		merged, err := journal.Merge(prev, *e)
		if err != nil {
			a.reject = err
			return nil
		}
		state = &merged
	}
	var err error
	if prev == nil {
		// A new op (Merge refuses anything but a start of one). Its
		// record enters the memory index now, claiming its key, under
		// the sequence number it is about to take.
		seq = ops.Sequence() + 1
		j.memMu.Lock()
		outcome, owner := j.mem.claim(a, tx, seq, nil)
		j.memMu.Unlock()
		if outcome == claimConflict && owner.pending == nil && !s.holds(owner) {
			// The key's owner is gone from the database (pruned, and
			// the index does not show it yet).
			j.memMu.Lock()
			outcome, owner = j.mem.claim(a, tx, seq, owner)
			j.memMu.Unlock()
		}
		switch outcome {
		case claimConflict:
			a.reject = keyConflict(e, owner.id)
			return nil
		case claimBusy:
			a.retry = true
			return nil
		}
		if _, err := ops.NextSequence(); err != nil {
			return err
		}
		// bbolt keeps v until the commit. A rerun of this function
		// happens only after the transaction that held it was rolled
		// back, so fresh can be filled in and handed over again.
		binary.BigEndian.PutUint64(a.fresh, seq)
		v = a.fresh
	} else if v, err = encodeOp(seq, state); err != nil {
		return err
	}
	if err := ops.Put(s.setKey(e.OpID), v); err != nil {
		return err
	}
	a.state, a.seq, a.wrote, a.isNew = state, seq, true, prev == nil
	return nil
}

// txScratch is what the functions of write transactions share, one
// after another (bbolt runs at most one write transaction at a time, and
// its functions one by one): the ops bucket and a cursor on it, a buffer
// for keys, which save the allocations that looking up a bucket or a key
// makes on every call, and the transaction's commit handler. It keeps the
// last transaction reachable until the next one begins.
type txScratch struct {
	tx   *bolt.Tx
	ops  *bolt.Bucket
	cur  *bolt.Cursor
	key  []byte
	done *txDone
}

// begin returns the scratch for tx, setting it up when tx is a new
// transaction (or a new attempt of a batch).
func (s *txScratch) begin(j *Journal, tx *bolt.Tx) *txScratch {
	if s.tx != tx {
		s.tx, s.ops = tx, tx.Bucket(bucketOps)
		s.cur = s.ops.Cursor()
		s.done = &txDone{j: j}
		tx.OnCommit(s.done.committed)
	}
	return s
}

// setKey returns id as bytes, in the scratch buffer, valid until the next
// call.
func (s *txScratch) setKey(id string) []byte {
	s.key = append(s.key[:0], id...)
	return s.key
}

// lookup returns the stored value of op id, or nil.
func (s *txScratch) lookup(id string) []byte {
	key := s.setKey(id)
	k, v := s.cur.Seek(key)
	if v == nil || !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// holds reports whether the database still holds op r (the same start of
// its op ID).
func (s *txScratch) holds(r *opRec) bool {
	v := s.lookup(r.id)
	return len(v) >= 8 && binary.BigEndian.Uint64(v) == r.seq
}

// prune deletes, inside tx, the victims that are still what the memory
// index said: terminal, with the same last record. It appends what it
// deleted to out.
func (j *Journal) prune(ops *bolt.Bucket, victims, out []expiry) ([]expiry, error) {
	for _, x := range victims {
		id := x.rec.id
		v := ops.Get([]byte(id))
		if v == nil {
			continue
		}
		e, _, err := decodeOp(id, v)
		if err != nil {
			return out, corrupt(j.path, err)
		}
		if !e.State.Terminal() || e.At.UnixNano() != x.at {
			continue // the op ID was used again after an earlier prune
		}
		if err := ops.Delete([]byte(id)); err != nil {
			return out, err
		}
		out = append(out, x)
	}
	return out, nil
}

// abandon undoes, in the memory index, what an append whose transaction
// failed had taken: its claims, and the expired ops it was to prune.
func (j *Journal) abandon(a *appendTx) {
	j.memMu.Lock()
	defer j.memMu.Unlock()
	if a.rec != nil {
		j.mem.release(a)
		j.memCond.Broadcast()
	}
	if len(a.victims) > 0 {
		j.mem.unexpire(a.victims)
		j.nextExpiry.Store(j.mem.nextExpiry(j.cfg.retention, j.cfg.keyRetention))
	}
}

// pruneAll deletes every expired terminal op. It runs while no append
// does: from Open, and from Compact.
func (j *Journal) pruneAll() error {
	j.memMu.Lock()
	victims := j.mem.takeExpired(j.cfg.now(), j.cfg.retention, j.cfg.keyRetention, 0)
	j.memMu.Unlock()
	if len(victims) == 0 {
		return nil
	}
	var pruned []expiry
	err := safeUpdate(j.db, func(tx *bolt.Tx) error {
		var err error
		pruned, err = j.prune(tx.Bucket(bucketOps), victims, pruned[:0])
		return err
	})
	j.memMu.Lock()
	if err != nil {
		j.mem.unexpire(victims)
	} else {
		j.mem.pruned(pruned)
	}
	j.nextExpiry.Store(j.mem.nextExpiry(j.cfg.retention, j.cfg.keyRetention))
	j.memMu.Unlock()
	if err != nil {
		return corrupt(j.path, err)
	}
	if len(pruned) > 0 {
		j.log.Info("boltjournal: pruned expired operations", "path", j.path, "ops", len(pruned))
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
	j.memMu.Lock()
	recs := j.mem.inFlight()
	j.memMu.Unlock()
	var out []journal.Entry
	var stale []*opRec
	err := j.view(ctx, "in-flight ops", func(tx *bolt.Tx) error {
		for _, r := range recs {
			e, ok, err := getOp(tx, r.id)
			if err != nil {
				return err
			}
			// The database has the last word: an append may have
			// ended the op since the index was read.
			if ok && !e.State.Terminal() {
				out = append(out, e)
			} else {
				stale = append(stale, r)
			}
		}
		return nil
	})
	if len(stale) > 0 && err == nil {
		j.dropStale(stale)
	}
	return out, err
}

// dropStale takes out of the in-flight set the ops InFlight found ended or
// gone, after checking again, under the lock and in a fresh read
// transaction, that they still are.
func (j *Journal) dropStale(recs []*opRec) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.usable() != nil {
		return
	}
	j.memMu.Lock()
	defer j.memMu.Unlock()
	_ = safeView(j.db, func(tx *bolt.Tx) error {
		ops := tx.Bucket(bucketOps)
		for _, r := range recs {
			if !r.live() {
				continue
			}
			v := ops.Get([]byte(r.id))
			if v == nil {
				j.mem.drop(r)
				continue
			}
			e, seq, err := decodeOp(r.id, v)
			switch {
			case err != nil:
			case seq != r.seq:
				j.mem.drop(r) // this start of the op ID is gone
			case e.State.Terminal():
				// Its terminal record's commit handler will put it in
				// a retention heap.
				j.mem.setEnded(r)
			}
		}
		return nil
	})
}

// AlreadyApplied implements [journal.Journal].
func (j *Journal) AlreadyApplied(ctx context.Context, idempKey string) (bool, error) {
	e, ok, err := j.LatestByKey(ctx, idempKey)
	return ok && e.State == journal.Succeeded, err
}

// LatestByKey implements [journal.KeyLookup].
func (j *Journal) LatestByKey(ctx context.Context, idempKey string) (e journal.Entry, ok bool, err error) {
	j.memMu.Lock()
	owner := j.mem.owner(idempKey)
	j.memMu.Unlock()
	err = j.view(ctx, fmt.Sprintf("key %q", idempKey), func(tx *bolt.Tx) error {
		if owner == "" {
			return nil
		}
		e, ok, err = getOp(tx, owner)
		if ok && e.IdempKey != idempKey {
			ok = false // pruned and the op ID used again meanwhile
		}
		return err
	})
	return e, ok, err
}

// Ops returns the latest state of every operation the journal holds, in the
// order they started.
func (j *Journal) Ops(ctx context.Context) ([]journal.Entry, error) {
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
	out := make([]journal.Entry, len(all))
	for i, s := range all {
		out[i] = s.e
	}
	return out, nil
}

// Close implements [journal.Journal]. It waits for appends in progress, and
// stops the journal's goroutine.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	close(j.flushStop)
	<-j.flushDone
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
