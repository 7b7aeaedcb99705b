package boltjournal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/journal"
)

// newStart returns an append of a started record for op id with key, as
// commit makes it, for tests of the memory index.
func newStart(id, key string) *appendTx {
	return &appendTx{e: journal.Entry{OpID: id, IdempKey: key, State: journal.Started}, rec: &opRec{id: id, key: key}}
}

func checkCounts(t *testing.T, m *memIndex, live, nkeys int) {
	t.Helper()
	if m.live != live || m.nkeys != nkeys {
		t.Fatalf("live %d, keys %d; want %d, %d", m.live, m.nkeys, live, nkeys)
	}
}

func TestMemIndexClaims(t *testing.T) {
	m := newMemIndex()
	tx1, tx2 := &bolt.Tx{}, &bolt.Tx{} // only their addresses matter

	a := newStart("op-a", "k")
	if out, _ := m.claim(a, tx1, 1, nil); out != claimTaken {
		t.Fatalf("first claim of k: outcome %d", out)
	}
	// A pending key is nobody's yet.
	if got := m.owner("k"); got != "" {
		t.Fatalf("owner of a pending key = %q", got)
	}
	// Another append of the same transaction: conflict.
	b := newStart("op-b", "k")
	if out, owner := m.claim(b, tx1, 2, nil); out != claimConflict || owner.id != "op-a" {
		t.Fatalf("same-transaction claim: outcome %d, owner %v", out, owner)
	}
	// An append of another transaction cannot tell yet.
	if out, _ := m.claim(b, tx2, 2, nil); out != claimBusy || !m.busy("k", nil) {
		t.Fatalf("claim while pending elsewhere: outcome %d", out)
	}
	// a's rerun in a new attempt takes it again, under a new number.
	if out, _ := m.claim(a, tx2, 3, nil); out != claimTaken || m.seqs.get(1) != nil || m.seqs.get(3) != a.rec {
		t.Fatalf("rerun: outcome %d, seq 1 %v, seq 3 %v", out, m.seqs.get(1), m.seqs.get(3))
	}
	m.started(a)
	checkCounts(t, m, 1, 1)
	if got := m.owner("k"); got != "op-a" {
		t.Fatalf("owner of k = %q, want op-a", got)
	}
	if out, owner := m.claim(b, tx2, 4, nil); out != claimConflict || owner != a.rec {
		t.Fatalf("claim of a held key: outcome %d, owner %v", out, owner)
	}
	// The database no longer holding the owner frees the key.
	if out, _ := m.claim(b, tx2, 4, a.rec); out != claimTaken {
		t.Fatalf("claim of a gone owner's key: outcome %d", out)
	}
	checkCounts(t, m, 1, 0)
	m.started(b)
	checkCounts(t, m, 2, 1)
	// The gone op's prune, when the index learns of it, leaves b's key.
	m.drop(a.rec)
	checkCounts(t, m, 1, 1)
	if got := m.owner("k"); got != "op-b" {
		t.Fatalf("owner of k after the prune = %q, want op-b", got)
	}
	if ids := m.inFlight(); len(ids) != 1 || ids[0] != b.rec {
		t.Fatalf("in flight: %v", ids)
	}
}

func TestMemIndexReleaseAndRestart(t *testing.T) {
	m := newMemIndex()
	tx := &bolt.Tx{}
	a := newStart("op-a", "k")
	m.claim(a, tx, 1, nil)
	m.release(a)
	checkCounts(t, m, 0, 0)
	if m.keys.get("k") != nil || m.seqs.get(1) != nil || m.busy("k", nil) {
		t.Fatal("a released claim left something behind")
	}
	// The number a gave back is taken again.
	b := newStart("op-b", "k")
	if out, _ := m.claim(b, tx, 1, nil); out != claimTaken {
		t.Fatalf("claim after release: outcome %d", out)
	}
	m.started(b)
	checkCounts(t, m, 1, 1)

	// An op ID used again after its op was pruned: the new start takes
	// the key of the old one (same op ID) without a conflict.
	e := journal.Entry{OpID: "op-b", IdempKey: "k", State: journal.Succeeded, At: time.Unix(1, 0)}
	m.ended(1, &e)
	checkCounts(t, m, 0, 1)
	again := newStart("op-b", "k")
	if out, _ := m.claim(again, tx, 2, nil); out != claimTaken {
		t.Fatalf("restart of a pruned op ID: outcome %d", out)
	}
	m.started(again)
	m.drop(b.rec) // its prune, applied late
	checkCounts(t, m, 1, 1)
	if got := m.owner("k"); got != "op-b" || m.keys.get("k") != again.rec {
		t.Fatalf("key after restart went to %v", m.keys.get("k"))
	}
}

