package queue

// lane holds the waiting jobs of one active key, in submit order, in a ring
// of handles. A key is active while it has a waiting or running job; an
// inactive key has no lane.
//
// A job that leaves the line early (canceled, dropped) leaves a nil hole in
// the ring until the lane reaches it or is dropped, so removal is O(1).
type lane[K comparable] struct {
	key  K
	ring []*Handle[K] // size is 0 or a power of two
	head int          // index of the oldest slot
	used int          // slots in use, holes included
	seq  uint32       // sequence number of ring[head]
	n    int          // waiting jobs, holes excluded

	busy      bool     // one of its jobs holds a slot
	ready     bool     // in the ready list, waiting for a free slot
	nextReady *lane[K] // ready list link
	freeNext  *lane[K] // free list link

	// Waiting jobs that carry a coalescing tag. A tagged job always merges
	// into a waiting one with the same tag, so there is at most one per
	// tag and the list is as short as the number of tags in use.
	tagged []taggedJob[K]
}

type taggedJob[K comparable] struct {
	tag string
	h   *Handle[K]
}

func (q *Queue[K]) pushReady(l *lane[K]) {
	l.ready = true
	if q.readyT == nil {
		q.readyH = l
	} else {
		q.readyT.nextReady = l
	}
	q.readyT = l
}

func (q *Queue[K]) popReady() *lane[K] {
	l := q.readyH
	q.readyH = l.nextReady
	if q.readyH == nil {
		q.readyT = nil
	}
	l.nextReady = nil
	l.ready = false
	return l
}

// removeReady takes l out of the ready list, wherever it is. It walks the
// list, but only runs when a waiting lane loses its last job early.
func (q *Queue[K]) removeReady(l *lane[K]) {
	var prev *lane[K]
	for c := q.readyH; c != nil; prev, c = c, c.nextReady {
		if c != l {
			continue
		}
		if prev == nil {
			q.readyH = c.nextReady
		} else {
			prev.nextReady = c.nextReady
		}
		if q.readyT == c {
			q.readyT = prev
		}
		break
	}
	l.nextReady = nil
	l.ready = false
}

// push appends h, giving it its sequence number.
func (l *lane[K]) push(h *Handle[K]) {
	if l.used == len(l.ring) {
		l.grow()
	}
	l.ring[(l.head+l.used)&(len(l.ring)-1)] = h
	h.seq = l.seq + uint32(l.used)
	l.used++
	l.n++
}

// grow doubles the ring, keeping its size a power of two so that positions
// wrap with a mask.
func (l *lane[K]) grow() {
	ring := make([]*Handle[K], max(2*len(l.ring), 4))
	for i := range l.used {
		ring[i] = l.ring[(l.head+i)&(len(l.ring)-1)]
	}
	l.ring, l.head = ring, 0
}

// pop takes the oldest waiting job, dropping the holes before it, or
// returns nil when no job waits.
func (l *lane[K]) pop() *Handle[K] {
	for l.used > 0 {
		slot := &l.ring[l.head]
		h := *slot
		*slot = nil
		l.head = (l.head + 1) & (len(l.ring) - 1)
		l.used--
		l.seq++
		if h != nil {
			l.n--
			return h
		}
	}
	return nil
}

// at returns the slot of sequence number seq, which must be in the ring.
// Sequence numbers wrap; the difference seq-l.seq is exact as long as
// fewer than 2^32 jobs wait in one lane.
func (l *lane[K]) at(seq uint32) **Handle[K] {
	return &l.ring[(l.head+int(seq-l.seq))&(len(l.ring)-1)]
}

// findTagged returns the waiting job with tag, or nil.
func (l *lane[K]) findTagged(tag string) *Handle[K] {
	for _, t := range l.tagged {
		if t.tag == tag {
			return t.h
		}
	}
	return nil
}

// untag forgets that h carries a tag.
func (l *lane[K]) untag(h *Handle[K]) {
	h.tagged = false
	for i, t := range l.tagged {
		if t.h == h {
			last := len(l.tagged) - 1
			copy(l.tagged[i:], l.tagged[i+1:])
			l.tagged[last] = taggedJob[K]{}
			l.tagged = l.tagged[:last]
			return
		}
	}
}
