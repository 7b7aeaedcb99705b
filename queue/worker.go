package queue

import (
	"context"
	"runtime/debug"
	"time"
)

// work runs the jobs of lane l, then of other ready lanes, one job per turn,
// until no lane is ready. A worker holds one slot for its whole life, so the
// number of running lanes never exceeds the global limit.
func (q *Queue[K]) work(l *lane[K]) {
	q.mu.Lock()
	for {
		if h := l.pop(); h != nil {
			q.queued--
			if h.tagged {
				l.untag(h)
			}
			h.state = running // from here on, cancel leaves h to us
			h.lane = nil
			q.unwatch(h)
			ctx, fn := h.ctx(), h.fn
			q.mu.Unlock()

			outcome, err := q.run(ctx, fn)

			q.mu.Lock()
			if ev := q.finish(l.key, h, err, outcome.Outcome, outcome.ran); ev != nil {
				q.mu.Unlock()
				q.emit(ev)
				q.mu.Lock()
			}
			if outcome.Outcome == Canceled && l.n > 0 {
				// Skipping a job that never ran costs the lane no turn,
				// exactly as if it had left the line when its context
				// ended.
				continue
			}
		}
		if l.n > 0 && q.readyH == nil {
			continue // nobody else is waiting for a slot: go on with l
		}
		if l = q.release(l); l == nil {
			q.mu.Unlock()
			return
		}
	}
}

// release frees lane l's slot after one job and passes the slot on: to the
// oldest ready lane (l itself goes to the back of the line if it has more
// work), or back to l when nobody else waits. It returns the lane that now
// holds the slot, or nil when the slot is free. Called with q.mu held.
func (q *Queue[K]) release(l *lane[K]) *lane[K] {
	l.busy = false
	if l.n > 0 {
		q.pushReady(l)
	} else {
		q.dropLane(l)
	}
	if q.readyH == nil {
		q.running--
		q.checkDrained()
		return nil
	}
	next := q.popReady()
	next.busy = true
	return next
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