// Commit handlers may run in another order than their transactions
// committed; the index must end up the same.
func TestMemIndexOutOfOrderHandlers(t *testing.T) {
	m := newMemIndex()
	tx := &bolt.Tx{}
	a := newStart("op-a", "k")
	m.claim(a, tx, 1, nil)
	// Its end, then its prune, reach the index before its start.
	e := journal.Entry{OpID: "op-a", IdempKey: "k", State: journal.Failed, At: time.Unix(1, 0)}
	m.ended(1, &e)
	victims := m.takeExpired(time.Unix(100, 0), time.Second, time.Second, 0)
	if len(victims) != 1 || victims[0].rec != a.rec {
		t.Fatalf("victims %v", victims)
	}
	m.pruned(victims)
	m.started(a)
	checkCounts(t, m, 0, 0)
	if len(m.inFlight()) != 0 || len(m.ops()) != 0 || m.keys.get("k") != nil {
		t.Fatal("a pruned op came back when its start was recorded late")
	}

	// An end recorded before the start leaves the op ended.
	b := newStart("op-b", "")
	m.claim(b, tx, 2, nil)
	e = journal.Entry{OpID: "op-b", State: journal.Succeeded, At: time.Unix(1, 0)}
	m.ended(2, &e)
	m.started(b)
	checkCounts(t, m, 0, 0)
	if ops := m.ops(); len(ops) != 1 || ops[0] != b.rec || b.rec.live() {
		t.Fatalf("ops %v", ops)
	}
}

func TestSeqIndex(t *testing.T) {
	var s seqIndex
	r := func(n uint64) *opRec { return &opRec{seq: n} }
	r5, r6, r9 := r(5), r(6), r(9)
	s.put(5, r5)
	s.put(9, r9) // leaves holes
	s.put(6, r6)
	if s.get(5) != r5 || s.get(6) != r6 || s.get(7) != nil || s.get(9) != r9 || s.get(4) != nil || s.get(10) != nil {
		t.Fatalf("get after puts: base %d, %v", s.base, s.recs)
	}
	s.del(6, r5) // not what the slot holds
	if s.get(6) != r6 {
		t.Fatal("del removed another record")
	}
	s.del(5, r5)
	s.del(6, r6)
	if s.base != 9 || len(s.recs) != 1 {
		t.Fatalf("front not trimmed: base %d, %d slots", s.base, len(s.recs))
	}
	// A number below the front (given back by a rollback).
	r3 := r(3)
	s.put(3, r3)
	if s.base != 3 || s.get(3) != r3 || s.get(9) != r9 || s.get(5) != nil {
		t.Fatalf("put below the front: base %d, %v", s.base, s.recs)
	}
	s.del(3, r3)
	s.del(9, r9)
	if len(s.recs) != 0 {
		t.Fatalf("%d slots left", len(s.recs))
	}
	s.put(20, r9)
	if s.base != 20 || s.get(20) != r9 {
		t.Fatalf("put into an empty index: base %d", s.base)
	}
}

// Keys whose hashes collide must still be told apart.
func TestKeyIndexCollisions(t *testing.T) {
	ix := newKeyIndex()
	const h = 42
	x, y, z := &opRec{id: "x", key: "kx"}, &opRec{id: "y", key: "ky"}, &opRec{id: "z", key: "kz"}
	ix.settle(h, x)
	ix.settle(h, y)
	ix.settle(h, z)
	for _, r := range []*opRec{x, y, z} {
		if got := ix.settled(r.key, h); got != r {
			t.Fatalf("lookup %s = %v", r.key, got)
		}
	}
	if ix.settled("other", h) != nil {
		t.Fatal("found a key never set")
	}
	if !ix.delSettled(x, h) || ix.delSettled(x, h) {
		t.Fatal("del of x")
	}
	if ix.settled("ky", h) != y || ix.settled("kz", h) != z || ix.settled("kx", h) != nil {
		t.Fatal("lookups after removing the record in the main map")
	}
	// y moves into the free main slot; its copy in x must go.
	y2 := &opRec{id: "y2", key: "ky"}
	ix.settle(h, y2)
	if ix.settled("ky", h) != y2 || len(ix.x) != 1 {
		t.Fatalf("replace after a collision: %v, %d in x", ix.settled("ky", h), len(ix.x))
	}
	if ix.delSettled(y, h) {
		t.Fatal("del of a replaced record")
	}
}

