package boltjournal

import (
	"cmp"
	"container/heap"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/journal"
)

// memIndex holds what the journal derives from the ops bucket, which is
// the only thing stored: the ops in start order and which are in flight,
// who holds each idempotency key, and when terminal ops expire. Open
// rebuilds it by reading every op; afterwards every commit brings it up to
// date. Keeping it out of the database lets each append write one key, as
// bare bbolt would.
//
// Each start of an op ID has one opRec, found by its sequence number (the
// ops bucket's sequence, which orders ops by start and which every stored
// op carries), and by its key when it has one. There is no index by op ID:
// an append reads its op in its transaction, which costs little because
// the write that follows walks the same pages, and a map as large as the
// journal costs a cache miss or more per lookup.
//
// The record of a new op enters the index inside the transaction that
// starts it, pending until the commit handler marks it started, so that a
// later append (in the same batch, or one whose commit handlers have not
// run yet) sees the key taken. Commit handlers may run in another order
// than their transactions committed (bbolt runs them after it lets the next
// transaction in); each one sets facts about a record (started, ended,
// pruned) that do not depend on that order, and records are compared by
// address, so that the index ends up the same either way.
//
// Its methods do no locking; Journal.memMu guards it.
type memIndex struct {
	seqs    seqIndex   // sequence number → op
	keys    keyIndex   // idempotency key → the op holding it or starting with it
	live    int        // ops in flight
	nkeys   int        // keys held by started ops
	done    expiryHeap // terminal ops under WithRetention
	applied expiryHeap // succeeded ops holding a key, under WithKeyRetention
}

// opRec is what the index keeps of one start of an op ID.
type opRec struct {
	id, key string
	seq     uint64
	// pending is the append starting the op, until its commit is
	// recorded or it fails; tx is the transaction attempt that last
	// claimed the record for it.
	pending *appendTx
	tx      *bolt.Tx
	started bool // the start committed
	ended   bool // a terminal record committed
	gone    bool // pruned, or the start failed
	keyed   bool // the key index has it under its key
}

func (r *opRec) live() bool { return r.started && !r.ended && !r.gone }

func newMemIndex() *memIndex {
	return &memIndex{keys: newKeyIndex()}
}

// seqIndex finds records by sequence number. Sequence numbers are dense
// (each is taken by the op it numbers, and a rolled-back transaction gives
// its numbers back), so it is a slice from the lowest number still held;
// the front is trimmed as ops are pruned, and new ops are appended at the
// end.
type seqIndex struct {
	base uint64 // sequence number of recs[0]
	recs []*opRec
}

func (s *seqIndex) get(seq uint64) *opRec {
	if seq < s.base || seq-s.base >= uint64(len(s.recs)) {
		return nil
	}
	return s.recs[seq-s.base]
}

func (s *seqIndex) put(seq uint64, r *opRec) {
	switch {
	case len(s.recs) == 0:
		s.base, s.recs = seq, append(s.recs[:0], r)
		return
	case seq < s.base:
		// A number given back by a rolled-back transaction, after the
		// front was trimmed past it.
		grown := make([]*opRec, uint64(len(s.recs))+s.base-seq)
		copy(grown[s.base-seq:], s.recs)
		s.base, s.recs = seq, grown
	}
	for uint64(len(s.recs)) <= seq-s.base {
		s.recs = append(s.recs, nil)
	}
	s.recs[seq-s.base] = r
}

// del empties seq's slot when it holds r.
func (s *seqIndex) del(seq uint64, r *opRec) {
	if s.get(seq) != r || r == nil {
		return
	}
	s.recs[seq-s.base] = nil
	for len(s.recs) > 0 && s.recs[0] == nil {
		s.recs = s.recs[1:]
		s.base++
	}
}

// keyIndex maps idempotency keys to records.
//
// Nearly every key an append brings is new, and finding that out in a map
// as large as the journal costs a cache and TLB miss or two, on the path
// every append of a batch waits on. So a filter (a Bloom filter, one
// 64-bit word per key) answers "certainly not here" for most new keys
// without touching the map, and new keys go into recent, a map small
// enough to stay in cache. The journal's flusher goroutine moves them into
// m, the large map, mostly while the next batch is being synced.
//
// m is keyed by a 64-bit hash of the key rather than the key itself, which
// keeps it cheap to grow: a map keyed by strings hashes every string again
// when it grows, reading each from wherever it lies in memory. Keys whose
// hashes collide (vanishingly rare with a random seed, but possible) are
// kept, exactly, in x.
type keyIndex struct {
	seed   maphash.Seed
	m      map[uint64]*opRec
	x      map[string]*opRec
	recent map[string]*opRec
	filter keyFilter       // has every key in m, x and recent
	wake   chan<- struct{} // told when recent has grown; nil: nobody flushes
}

