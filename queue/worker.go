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
	for l != nil {
		s := l.s
		s.mu.Lock()
		h := l.pop()
		if h == nil {
			// Its jobs left the line while it waited for its turn.
			l = q.release(l, true)
			continue
		}
		q.queued.Add(-1)
		if h.tagged {
			l.untag(h)
		}
		h.state = running // from here on, cancel leaves h to us
		h.lane = nil
		s.unwatch(h)
		ctx, fn := h.ctx(), h.fn
		s.mu.Unlock()

		outcome, err := q.run(ctx, fn)

		s.mu.Lock()
		ev := s.finish(l.key, h, err, outcome.Outcome, outcome.ran)
		if outcome.Outcome == Canceled && l.n > 0 {
			// Skipping a job that never ran costs the lane no turn,
			// exactly as if it had left the line when its context ended.
			s.mu.Unlock()
		} else {
			l = q.release(l, true)
		}
		q.emit(ev)
	}
}

// release frees lane l's slot after one job and passes the slot on: to the
// oldest ready lane (l itself goes to the back of the line if it has more
// work), or back to l when nobody else waits. It returns the lane that now
// holds the slot, or nil when the slot is free. Called with l.s.mu held,
// which it releases. A worker (linger) that finds nothing to do lingers
// briefly before it gives up its slot; see linger.
func (q *Queue[K]) release(l *lane[K], linger bool) *lane[K] {
	s := l.s
	more := l.n > 0
	if !more {
		l.scheduled = false
		s.dropLane(l)
	}
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
	case linger && q.lingering == 0:
		q.lingering++
		q.mu.Unlock()
		return q.linger()
	default:
		return q.freeSlot(linger) // unlocks q.mu
	}
	q.mu.Unlock()
	return next
}

// lingerTurns is how many times a worker with nothing to do yields the
// processor, looking for work after each turn, before it gives up.
const lingerTurns = 32

// lingerSleep is how long the last worker of a queue that would run dry
// with shards to trim waits, asleep, for work before it exits.
const lingerSleep = time.Millisecond

// linger keeps an idle worker, and its slot, for a few scheduler turns, so
// that a submitter producing one job at a time hands its jobs to a worker
// already running rather than starting a goroutine for each. At most one
// worker lingers: more take processor time from the submitters they wait
// for. A submission that finds it with nothing to take passes it the new
// lane through the ready list, and wakes it, instead of starting a worker.
// It returns the lane the worker takes, or nil once its slot is free.
// Called without locks, with q.lingering counting this worker.
func (q *Queue[K]) linger() *lane[K] {
	for range lingerTurns {
		if q.lingerHook != nil {
			q.lingerHook()
		}
		runtime.Gosched()
		if q.nready.Load() == 0 {
			continue // look without contending for q.mu
		}
		q.mu.Lock()
		if q.readyH != nil {
			q.lingering--
			next := q.popReady()
			q.mu.Unlock()
			return next
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	q.lingering--
	if q.readyH != nil {
		next := q.popReady()
		q.mu.Unlock()
		return next
	}
	return q.freeSlot(true) // unlocks q.mu
}

// freeSlot gives up a slot when no lane is ready. It returns the lane the
// worker takes instead, if it waited and work came, or nil once the slot is
// free. Called with q.mu held, which it releases.
//
// If that leaves the queue dry, it sweeps the shards (see sweep) before a
// closed queue counts as drained, so that Close returns on a queue that
// holds no more than a new one. But first, if the sweep would trim shards
// and the caller is a worker that may wait (mayWait), the worker keeps its
// slot and sleeps up to lingerSleep, lingering, for new work: a queue fed
// by one submitter runs dry whenever that submitter is descheduled, and
// trimming the shards each time would reallocate their lanes as soon as it
// resumes. The queue holds that goroutine for that moment only.
func (q *Queue[K]) freeSlot(mayWait bool) *lane[K] {
	q.running--
	if q.running == 0 && q.queued.Load() == 0 && q.oversized.Load() > 0 {
		if mayWait && q.lingering == 0 && !q.closed.Load() {
			q.running++
			q.lingering++
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
			q.lingering--
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
	}
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
