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
// When a shard empties after a peak above its share of retainIdle keys, it
// rebuilds its map and trims its free list to its share of maxFreeLanes,
// returning to the size of a new queue; smaller peaks are kept, so a queue
// that often runs dry between bursts of a few hundred keys does not
// reallocate them each time. An idle queue thus holds at most retainIdle
// lanes' worth of memory, whatever it has seen.
//
// Go maps never give back the memory of deleted entries, so a map that
// stays busy after a large burst is also rebuilt once few keys remain; the
// ratio keeps a queue whose load swings from rebuilding over and over.
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
	}
	l.key = key
	l.s = s
	s.lanes[key] = l
	if n := len(s.lanes); n > s.highLen {
		s.highLen = n
	}
	return l
}

// dropLane forgets an idle lane: its key, and any holes left in its list.
// The lane must be in no list of q's. Called with s.mu held.
func (s *shard[K]) dropLane(l *lane[K]) {
	l.unlinkAll()
	delete(s.lanes, l.key)
	n := len(s.lanes)
	if s.nfree < max(shardFree, s.highLen) {
		*l = lane[K]{tagged: l.tagged[:0], freeNext: s.free}
		s.free = l
		s.nfree++
	} else {
		*l = lane[K]{}
	}
	switch {
	case n == 0 && s.highLen > shardRetain:
		s.lanes = make(map[K]*lane[K])
		s.highLen = 0
		s.trimFree()
	case n > 0 && s.highLen > shardRetain && n <= s.highLen/shrinkRatio:
		m := make(map[K]*lane[K], n)
		for k, v := range s.lanes {
			m[k] = v
		}
		s.lanes = m
		s.highLen = n
		s.trimFree()
	}
}

// trimFree shortens the free list to what the current peak justifies.
// Called with s.mu held.
func (s *shard[K]) trimFree() {
	for limit := max(shardFree, s.highLen); s.nfree > limit; s.nfree-- {
		l := s.free
		s.free, l.freeNext = l.freeNext, nil
	}
}
