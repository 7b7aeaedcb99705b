package queue

import (
	"sync"
	"sync/atomic"
)

// shard owns the lanes of the keys that hash to it. Its lock guards its map,
// its lanes' lists and flags (except those of the ready list, under q.mu),
// and the handles of its keys' jobs.
type shard[K comparable] struct {
	q  *Queue[K]
	mu sync.Mutex

	// Jobs of its keys waiting: in its lanes, on its inbox, or about to
	// be pushed by a submission under way (see Submit).
	queued atomic.Int64

	lanes   map[K]*lane[K] // active and idle lanes, by key
	active  int            // lanes that are scheduled: keys with work
	running int            // jobs of its keys running (for Stats)
	highLen int            // largest len(lanes) since the map was last rebuilt
	free    *lane[K]       // recycled lanes
	nfree   int

	// Context watchers registered by Handle.Done, by handle.
	watches map[*Handle[K]]func() bool

	// Jobs pushed without the lock, newest first, linked through next
	// (see inbox.go); and what a drain leaves for after the lock is
	// released: workers to start (lanes linked through nextStart),
	// events to report, and whether it dropped jobs.
	inbox   atomic.Pointer[Handle[K]]
	startH  *lane[K]
	events  []*Event
	dropped bool

	_ cacheLinePad // keeps neighbouring shards' locks off one cache line
}

// Memory retention. A key that runs out of work keeps its lane, idle, in
// its shard's map, so that its next job (keys of a busy queue get work
// again and again) finds it there: no allocation, and no map insert and
// delete, which cost a submission and a worker more than anything else
// they do once a busy queue has more keys than it runs at once.
//
// While the queue is busy, a shard holds at most shardIdle idle lanes
// (maxIdleLanes over the queue); one more, and it evicts idle lanes down to
// half that, keeping them on its free list for new keys. When the whole
// queue runs dry (no job waits or runs), every shard whose map has held
// more than its share of retainIdle lanes since it was last rebuilt drops
// its idle lanes, rebuilds its map and trims its free list to its share of
// maxFreeLanes, returning to the size of a new queue; smaller shards keep
// their lanes, so a queue that often runs dry between bursts of a few
// hundred keys does not reallocate them each time. An idle queue thus
// holds at most retainIdle lanes in its maps and maxFreeLanes on its free
// lists, whatever it has seen. The decision is the queue's, not each
// shard's: a shard runs dry far more often than the queue, and trimming it
// each time would reallocate its lanes on every swing of the load.
//
// A queue fed by one submitter runs dry whenever that submitter is
// descheduled; so that it does not trim and reallocate its lanes each time,
// its last worker waits a moment before it lets the queue run dry with
// shards to trim (see freeSlot).
//
// Go maps never give back the memory of deleted entries, so a shard whose
// map stays busy after a burst of many keys at once is rebuilt when an
// eviction leaves it holding less than 1/shrinkRatio of its peak.
const (
	maxFreeLanes = 64
	retainIdle   = 1024    // lanes an idle queue keeps in its maps
	maxIdleLanes = 1 << 16 // idle lanes a busy queue keeps in its maps
	shrinkRatio  = 32      // rebuild a busy map when len <= peak / shrinkRatio

	shardFree   = maxFreeLanes / shardCount
	shardRetain = retainIdle / shardCount
	shardIdle   = maxIdleLanes / shardCount
)

// newLane makes an idle lane for key, which has none. Called with s.mu
// held.
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
		if n == shardRetain+1 {
			s.q.oversized.Add(1) // the next sweep trims this shard
		}
	}
	return l
}

// activate marks the idle lane l scheduled: its key has work. Called with
// s.mu held.
func (s *shard[K]) activate(l *lane[K]) {
	l.scheduled = true
	s.active++
}

// idle marks lane l idle: its key has no job waiting or running. It forgets
// any holes left in its list and keeps it for the key's next job, unless
// the shard holds too many idle lanes already, in which case some, l among
// them perhaps, are evicted: the caller must not touch l again. The lane
// must be in no list of q's. Called with s.mu held.
func (s *shard[K]) idle(l *lane[K]) {
	l.unlinkAll()
	l.scheduled = false
	s.active--
	if len(s.lanes)-s.active > s.q.idleCap {
		s.evict()
	}
}

// evict forgets idle lanes until the shard holds half as many as it may
// (q.idleCap), and rebuilds its map if that leaves it far below its peak.
// Map iteration order picks which. Called with s.mu held.
func (s *shard[K]) evict() {
	keep := s.q.idleCap / 2
	for key, l := range s.lanes {
		if len(s.lanes)-s.active <= keep {
			break
		}
		if !l.scheduled {
			delete(s.lanes, key)
			s.recycle(l, max(keep, shardFree))
		}
	}
	if n := len(s.lanes); n <= s.highLen/shrinkRatio {
		s.rebuild(false, max(keep, shardFree))
	}
}

// recycle puts the evicted lane l on the free list if it holds fewer than
// limit lanes, and lets it go otherwise. Called with s.mu held.
func (s *shard[K]) recycle(l *lane[K], limit int) {
	if s.nfree < limit {
		*l = lane[K]{tagged: l.tagged[:0], work: l.work, freeNext: s.free}
		s.free = l
		s.nfree++
	} else {
		*l = lane[K]{}
	}
}

// rebuild replaces the shard's map by one sized for the lanes it keeps:
// all of them, or the active ones only when dropIdle is set. It trims the
// free list to freeLimit. Called with s.mu held.
func (s *shard[K]) rebuild(dropIdle bool, freeLimit int) {
	n := len(s.lanes)
	if dropIdle {
		n = s.active
	}
	m := make(map[K]*lane[K], n)
	for key, l := range s.lanes {
		if dropIdle && !l.scheduled {
			s.recycle(l, freeLimit)
			continue
		}
		m[key] = l
	}
	s.lanes = m
	if s.highLen > shardRetain && len(m) <= shardRetain {
		s.q.oversized.Add(-1)
	}
	s.highLen = len(m)
	for ; s.nfree > freeLimit; s.nfree-- {
		l := s.free
		s.free, l.freeNext = l.freeNext, nil
	}
}

// sweep drops the idle lanes of every idle shard whose map has held more
// than its share of retainIdle. Called without locks when the queue has
// run dry; work that arrives meanwhile only makes it skip a shard.
func (q *Queue[K]) sweep() {
	for i := range q.shards {
		if q.oversized.Load() == 0 {
			return
		}
		s := &q.shards[i]
		s.lock()
		if s.active == 0 && s.highLen > shardRetain {
			s.rebuild(true, shardFree)
		}
		s.unlock()
	}
}
