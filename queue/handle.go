package queue

import (
	"context"
	"time"
)

// Handle is a submitted job. Its result can be awaited with [Handle.Wait] or
// [Handle.Done]. A Handle is safe for concurrent use.
type Handle[K comparable] struct {
	s *shard[K] // the shard of its key

	// Guarded by s.mu. Kept to 80 bytes: it is Submit's one allocation.
	state   uint8
	tagged  bool // listed in its lane's tagged list
	watched bool // Done registered a context watcher (see shard.watches)
	key     K
	next    *Handle[K] // next in its lane's list while linked (see lane), or in the inbox
	fn      func(context.Context) error
	// ctxOrErr holds the job's context until it finishes, then its error
	// (written before done is closed). One field for both saves the 16
	// bytes that put the handle in the next size class.
	ctxOrErr any
	enq      time.Duration // submission time since q.epoch; only with an observer
	done     chan struct{} // made when somebody waits; closed when finished
}

// ctx returns the context of a job that has not finished.
func (h *Handle[K]) ctx() context.Context {
	c, _ := h.ctxOrErr.(context.Context)
	return c
}

// err returns the result of a finished job.
func (h *Handle[K]) err() error {
	e, _ := h.ctxOrErr.(error)
	return e
}

// job states
const (
	waiting uint8 = iota
	running
	finished
)

// Done returns a channel that is closed when the job's result is known: it
// ran, its context ended before it started, or Close dropped it.
func (h *Handle[K]) Done() <-chan struct{} {
	s := h.s
	s.lock()
	defer s.unlock()
	if h.done == nil {
		h.done = make(chan struct{})
		if h.state == finished {
			close(h.done)
		}
	}
	if h.state == waiting && !h.watched {
		// Somebody may wait on the channel alone: make the job leave the
		// line as soon as its context ends, as Wait would.
		s.watch(h)
	}
	return h.done
}

// Wait blocks until the job's result is known and returns it, or until ctx
// ends, in which case it returns ctx.Err() and the job is unaffected: ctx
// only bounds the wait. To cancel a job, cancel the context it was submitted
// with.
func (h *Handle[K]) Wait(ctx context.Context) error {
	s := h.s
	for {
		s.lock()
		if h.state == finished {
			err := h.err()
			s.unlock()
			return err
		}
		if h.done == nil {
			h.done = make(chan struct{})
		}
		done, jobCtx := h.done, h.ctx()
		waiting := h.state == waiting
		s.unlock()
		var jobDone <-chan struct{}
		if waiting {
			// While the job waits, its context ending resolves it: watch
			// that here rather than paying for a watcher on every job.
			jobDone = jobCtx.Done()
		}
		select {
		case <-done:
			return h.err() // written before done was closed
		case <-ctx.Done():
			return ctx.Err()
		case <-jobDone:
			s.q.cancel(h, jobCtx) // resolves h, or finds it started or retargeted
		}
	}
}

// watch makes the waiting job h leave the line as soon as its context
// ends. If it has ended already, AfterFunc runs the watcher on its own
// goroutine, which waits for s.mu: no deadlock. Called with s.mu held.
func (s *shard[K]) watch(h *Handle[K]) {
	ctx := h.ctx()
	if ctx.Done() == nil {
		return // it cannot end
	}
	if s.watches == nil {
		s.watches = make(map[*Handle[K]]func() bool)
	}
	s.watches[h] = context.AfterFunc(ctx, func() { s.q.cancel(h, ctx) })
	h.watched = true
}

// unwatch removes h's watcher, if it has one. Called with s.mu held.
func (s *shard[K]) unwatch(h *Handle[K]) {
	if !h.watched {
		return
	}
	if stop := s.watches[h]; stop != nil {
		stop()
	}
	delete(s.watches, h)
	if len(s.watches) == 0 {
		s.watches = nil // a map never shrinks; this one is rarely used
	}
	h.watched = false
}

// cancelResult is what cancel found.
type cancelResult uint8

const (
	canceledNow cancelResult = iota // the job was waiting for ctx and is now resolved with ctx.Err()
	replaced                        // the job is waiting, but for a newer submitter's ctx
	tooLate                         // the job has started or finished
)

// cancel takes the job h out of line if it is still waiting for ctx, and
// resolves it with ctx.Err().
func (q *Queue[K]) cancel(h *Handle[K], ctx context.Context) cancelResult {
	s := h.s
	s.lock()
	if h.state != waiting {
		s.unlock()
		return tooLate
	}
	if h.ctx() != ctx {
		s.unlock()
		return replaced
	}
	ev := s.remove(h, ctx.Err(), Canceled)
	s.unlock()
	q.noteDequeued()
	q.emit(ev)
	return canceledNow
}
