package queue

// Memory retention. Recycled lanes save an allocation each time a key turns
// active, and a map that keeps its size saves regrowing it. While the queue
// is busy it keeps as many free lanes as its peak of active keys. When it
// empties after a peak above retainIdle keys, it rebuilds the map and trims
// the free list to maxFreeLanes, returning to the size of a new queue;
// smaller peaks are kept, so a queue that often runs dry between bursts of
// a few hundred keys does not reallocate them each time. An idle queue thus
// holds at most retainIdle lanes' worth of memory, whatever it has seen.
//
// Go maps never give back the memory of deleted entries, so a map that
// stays busy after a large burst is also rebuilt once few keys remain; the
// ratio keeps a queue whose load swings from rebuilding over and over.
const (
	maxFreeLanes = 64
	maxFreeRing  = 64   // a recycled lane keeps a ring of at most this many slots
	retainIdle   = 1024 // peak of active keys an idle queue keeps memory for
	shrinkRatio  = 32   // rebuild a busy map when len <= peak / shrinkRatio
)

// newLane makes a lane for key. Called with q.mu held.
func (q *Queue[K]) newLane(key K) *lane[K] {
	l := q.free
	if l != nil {
		q.free = l.freeNext
		l.freeNext = nil
		q.nfree--
	} else {
		l = new(lane[K])
	}
	l.key = key
	q.lanes[key] = l
	if n := len(q.lanes); n > q.highLen {
		q.highLen = n
	}
	return l
}

// dropLane forgets an idle lane: its key, and any holes left in its ring.
// Called with q.mu held.
func (q *Queue[K]) dropLane(l *lane[K]) {
	delete(q.lanes, l.key)
	n := len(q.lanes)
	if q.nfree < max(maxFreeLanes, q.highLen) {
		ring := l.ring // every slot is nil: pop and remove clear theirs
		if len(ring) > maxFreeRing {
			ring = nil
		}
		*l = lane[K]{ring: ring, tagged: l.tagged[:0], freeNext: q.free}
		q.free = l
		q.nfree++
	} else {
		*l = lane[K]{}
	}
	switch {
	case n == 0 && q.highLen > retainIdle:
		q.lanes = make(map[K]*lane[K])
		q.highLen = 0
		q.trimFree()
	case n > 0 && q.highLen > retainIdle && n <= q.highLen/shrinkRatio:
		m := make(map[K]*lane[K], n)
		for k, v := range q.lanes {
			m[k] = v
		}
		q.lanes = m
		q.highLen = n
		q.trimFree()
	}
}

// trimFree shortens the free list to what the current peak justifies.
// Called with q.mu held.
func (q *Queue[K]) trimFree() {
	for limit := max(maxFreeLanes, q.highLen); q.nfree > limit; q.nfree-- {
		l := q.free
		q.free, l.freeNext = l.freeNext, nil
	}
}