func newKeyIndex() keyIndex {
	return keyIndex{seed: maphash.MakeSeed(), m: make(map[uint64]*opRec), recent: make(map[string]*opRec)}
}

func (ix *keyIndex) hash(key string) uint64 { return maphash.String(ix.seed, key) }

// lookup returns the record under key (or nil), and the key's hash.
func (ix *keyIndex) lookup(key string) (*opRec, uint64) {
	h := ix.hash(key)
	if !ix.filter.has(h) {
		return nil, h
	}
	if r, ok := ix.recent[key]; ok {
		return r, h
	}
	return ix.settled(key, h), h
}

// settled returns the record under key, whose hash is h, in m or x.
func (ix *keyIndex) settled(key string, h uint64) *opRec {
	if r := ix.m[h]; r != nil && r.key == key {
		return r
	}
	return ix.x[key]
}

func (ix *keyIndex) get(key string) *opRec {
	r, _ := ix.lookup(key)
	return r
}

// flushAt is how many keys recent holds when the flusher is told to move
// them, and flushMax how many it may hold before set moves them itself.
const (
	flushAt  = 64
	flushMax = 1 << 14
)

// set puts r, whose key hashes to h, under its key, in place of prev, what
// lookup returned for the key.
func (ix *keyIndex) set(h uint64, r, prev *opRec) {
	if prev != nil && prev != r {
		prev.keyed = false
		if ix.recent[prev.key] != prev {
			ix.delSettled(prev, h)
		}
	}
	ix.filter.add(h, ix)
	ix.recent[r.key] = r
	r.keyed = true
	switch n := len(ix.recent); {
	case n == flushAt && ix.wake != nil:
		select {
		case ix.wake <- struct{}{}:
		default:
		}
	case n >= flushMax:
		ix.flush(0)
	}
}

// settle puts r, whose key hashes to h, into m (or x).
func (ix *keyIndex) settle(h uint64, r *opRec) {
	if cur := ix.m[h]; cur == nil || cur.key == r.key {
		ix.m[h] = r
		if len(ix.x) > 0 {
			delete(ix.x, r.key)
		}
		return
	}
	if ix.x == nil {
		ix.x = make(map[string]*opRec)
	}
	ix.x[r.key] = r
}

// flush moves up to limit (<= 0: all) keys from recent into m, and
// returns how many it moved.
func (ix *keyIndex) flush(limit int) int {
	n := 0
	for key, r := range ix.recent {
		if limit > 0 && n == limit {
			break
		}
		delete(ix.recent, key)
		ix.settle(ix.hash(key), r)
		n++
	}
	return n
}

// del removes r from under its key, if it is there, and reports whether it
// was.
func (ix *keyIndex) del(r *opRec) bool {
	if !r.keyed {
		return false
	}
	r.keyed = false
	if ix.recent[r.key] == r {
		delete(ix.recent, r.key)
		return true
	}
	return ix.delSettled(r, ix.hash(r.key))
}

// delSettled removes r, whose key hashes to h, from m or x.
func (ix *keyIndex) delSettled(r *opRec, h uint64) bool {
	if ix.m[h] == r {
		delete(ix.m, h)
		return true
	}
	if ix.x[r.key] == r {
		delete(ix.x, r.key)
		return true
	}
	return false
}

// len returns how many keys the index holds.
func (ix *keyIndex) len() int { return len(ix.m) + len(ix.x) + len(ix.recent) }

// keyFilter is a Bloom filter of key hashes, blocked to one 64-bit word per
// key: a key sets four bits of one word, so a lookup reads one word. With
// sixteen bits per key it answers "maybe" for about one absent key in a
// few hundred. Keys are never taken out; the filter is built again, sized
// to the keys held, once as many keys have been added as it was sized for.
type keyFilter struct {
	words []uint64
	room  int // adds left before the filter is built again
}

func filterBits(h uint64) (word uint64, mask uint64) {
	return h >> 32, 1<<(h&63) | 1<<(h>>6&63) | 1<<(h>>12&63) | 1<<(h>>18&63)
}

func (f *keyFilter) has(h uint64) bool {
	if len(f.words) == 0 {
		return false
	}
	w, mask := filterBits(h)
	return f.words[w&uint64(len(f.words)-1)]&mask == mask
}

