package boltjournal

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/guestward/guestward/journal"
)

// memIndex holds what the journal derives from the ops bucket, which is
// the only thing stored: who holds each idempotency key, which ops are in
// flight (with their start order), and when terminal ops expire. Open
// rebuilds it by reading every op; afterwards every commit brings it up to
// date. Keeping it out of the database lets each append write one key, as
// bare bbolt would.
//
// Its methods do no locking; Journal.mem guards it.
type memIndex struct {
	ops     map[string]opInfo // every op the database holds
	live    int               // how many of them are in flight
	starts  map[string]*claim // op ID → the append starting it, not yet committed
	keys    map[string]string // idempotency key → op ID, committed
	claims  map[string]string // idempotency key → op ID, claimed by appends not yet committed
	done    expiryHeap        // terminal ops under WithRetention
	applied expiryHeap        // succeeded ops holding a key, under WithKeyRetention
}

// opInfo is what the index keeps of an op: its start order, and whether it
// is in flight. One map for both keeps an append's upkeep to one insert.
type opInfo struct {
	seq  uint64
	live bool
}

// setOp records op id's state, keeping the count of ops in flight.
func (m *memIndex) setOp(id string, seq uint64, live bool) {
	old, ok := m.ops[id]
	if ok && old.live {
		m.live--
	}
	if live {
		m.live++
	}
	m.ops[id] = opInfo{seq: seq, live: live}
}

// dropOp forgets op id.
func (m *memIndex) dropOp(id string) {
	if old, ok := m.ops[id]; ok {
		if old.live {
			m.live--
		}
		delete(m.ops, id)
	}
}

// inFlight returns the ops in flight, in start order, by op ID.
func (m *memIndex) inFlight() []string {
	type l struct {
		id  string
		seq uint64
	}
	ls := make([]l, 0, m.live)
	for id, o := range m.ops {
		if o.live {
			ls = append(ls, l{id, o.seq})
		}
	}
	slices.SortFunc(ls, func(a, b l) int { return cmp.Compare(a.seq, b.seq) })
	ids := make([]string, len(ls))
	for i, x := range ls {
		ids[i] = x.id
	}
	return ids
}

// claim identifies one append's claim on an op ID, by its address. It is
// not empty: pointers to distinct zero-size values may compare equal.
type claim struct{ _ byte }

func newMemIndex() *memIndex {
	return &memIndex{
		ops:    make(map[string]opInfo),
		starts: make(map[string]*claim),
		keys:   make(map[string]string),
		claims: make(map[string]string),
	}
}

// claimStart records that the append c starts op id, and reports whether
// the op is certainly new: no committed op and no other append has it.
func (m *memIndex) claimStart(id string, c *claim) bool {
	if _, ok := m.ops[id]; ok {
		return false
	}
	if other, ok := m.starts[id]; ok && other != c {
		return false
	}
	m.starts[id] = c
	return true
}

// expiry is a terminal op as the retention heaps hold it.
type expiry struct {
	at      int64 // Unix nanoseconds of the op's last record
	id      string
	key     string
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

func (m *memIndex) push(e *journal.Entry) {
	x := expiry{at: e.At.UnixNano(), id: e.OpID, key: e.IdempKey, applied: e.State == journal.Succeeded && e.IdempKey != ""}
	if x.applied {
		heap.Push(&m.applied, x)
	} else {
		heap.Push(&m.done, x)
	}
}

// owner returns the op that holds or has claimed key, or "".
func (m *memIndex) owner(key string) string {
	if id, ok := m.keys[key]; ok {
		return id
	}
	return m.claims[key]
}

// load adds an op read from the database while the index is built. It
// fails when another op already holds the op's key.
func (m *memIndex) load(e *journal.Entry, seq uint64) error {
	if k := e.IdempKey; k != "" {
		if other, ok := m.keys[k]; ok && other != e.OpID {
			return fmt.Errorf("ops %q and %q both hold idempotency key %q", other, e.OpID, k)
		}
		m.keys[k] = e.OpID
	}
	m.setOp(e.OpID, seq, !e.State.Terminal())
	if e.State.Terminal() {
		m.push(e)
	}
	return nil
}

// committed records the state e of op id after a record was committed.
// Only the record that ends an op makes it terminal (nothing follows), so
// a terminal e enters a retention heap exactly once.
func (m *memIndex) committed(id string, e *journal.Entry, seq uint64) {
	m.setOp(id, seq, !e.State.Terminal())
	if k := e.IdempKey; k != "" {
		m.keys[k] = id
	}
	if e.State.Terminal() {
		m.push(e)
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
		m.dropOp(x.id)
		if x.key != "" && m.keys[x.key] == x.id {
			delete(m.keys, x.key)
		}
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