// New keys go to recent and the filter, and are found there, after a
// flush, and after the filter is built again; absent keys are mostly
// turned away by the filter alone.
func TestKeyIndexRecentAndFilter(t *testing.T) {
	ix := newKeyIndex()
	const n = 5000 // several rebuilds of the filter
	recs := make([]*opRec, n)
	for i := range recs {
		r := &opRec{id: fmt.Sprint("op-", i), key: fmt.Sprint("key-", i)}
		prev, h := ix.lookup(r.key)
		if prev != nil {
			t.Fatalf("new key %s found", r.key)
		}
		ix.set(h, r, nil)
		recs[i] = r
		if i == n/2 {
			ix.flush(100)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, r := range recs {
			if got := ix.get(r.key); got != r && r.keyed {
				t.Fatalf("%s: key %s gives %v", when, r.key, got)
			}
		}
	}
	check("before a flush")
	if len(ix.recent) == 0 || len(ix.m) == 0 {
		t.Fatalf("recent %d, settled %d: the test covers too little", len(ix.recent), len(ix.m))
	}
	// Replacing, and removing, keys in recent and in m.
	for _, i := range []int{1, n - 1} {
		old := recs[i]
		nr := &opRec{id: "again", key: old.key}
		got, h := ix.lookup(old.key)
		ix.set(h, nr, got)
		if old.keyed || ix.get(old.key) != nr || ix.del(old) {
			t.Fatalf("replace %s", old.key)
		}
		recs[i] = nr
	}
	for _, i := range []int{2, n - 2} {
		if !ix.del(recs[i]) || ix.get(recs[i].key) != nil {
			t.Fatalf("del %s", recs[i].key)
		}
	}
	ix.flush(0)
	check("after a flush")
	ix.filter.build(&ix, ix.len())
	check("after a rebuild")
	if ix.len() != n-2 {
		t.Fatalf("%d keys, want %d", ix.len(), n-2)
	}
	maybe := 0
	for i := range n {
		if ix.filter.has(ix.hash(fmt.Sprint("absent-", i))) {
			maybe++
		}
	}
	if maybe > n/20 {
		t.Fatalf("the filter let %d of %d absent keys through", maybe, n)
	}
}

// A start whose key another transaction's start is still claiming waits
// for that start to end, then gets its answer: the key is taken when the
// other committed, free when it failed.
func TestAppendWaitsForPendingKeyClaim(t *testing.T) {
	for _, committed := range []bool{true, false} {
		j, err := Open(filepath.Join(t.TempDir(), "j.db"))
		if err != nil {
			t.Fatal(err)
		}
		// A claim as a transaction that has not finished leaves it.
		other := newStart("op-other", "key")
		j.memMu.Lock()
		if out, _ := j.mem.claim(other, &bolt.Tx{}, 1000, nil); out != claimTaken {
			t.Fatal(out)
		}
		j.memMu.Unlock()

		done := make(chan error, 1)
		go func() {
			done <- j.Append(context.Background(), journal.Entry{OpID: "op-mine", VMID: 100, Kind: "start", State: journal.Started, IdempKey: "key"})
		}()
		// The append runs its transaction, finds the key busy and
		// waits on memCond; give it every chance to get there, then
		// check it has not returned.
		waitUntil(t, func() bool {
			j.memMu.Lock()
			defer j.memMu.Unlock()
			return j.waiters > 0
		})
		select {
		case err := <-done:
			t.Fatalf("append returned while the key was pending: %v", err)
		default:
		}
		if committed {
			// What the other transaction wrote.
			e := journal.Entry{OpID: "op-other", VMID: 100, Kind: "start", State: journal.Started, IdempKey: "key", At: time.Now()}
			v, err := encodeOp(1000, &e)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOps).Put([]byte(e.OpID), v) }); err != nil {
				t.Fatal(err)
			}
		}
		j.memMu.Lock()
		if committed {
			j.mem.started(other)
		} else {
			j.mem.release(other)
		}
		j.memCond.Broadcast()
		j.memMu.Unlock()
		err = <-done
		if committed && !errors.Is(err, journal.ErrKeyConflict) {
			t.Errorf("other committed: err = %v, want ErrKeyConflict", err)
		}
		if !committed && err != nil {
			t.Errorf("other failed: err = %v, want nil", err)
		}
		j.Close()
	}
}

// waitUntil polls cond, which another goroutine makes true, for up to a
// minute; the deadline is a hang guard, not a timing assumption.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// A key whose owner the database no longer holds (pruned by a transaction
// whose commit handler the index has not seen yet) is free, not a conflict.
func TestKeyOfOwnerGoneFromDatabaseIsFree(t *testing.T) {
	j, err := Open(filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	start := func(id string) error {
		return j.Append(ctx, journal.Entry{OpID: id, VMID: 100, Kind: "start", State: journal.Started, IdempKey: "key"})
	}
	if err := start("op-a"); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(ctx, journal.Entry{OpID: "op-a", State: journal.Succeeded}); err != nil {
		t.Fatal(err)
	}
	if err := start("op-b"); !errors.Is(err, journal.ErrKeyConflict) {
		t.Fatalf("key held by op-a: err = %v, want ErrKeyConflict", err)
	}
	// op-a leaves the database behind the index's back, as a prune
	// does before its commit handler runs.
	if err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOps).Delete([]byte("op-a")) }); err != nil {
		t.Fatal(err)
	}
	if err := start("op-b"); err != nil {
		t.Fatalf("key of a gone op: %v", err)
	}
	if e, ok, err := j.LatestByKey(ctx, "key"); err != nil || !ok || e.OpID != "op-b" {
		t.Fatalf("LatestByKey = %v, %v, %v; want op-b", e.OpID, ok, err)
	}
	if _, err := j.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}
