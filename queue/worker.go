package queue

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// work runs the jobs of lane l, then of other ready lanes, one job per turn,
// until no lane is ready. A worker holds one slot for its whole life, so the
// number of running lanes never exceeds the global limit.
func (q *Queue[K]) work(l *lane[K]) {
	s := l.s
	s.lock()
	for {
		h := l.pop()
		if h == nil {
			// Its jobs left the line while it waited for its turn.
			if l = q.release(l, true); l == nil {
				return
			}
			s = l.s
			s.lock()
			continue
		}
		s.queued.Add(-1)
		if h.tagged {
			l.untag(h)
		}
		h.state = running // from here on, cancel leaves h to us
		s.running++
		s.unwatch(h)
		ctx, fn := h.ctx(), h.fn
		s.unlock()

		outcome, err := q.run(ctx, fn)

		s.lock()
		s.running--
		if ev := s.finish(l.key, h, err, outcome.Outcome, outcome.ran); ev != nil {
			// Report before the worker moves on, or lingers.
			s.unlock()
			q.emit(ev)
			s.lock()
		}
		if l.n > 0 && (outcome.Outcome == Canceled || q.nready.Load() == 0) {
			// Go on with l's next job, still holding the lock: skipping
			// a job that never ran costs the lane no turn, exactly as
			// if it had left the line when its context ended, and with
			// no lane waiting for a slot, l's turn goes on. A lane
			// that becomes ready after this look waits for the next.
			continue
		}
		if l = q.release(l, true); l == nil {
			return
		}
		s = l.s
		s.lock()
	}
}

// release frees lane l's slot after one job and passes the slot on: to the
// oldest ready lane (l itself goes to the back of the line if it has more
// work), or back to l when nobody else waits. It returns the lane that now
// holds the slot, or nil when the slot is free. Called with l.s.mu held,
// which it releases (see shard.unlock). A worker (linger) that finds
// nothing to do lingers briefly before it gives up its slot; see linger.
func (q *Queue[K]) release(l *lane[K], linger bool) *lane[K] {
	s := l.s
	more := l.n > 0
	if !more {
		s.idle(l) // l may be evicted and reused: only more touches it below
	}
	starts, events, dropped := s.takePending()
	q.mu.Lock()
	s.mu.Unlock()
	// l stays scheduled while it has work, so no submitter touches its
	// place in the ready list; if its jobs leave the line meanwhile, the
	// worker that takes it finds it empty.
	var next *lane[K]
	switch {
	case more && q.readyH == nil:
		next = l // nobody else is waiting for a slot: go on with l
	case more:
		q.pushReady(l)
		next = q.popReady()
	case q.readyH != nil:
		next = q.popReady()
	case starts == nil && events == nil && !dropped && s.inbox.Load() == nil:
		// Nothing left to do after the lock: decide now.
		return q.idleLocked(linger) // unlocks q.mu
	default:
		// Jobs were pushed while s.mu was held: drain them, which may
		// make a lane ready, before deciding what to do with the slot.
		q.mu.Unlock()
		q.launch(starts, events, dropped)
		s.settle()
		return q.idle(linger)
	}
	q.mu.Unlock()
	q.launch(starts, events, dropped)
	s.settle()
	return next
}

// idle decides what a worker with no lane does with its slot: take the
// oldest ready lane, linger, or give the slot up. It returns the lane the
// worker takes, or nil once the slot is free. Called without locks.
func (q *Queue[K]) idle(linger bool) *lane[K] {
	q.mu.Lock()
	return q.idleLocked(linger)
}

// idleLocked is idle, called with q.mu held, which it releases.
func (q *Queue[K]) idleLocked(linger bool) *lane[K] {
	if q.readyH != nil {
		next := q.popReady()
		q.mu.Unlock()
		return next
	}
	if linger && q.mailbox.CompareAndSwap(nil, q.lingerMark) {
		q.mu.Unlock()
		return q.linger()
	}
	return q.freeSlot(linger) // unlocks q.mu
}

// lingerTurns is how many times a worker with nothing to do yields the
// processor, looking for work after each turn, before it gives up. Few:
// a worker that yields stays runnable, and on a machine with few
// processors it then takes turns from the very submitter it waits for.
// With one submitter and trivial jobs on 2 cores, 32 turns gave 25-45%
// fewer jobs per second than 1, 2 or 4, which did equally well.
const lingerTurns = 2

// lingerSleep is how long the last worker of a queue that would run dry
// with shards to trim waits, asleep, for work before it exits: as long as
// the Go scheduler lets a goroutine run before it preempts it, so that a
// submitter that merely lost its processor for a turn finds its keys'
// lanes still there. At 1ms, one submitter over 10,000 keys on 2 cores
// still made the queue trim and reallocate them now and then.
const lingerSleep = 10 * time.Millisecond

