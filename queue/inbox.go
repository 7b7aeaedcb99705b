package queue

// The inbox. A submission that needs no look at its key's lane before it
// goes in line (no coalescing tag, no bound per key) and finds its shard's
// lock taken does not wait for it: it pushes its job onto the shard's
// inbox, a lock-free stack, and returns. Whoever holds the lock moves the
// inbox's jobs into their lanes, in the order they were pushed, before it
// looks at any lane (lock) and again after it lets go of the lock (settle).
// A submitter that pushes and then fails to take the lock knows somebody
// holds it; that holder, or the next, releases it after the push and so
// finds the job when it checks the inbox after unlocking. Every job thus
// reaches its lane, and a shard's jobs reach their lanes in push order, so
// each key's jobs keep the order in which their submissions were pushed or
// took the lock.
//
// Draining may give lanes a slot: their workers are started once the lock
// is released (see unlock). Events it makes, for jobs dropped because
// Close gave up (see drain), are reported then too.

// push puts the waiting job h on the shard's inbox. Called without s.mu.
func (s *shard[K]) push(h *Handle[K]) {
	for {
		old := s.inbox.Load()
		h.next = old
		if s.inbox.CompareAndSwap(old, h) {
			return
		}
	}
}

// lock takes s.mu and moves the jobs waiting in the inbox to their lanes,
// so that the caller sees every job submitted before it.
func (s *shard[K]) lock() {
	s.mu.Lock()
	if s.inbox.Load() != nil {
		s.drain()
	}
}

// unlock releases s.mu, starts the workers and reports the events that the
// critical section left for after it, and then drains what was pushed
// while the lock was held (settle).
func (s *shard[K]) unlock() {
	if s.startH == nil && s.events == nil && !s.dropped {
		s.mu.Unlock()
	} else {
		starts, events, dropped := s.takePending()
		s.mu.Unlock()
		s.q.launch(starts, events, dropped)
	}
	s.settle()
}

// settle drains the jobs pushed onto the inbox while somebody held s.mu,
// unless somebody holds it again, who will. Called without s.mu, by
// whoever has just released it, and by a submitter after its push.
func (s *shard[K]) settle() {
	for s.inbox.Load() != nil && s.mu.TryLock() {
		s.drain()
		starts, events, dropped := s.takePending()
		s.mu.Unlock()
		s.q.launch(starts, events, dropped)
	}
}

// takePending returns, and forgets, the lanes whose workers are to start
// and the events to report once s.mu is released, and whether jobs were
// dropped meanwhile. Called with s.mu held.
func (s *shard[K]) takePending() (starts *lane[K], events []*Event, dropped bool) {
	starts, events, dropped = s.startH, s.events, s.dropped
	s.startH, s.events, s.dropped = nil, nil, false
	return starts, events, dropped
}

// launch starts the workers of the lanes in starts, linked through
// nextStart, and reports events. Called without locks.
func (q *Queue[K]) launch(starts *lane[K], events []*Event, dropped bool) {
	for l := starts; l != nil; {
		next := l.nextStart
		l.nextStart = nil // l holds its slot: only we touch it until it runs
		l.start()
		l = next
	}
	for _, ev := range events {
		q.emit(ev)
	}
	if dropped {
		q.noteDequeued()
	}
}

// drain moves the jobs on the inbox to their lanes, oldest first. Once
// Close has given up waiting (q.dropping), it drops them instead, as Close
// dropped those already in line. Called with s.mu held.
func (s *shard[K]) drain() {
	var first *Handle[K]
	for h := s.inbox.Swap(nil); h != nil; {
		next := h.next
		h.next = first
		first = h
		h = next
	}
	for h := first; h != nil; {
		next := h.next
		h.next = nil
		if s.q.dropping.Load() {
			s.queued.Add(-1)
			s.dropped = true
			if ev := s.finish(h.key, h, ErrClosed, Dropped, 0); ev != nil {
				s.events = append(s.events, ev)
			}
		} else {
			s.add(h)
		}
		h = next
	}
}