// add puts h in the filter, building it again first, from ix, when it is
// full.
func (f *keyFilter) add(h uint64, ix *keyIndex) {
	if f.room <= 0 {
		f.build(ix, ix.len()+1)
	}
	f.room--
	w, mask := filterBits(h)
	f.words[w&uint64(len(f.words)-1)] |= mask
}

// build makes an empty filter with room for about twice n keys (at least
// 1024), and adds every key of ix.
func (f *keyFilter) build(ix *keyIndex, n int) {
	words := 1 << 8 // sixteen bits for each of 1024 keys
	for words*4 < 2*n {
		words *= 2
	}
	f.words, f.room = make([]uint64, words), words*4
	put := func(h uint64) {
		w, mask := filterBits(h)
		f.words[w&uint64(words-1)] |= mask
		f.room--
	}
	for h := range ix.m {
		put(h)
	}
	for key := range ix.x {
		put(ix.hash(key))
	}
	for key := range ix.recent {
		put(ix.hash(key))
	}
}

// owner returns the op that holds key, or "".
func (m *memIndex) owner(key string) string {
	if r := m.keys.get(key); r != nil && r.started && !r.gone {
		return r.id
	}
	return ""
}

// setEnded records that op r ended.
func (m *memIndex) setEnded(r *opRec) {
	if r.live() {
		m.live--
	}
	r.ended = true
}

// drop forgets op r: it was pruned, or its start failed.
func (m *memIndex) drop(r *opRec) {
	if r.gone {
		return
	}
	if r.live() {
		m.live--
	}
	if r.key != "" && m.keys.del(r) && r.started {
		m.nkeys--
	}
	m.seqs.del(r.seq, r)
	r.gone = true
}

// ops returns the ops the index holds, in start order.
func (m *memIndex) ops() []*opRec {
	var out []*opRec
	for _, r := range m.seqs.recs {
		if r != nil && r.started && !r.gone {
			out = append(out, r)
		}
	}
	return out
}

// inFlight returns the ops in flight, in start order.
func (m *memIndex) inFlight() []*opRec {
	out := make([]*opRec, 0, m.live)
	for _, r := range m.seqs.recs {
		if r != nil && r.live() {
			out = append(out, r)
		}
	}
	return out
}

// Outcomes of memIndex.claim.
const (
	claimTaken    = iota // the key is now the append's
	claimConflict        // the key belongs to another op
	claimBusy            // an append outside this transaction is starting an op with the key
)

// claim puts the record of a new op, which append a starts with sequence
// number seq in transaction attempt tx, into the index, pending, and with
// it claims the op's idempotency key. The caller has found no op under the
// op ID in tx. When the key is taken it puts nothing, and returns
// claimConflict and the op holding the key, or claimBusy when it cannot
// tell yet. gone, when not nil, is an op the caller found tx no longer
// holds (pruned; the index does not show it yet): its key is free.
func (m *memIndex) claim(a *appendTx, tx *bolt.Tx, seq uint64, gone *opRec) (outcome int, owner *opRec) {
	r := a.rec
	if r.key != "" {
		k, h := m.keys.lookup(r.key)
		switch {
		case k == nil || k == r:
		case k.pending != nil && k.tx == tx:
			// An earlier append of this transaction: if it commits,
			// so does a, and the key is not a's.
			return claimConflict, k
		case k.pending != nil:
			// Left by an attempt that rolled back (its append is
			// about to release it), or by a transaction whose commit
			// handlers have not run yet.
			return claimBusy, nil
		case k == gone || k.id == r.id:
			// Held by an op tx no longer has: gone, or an earlier
			// start of this op ID. Its prune, when the index learns
			// of it, leaves the key alone, since the key names r now.
			if k.started && !k.gone {
				m.nkeys--
			}
		default:
			return claimConflict, k
		}
		if k != r {
			m.keys.set(h, r, k)
		}
	}
	if r.seq != seq {
		m.seqs.del(r.seq, r) // where an earlier attempt put it
	}
	r.seq, r.pending, r.tx = seq, a, tx
	m.seqs.put(seq, r)
	return claimTaken, nil
}

// busy reports whether an append other than a is starting an op with key.
func (m *memIndex) busy(key string, a *appendTx) bool {
	k := m.keys.get(key)
	return k != nil && k.pending != nil && k.pending != a
}

// release takes back the record and key that append a, whose transaction
// failed, had claimed.
func (m *memIndex) release(a *appendTx) {
	r := a.rec
	if r.pending != a {
		return
	}
	r.pending, r.tx = nil, nil
	if r.key != "" {
		m.keys.del(r)
	}
	m.seqs.del(r.seq, r)
	r.gone = true
}