// linger keeps an idle worker, and its slot, for a scheduler turn or two, so
// that a submitter producing one job at a time hands its jobs to a worker
// already running rather than starting a goroutine for each. At most one
// worker lingers: more take processor time from the submitters they wait
// for. A submission that finds it with nothing to do, and no lane ready,
// hands it the new lane through q.mailbox, without taking q.mu, instead of
// starting a worker. It returns the lane the worker takes, or nil once its
// slot is free. Called without locks, with q.mailbox set to lingerMark.
func (q *Queue[K]) linger() *lane[K] {
	for range lingerTurns {
		if q.lingerHook != nil {
			q.lingerHook()
		}
		runtime.Gosched()
		if l := q.mailbox.Load(); l != q.lingerMark {
			q.mailbox.Store(nil) // nobody else changes a handed lane
			return l
		}
		if q.nready.Load() == 0 {
			continue // look without contending for q.mu
		}
		q.mu.Lock()
		if l := q.stopLingering(); l != nil {
			q.mu.Unlock()
			return l
		}
		if q.readyH != nil {
			next := q.popReady()
			q.mu.Unlock()
			return next
		}
		q.mailbox.Store(q.lingerMark) // nothing was ready after all
		q.mu.Unlock()
	}
	q.mu.Lock()
	if l := q.stopLingering(); l != nil {
		q.mu.Unlock()
		return l
	}
	if q.readyH != nil {
		next := q.popReady()
		q.mu.Unlock()
		return next
	}
	return q.freeSlot(true) // unlocks q.mu
}

// stopLingering ends the lingering of the calling worker and returns the
// lane a submitter handed it meanwhile, if any. Called with q.mu held, so
// that no other worker starts lingering before the caller decides.
func (q *Queue[K]) stopLingering() *lane[K] {
	if q.mailbox.CompareAndSwap(q.lingerMark, nil) {
		return nil
	}
	l := q.mailbox.Load()
	q.mailbox.Store(nil)
	return l
}

// freeSlot gives up a slot when no lane is ready. It returns the lane the
// worker takes instead, if work came meanwhile, or nil once the slot is
// free. Called with q.mu held, which it releases.
//
// If the slot is the last one held, so that freeing it leaves the queue
// dry, the worker first sweeps the shards (see sweep), still holding it, so
// that a closed queue counts as drained only once it holds no more than a
// new one. But before
// that, if the sweep would trim shards and the caller is a worker that may
// wait (mayWait), it lingers, asleep, up to lingerSleep for new work: a
// queue fed by one submitter runs dry whenever that submitter is
// descheduled, and trimming the shards each time would reallocate their
// lanes as soon as it resumes. The queue holds that goroutine for that
// moment only.
func (q *Queue[K]) freeSlot(mayWait bool) *lane[K] {
	if q.running == 1 && q.waiting() == 0 && q.oversized.Load() > 0 {
		if mayWait && !q.closed.Load() && q.mailbox.CompareAndSwap(nil, q.lingerMark) {
			q.mu.Unlock()
			select {
			case <-q.wake: // drop a stale wake-up
			default:
			}
			if q.sleepHook != nil {
				q.sleepHook()
			}
			t := time.NewTimer(q.lingerSleep)
			select {
			case <-q.wake:
			case <-t.C:
			}
			t.Stop()
			q.mu.Lock()
			if l := q.stopLingering(); l != nil {
				q.mu.Unlock()
				return l
			}
			if q.readyH != nil {
				next := q.popReady()
				q.mu.Unlock()
				return next
			}
			return q.freeSlot(false)
		}
		q.mu.Unlock()
		q.sweep()
		q.mu.Lock()
		if q.readyH != nil { // work came during the sweep
			next := q.popReady()
			q.mu.Unlock()
			return next
		}
	}
	q.running--
	q.checkDrained()
	q.mu.Unlock()
	return nil
}

// noteDequeued closes q.drained if a job leaving the line, not through a
// worker, was the last work of a closed queue. Called without locks.
func (q *Queue[K]) noteDequeued() {
	if q.closed.Load() {
		q.mu.Lock()
		q.checkDrained()
		q.mu.Unlock()
	}
}

// runOutcome is what run reports besides the job's error.
type runOutcome struct {
	Outcome
	ran time.Duration // measured only with an observer
}

// run starts a job that has reached the head of its lane: unless its
// context has ended meanwhile, in which case it never runs.
func (q *Queue[K]) run(ctx context.Context, fn func(context.Context) error) (runOutcome, error) {
	if err := ctx.Err(); err != nil {
		return runOutcome{Outcome: Canceled}, err
	}
	if q.opts.observer == nil {
		return runOutcome{Outcome: Ran}, q.call(ctx, fn)
	}
	start := time.Now()
	err := q.call(ctx, fn)
	return runOutcome{Outcome: Ran, ran: time.Since(start)}, err
}

// call runs fn, turning a panic into a *PanicError.
func (q *Queue[K]) call(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(ctx)
}
