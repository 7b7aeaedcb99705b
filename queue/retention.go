package queue

import "sync"

// shard owns the lanes of the keys that hash to it. Its lock guards its map,
// its lanes' lists and flags (except those of the ready list, under q.mu),
// and the handles of its keys' jobs.
type shard[K comparable] struct {
	q  *Queue[K]
	mu sync.Mutex

	lanes   map[K]*lane[K]
	highLen int      // largest len(lanes) since the map was last rebuilt
	free    *lane[K] // recycled lanes
	nfree   int

	// Context watchers registered by Handle.Done, by handle.
	watches map[*Handle[K]]func() bool

	_ [64]byte // keeps neighbouring shards' locks off one cache line
}

// Memory retention. Recycled lanes save an allocation each time a key turns
// active, and a map that keeps its size saves regrowing it. While the queue
// is busy each shard keeps as many free lanes as its peak of active keys.
// When the whole queue runs dry (no job waits or runs), every shard whose
// peak was above its share of retainIdle keys rebuilds its map and trims its
// free list to its share of maxFreeLanes, returning to the size of a new
// queue; smaller peaks are kept, so a queue that often runs dry between
// bursts of a few hundred keys does not reallocate them each time. An idle
// queue thus holds at most retainIdle lanes' worth of memory, whatever it
// has seen. The decision is the queue's, not each shard's: a shard runs dry
// far more often than the queue, and trimming it each time would reallocate
// its lanes on every swing of the load.
//
// A queue fed by one submitter runs dry whenever that submitter is
// descheduled; so that it does not trim and reallocate its lanes each time,
// its last worker waits a moment before it lets the queue run dry with
// shards to trim (see freeSlot).
//
// Go maps never give back the memory of deleted entries, so a shard whose
// map stays busy after a burst of more than retainIdle keys of its own is
// also rebuilt once few keys remain; the ratio keeps a shard whose load
// swings from rebuilding over and over.
const (
	maxFreeLanes = 64
	retainIdle   = 1024 // peak of active keys an idle queue keeps memory for
	shrinkRatio  = 32   // rebuild a busy map when len <= peak / shrinkRatio

	shardFree   = maxFreeLanes / shardCount
	shardRetain = retainIdle / shardCount
)

// newLane makes a lane for key. Called with s.mu held.
func (s *shard[K]) newLane(key K) *lane[K] {
	l := s.free
	if l != nil {
		s.free = l.freeNext
		l.freeNext = nil
		s.nfree--
	} else {
		l = new(lane[K])
		l.work = func() { l.s.q.work(l) }
	}
	l.key = key
	l.s = s
	s.lanes[key] = l
	if n := len(s.lanes); n > s.highLen {
		s.highLen = n
		if n == shardRetain+1 {
			s.q.oversized.Add(1) // the next sweep trims this shard
		}
	}
	return l
}

// dropLane forgets an idle lane: its key, and any holes left in its list.
// The lane must be in no list of q's. Called with s.mu held.
func (s *shard[K]) dropLane(l *lane[K]) {
	l.unlinkAll()
	delete(s.lanes, l.key)
	if s.nfree < max(shardFree, s.highLen) {
		*l = lane[K]{tagged: l.tagged[:0], work: l.work, freeNext: s.free}
		s.free = l
		s.nfree++
	} else {
		*l = lane[K]{}
	}
	if n := len(s.lanes); n > 0 && s.highLen > retainIdle && n <= s.highLen/shrinkRatio {
		s.rebuild()
	}
}

// rebuild replaces the shard's map by one sized for the keys it holds, and
// trims its free list to match. Called with s.mu held.
func (s *shard[K]) rebuild() {
	n := len(s.lanes)
	m := make(map[K]*lane[K], n)
	for k, v := range s.lanes {
		m[k] = v
	}
	s.lanes = m
	if s.highLen > shardRetain && n <= shardRetain {
		s.q.oversized.Add(-1)
	}
	s.highLen = n
	for limit := max(shardFree, n); s.nfree > limit; s.nfree-- {
		l := s.free
		s.free, l.freeNext = l.freeNext, nil
	}
}

// sweep rebuilds every idle shard whose peak was above its share of
// retainIdle. Called without locks when the queue has run dry; work that
// arrives meanwhile only makes it skip a shard.
func (q *Queue[K]) sweep() {
	for i := range q.shards {
		if q.oversized.Load() == 0 {
			return
		}
		s := &q.shards[i]
		s.mu.Lock()
		if len(s.lanes) == 0 && s.highLen > shardRetain {
			s.rebuild()
		}
		s.mu.Unlock()
	}
}