// started records that append a's new op committed.
func (m *memIndex) started(a *appendTx) {
	r := a.rec
	r.pending, r.tx = nil, nil
	if r.gone {
		return // pruned already: its handlers ran out of order
	}
	r.started = true
	if r.live() {
		m.live++
	}
	if r.keyed {
		m.nkeys++
	}
}

// ended records that the op with sequence seq committed terminal record e.
// Only the record that ends an op is terminal (nothing follows), so a
// record enters a retention heap exactly once.
func (m *memIndex) ended(seq uint64, e *journal.Entry) {
	r := m.seqs.get(seq)
	if r == nil || r.id != e.OpID {
		return
	}
	m.setEnded(r)
	m.push(r, e)
}

// load adds an op read from the database while the index is built; they
// come in op ID order. It fails when another op already holds the op's
// key. finishLoad must follow.
func (m *memIndex) load(e *journal.Entry, seq uint64) error {
	r := &opRec{id: e.OpID, key: e.IdempKey, seq: seq, started: true}
	if k := e.IdempKey; k != "" {
		other, h := m.keys.lookup(k)
		if other != nil {
			return fmt.Errorf("ops %q and %q both hold idempotency key %q", other.id, e.OpID, k)
		}
		m.keys.set(h, r, nil)
		m.nkeys++
	}
	m.seqs.recs = append(m.seqs.recs, r)
	if e.State.Terminal() {
		r.ended = true
		m.push(r, e)
	} else {
		m.live++
	}
	return nil
}

// finishLoad puts the loaded ops in sequence order. Two ops with the same
// sequence number make the database corrupt.
func (m *memIndex) finishLoad() error {
	rs := m.seqs.recs
	slices.SortFunc(rs, func(a, b *opRec) int { return cmp.Compare(a.seq, b.seq) })
	m.seqs.recs = nil
	for i, r := range rs {
		if i > 0 && rs[i-1].seq == r.seq {
			return fmt.Errorf("ops %q and %q share sequence %d", rs[i-1].id, r.id, r.seq)
		}
		m.seqs.put(r.seq, r)
	}
	m.keys.flush(0)
	return nil
}

// expiry is a terminal op as the retention heaps hold it.
type expiry struct {
	at      int64 // Unix nanoseconds of the op's last record
	rec     *opRec
	applied bool // in the applied heap, not the done one
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (m *memIndex) push(r *opRec, e *journal.Entry) {
	x := expiry{at: e.At.UnixNano(), rec: r, applied: e.State == journal.Succeeded && e.IdempKey != ""}
	if x.applied {
		heap.Push(&m.applied, x)
	} else {
		heap.Push(&m.done, x)
	}
}

// takeExpired removes from the heaps, and returns, up to limit (<= 0: all)
// ops whose retention ended before now. The caller deletes them from the
// database and then calls pruned, or gives them back with unexpire.
func (m *memIndex) takeExpired(now time.Time, ops, keys time.Duration, limit int) []expiry {
	var out []expiry
	for _, r := range []struct {
		h    *expiryHeap
		keep time.Duration
	}{{&m.done, ops}, {&m.applied, keys}} {
		if r.keep < 0 {
			continue
		}
		cutoff := now.Add(-r.keep).UnixNano()
		for r.h.Len() > 0 && (*r.h)[0].at < cutoff && (limit <= 0 || len(out) < limit) {
			out = append(out, heap.Pop(r.h).(expiry))
		}
	}
	return out
}

// nextExpiry returns when (Unix nanoseconds) the first op in the heaps
// expires, or the largest time when none will.
func (m *memIndex) nextExpiry(ops, keys time.Duration) int64 {
	add := func(at int64, d time.Duration) int64 {
		if int64(d) > math.MaxInt64-at {
			return math.MaxInt64
		}
		return at + int64(d)
	}
	next := int64(math.MaxInt64)
	if ops >= 0 && m.done.Len() > 0 {
		next = min(next, add(m.done[0].at, ops))
	}
	if keys >= 0 && m.applied.Len() > 0 {
		next = min(next, add(m.applied[0].at, keys))
	}
	return next
}

// pruned forgets ops the database no longer holds.
func (m *memIndex) pruned(gone []expiry) {
	for _, x := range gone {
		m.drop(x.rec)
	}
}

// unexpire gives back ops takeExpired handed out and that were not pruned.
func (m *memIndex) unexpire(xs []expiry) {
	for _, x := range xs {
		if x.applied {
			heap.Push(&m.applied, x)
		} else {
			heap.Push(&m.done, x)
		}
	}
}
