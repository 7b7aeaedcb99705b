package queue

// lane holds the waiting jobs of one active key, in submit order, in a list
// linked through the handles themselves, so that queuing a job allocates
// nothing beyond its handle. A key is active while it has a waiting or
// running job, and its lane is then scheduled; the lane of an inactive key
// is idle, kept in its shard's map for the key's next job, or gone (see
// retention.go).
//
// A job that leaves the line early (canceled, dropped) is finished in place
// and stays linked, a hole, until the lane reaches it or is dropped, so
// removal is O(1). A handle is unlinked (its next cleared) when it leaves
// the list, so a finished handle a caller keeps never holds other jobs.
type lane[K comparable] struct {
	key  K
	s    *shard[K]  // the shard that owns key
	head *Handle[K] // oldest linked job, hole or waiting
	tail *Handle[K]
	n    int // waiting jobs, holes excluded

	// Guarded by s.mu. A scheduled lane is in the ready list or holds a
	// slot; every lane with a waiting job is scheduled.
	scheduled bool
	freeNext  *lane[K] // free list link
	nextStart *lane[K] // link in the shard's list of workers to start

	// work runs a worker on this lane; see start. Made the first time a
	// worker starts on the lane, and kept when it is recycled.
	work func()

	// Guarded by q.mu.
	ready     bool     // in the ready list, waiting for a free slot
	nextReady *lane[K] // ready list link

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
	q.nready.Add(1)
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
	q.nready.Add(-1)
	q.progress++
	return l
}

// removeReady takes l, which must be ready, out of the ready list, wherever
// it is. It walks the
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
	q.nready.Add(-1)
}

// push appends h.
func (l *lane[K]) push(h *Handle[K]) {
	if l.tail == nil {
		l.head = h
	} else {
		l.tail.next = h
	}
	l.tail = h
	l.n++
}

// pop takes the oldest waiting job, unlinking the holes before it, or
// returns nil when no job waits.
func (l *lane[K]) pop() *Handle[K] {
	for h := l.head; h != nil; h = l.head {
		l.head, h.next = h.next, nil
		if l.head == nil {
			l.tail = nil
		}
		if h.state == waiting {
			l.n--
			return h
		}
	}
	return nil
}

// unlinkAll empties the list, unlinking any holes left in it. Called when
// the lane is dropped, so only holes remain.
func (l *lane[K]) unlinkAll() {
	for h := l.head; h != nil; {
		h, h.next = h.next, nil
	}
	l.head, l.tail = nil, nil
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

// start starts a worker on lane l, which holds a slot: go l.work(), with a
// function made once per lane, so that starting a worker allocates
// nothing, as go q.work(l) would, and a lane that a worker already running
// takes over never allocates one. Called by whoever took the slot for l,
// the only one to touch l.work until the worker runs.
func (l *lane[K]) start() {
	if l.work == nil {
		l.work = func() { l.s.q.work(l) }
	}
	go l.work()
}
