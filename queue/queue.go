package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Queue serializes jobs per key: jobs with the same key run one at a time,
// in the order they were submitted; jobs with different keys run in
// parallel, up to the limit set with [WithMaxConcurrent], and fairly.
//
// A Queue must be created with [New]. It is safe for concurrent use.
type Queue[K comparable] struct {
	opts  options
	epoch time.Time // origin of Handle.enq

	mu      sync.Mutex
	lanes   map[K]*lane[K]
	highLen int      // largest len(lanes) since the map was last rebuilt
	readyH  *lane[K] // lanes with waiting jobs and no slot, oldest first
	readyT  *lane[K]
	free    *lane[K] // recycled lanes
	nfree   int
	running int // slots in use: lanes that are busy
	queued  int // jobs waiting
	closed  bool
	drained chan struct{} // closed when closed && queued == 0 && running == 0

	// Context watchers registered by Handle.Done, by handle.
	watches map[*Handle[K]]func() bool

	// Tests only: called under q.mu once Do's job is in line or started.
	afterDoEnqueue func()
}

// New returns an empty, open queue.
func New[K comparable](opts ...Option) *Queue[K] {
	q := &Queue[K]{lanes: make(map[K]*lane[K])}
	for _, o := range opts {
		if o != nil {
			o.apply(&q.opts)
		}
	}
	if q.opts.observer != nil {
		q.epoch = time.Now()
	}
	return q
}

// errNilFunc is returned for a nil job function.
var errNilFunc = errors.New("queue: nil job function")

// Do submits fn for key and waits for its result. fn receives ctx.
//
// If ctx ends before fn starts, fn never runs and Do returns ctx.Err() at
// once. Once fn has started, Do waits for it to return, whatever happens to
// ctx, and returns its error; fn is expected to honour ctx. A panic in fn is
// returned as a [*PanicError]. Do fails, running nothing, with ctx.Err() if
// ctx has already ended, with [ErrClosed] after Close, and with an error
// wrapping [ErrFull] when the key's bound is reached.
//
// When the key is idle and a slot is free, Do runs fn on the calling
// goroutine.
func (q *Queue[K]) Do(ctx context.Context, key K, fn func(context.Context) error, opts ...JobOption) error {
	if fn == nil {
		return errNilFunc
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	jo := mergeJobOptions(opts)

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if l := q.lanes[key]; l == nil && q.hasSlot() {
		// Nothing waits for this key and a slot is free: the job is first
		// in line and may start now, right here.
		l = q.newLane(key)
		l.busy = true
		q.running++
		if q.afterDoEnqueue != nil {
			q.afterDoEnqueue()
		}
		q.mu.Unlock()
		return q.runInline(l, ctx, fn)
	}
	h := &Handle[K]{q: q, fn: fn, ctxOrErr: ctx, done: make(chan struct{})}
	h, start, ev, err := q.enqueue(h, key, jo)
	if err == nil && q.afterDoEnqueue != nil {
		q.afterDoEnqueue()
	}
	q.mu.Unlock()
	if err != nil {
		return err
	}
	q.started(start, ev)

	select {
	case <-h.done:
		return h.err()
	case <-ctx.Done():
	}
	switch q.cancel(h, ctx) {
	case canceledNow, replaced:
		// Either the job left the line now, or a newer job took it over
		// before it started; in both cases our fn never runs.
		return ctx.Err()
	}
	<-h.done
	return h.err()
}

// runInline runs a job that took lane l's slot on the submitter's
// goroutine, then passes the slot on.
func (q *Queue[K]) runInline(l *lane[K], ctx context.Context, fn func(context.Context) error) error {
	var start time.Time
	if q.opts.observer != nil {
		start = time.Now()
	}
	err := q.call(ctx, fn)
	var ev Event
	if q.opts.observer != nil {
		ev = Event{Key: l.key, Outcome: Ran, Ran: time.Since(start), Err: err}
	}

	q.mu.Lock()
	key := l.key
	next := q.release(l)
	if q.opts.observer != nil {
		ev.KeyDepth, ev.Depth = q.depths(key)
	}
	q.mu.Unlock()
	if next != nil {
		go q.work(next)
	}
	if q.opts.observer != nil {
		q.opts.observer(ev)
	}
	return err
}

// Submit queues fn for key and returns at once with a [Handle] to await its
// result. fn receives ctx. If ctx ends before fn starts, fn never runs and
// the handle's result is ctx.Err(): [Handle.Wait] and [Handle.Done] report
// it at once, and a job nobody waits for leaves the line when its turn
// comes, without running.
//
// Submit fails, queuing nothing, with ctx.Err() if ctx has already ended,
// with [ErrClosed] after Close, and with an error wrapping [ErrFull] when the
// key's bound is reached. When the job coalesces with a waiting one (see
// [Coalesce]), the returned handle is shared with that job's submitters.
func (q *Queue[K]) Submit(ctx context.Context, key K, fn func(context.Context) error, opts ...JobOption) (*Handle[K], error) {
	if fn == nil {
		return nil, errNilFunc
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	jo := mergeJobOptions(opts)
	h := &Handle[K]{q: q, fn: fn, ctxOrErr: ctx} // outside the lock: keep it short
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	h, start, ev, err := q.enqueue(h, key, jo)
	q.mu.Unlock()
	if err != nil {
		return nil, err
	}
	q.started(start, ev)
	return h, nil
}

// started completes a submission outside the lock: it starts the worker
// enqueue asked for, and reports a coalesced job.
func (q *Queue[K]) started(start *lane[K], ev *Event) {
	if start != nil {
		go q.work(start)
	}
	q.emit(ev)
}

// enqueue appends the new job h to key's lane, or, when h carries a tag and
// a job with that tag waits, merges h into that job and returns the job's
// handle instead of h. It returns the job's handle, the lane whose worker
// the caller must start, if any, and the observer's event for a coalesced
// job. Called with q.mu held.
//
// Nothing watches a job's context while it waits: the worker checks it
// before running the job (a job whose context has ended never runs), Do and
// Handle.Wait watch it while they wait, and Handle.Done registers a watcher
// when it is called. Jobs nobody waits for cost no watcher.
func (q *Queue[K]) enqueue(h *Handle[K], key K, jo JobOption) (_ *Handle[K], start *lane[K], ev *Event, err error) {
	l := q.lanes[key]
	if l != nil && jo.tag != "" {
		if old := l.findTagged(jo.tag); old != nil {
			old.fn, old.ctxOrErr = h.fn, h.ctxOrErr
			if h.done != nil && old.done == nil {
				old.done = h.done // the caller waits on it
			}
			if old.watched || old.done != nil {
				// Its waiters watch the context the job had when they
				// started waiting: watch the new one for them.
				q.unwatch(old)
				q.watch(old)
			}
			if q.opts.observer != nil {
				ev = &Event{Key: key, Outcome: Coalesced, Waited: q.since(old.enq)}
				ev.KeyDepth, ev.Depth = q.depths(key)
			}
			return old, nil, ev, nil
		}
	}
	if l != nil && q.opts.maxPerKey > 0 && l.n >= q.opts.maxPerKey {
		return nil, nil, nil, fmt.Errorf("%w: key %v has %d waiting (limit %d)", ErrFull, key, l.n, q.opts.maxPerKey)
	}
	if l == nil {
		l = q.newLane(key)
	}
	if q.opts.observer != nil {
		h.enq = time.Since(q.epoch)
	}
	h.lane = l
	l.push(h)
	if jo.tag != "" {
		h.tagged = true
		l.tagged = append(l.tagged, taggedJob[K]{tag: jo.tag, h: h})
	}
	q.queued++
	if !l.busy && !l.ready {
		if q.hasSlot() {
			l.busy = true
			q.running++
			start = l
		} else {
			q.pushReady(l)
		}
	}
	return h, start, nil, nil
}

// hasSlot reports whether one more lane may run. Called with q.mu held.
func (q *Queue[K]) hasSlot() bool {
	return q.opts.maxConcurrent == 0 || q.running < q.opts.maxConcurrent
}

// mergeJobOptions folds opts into one; later options win.
func mergeJobOptions(opts []JobOption) JobOption {
	var jo JobOption
	for _, o := range opts {
		if o.tag != "" {
			jo.tag = o.tag
		}
	}
	return jo
}

// remove resolves a waiting job that will never run, leaving a hole in its
// place, and forgets the lane if that leaves it idle. Called with q.mu held.
func (q *Queue[K]) remove(h *Handle[K], err error, outcome Outcome) *Event {
	l := h.lane
	h.lane = nil
	if h.tagged {
		l.untag(h)
	}
	*l.at(h.seq) = nil
	l.n--
	q.queued--
	key := l.key
	if l.n == 0 && !l.busy {
		if l.ready {
			q.removeReady(l)
		}
		q.dropLane(l)
	}
	return q.finish(key, h, err, outcome, 0)
}

// finish records a job's result and releases its waiters. It returns the
// observer's event, if there is an observer. Called with q.mu held.
func (q *Queue[K]) finish(key K, h *Handle[K], err error, outcome Outcome, ran time.Duration) *Event {
	q.unwatch(h)
	h.state = finished
	h.ctxOrErr = err // lets the context go while the handle lives on
	h.fn = nil
	if h.done != nil {
		close(h.done)
	}
	if q.opts.observer == nil {
		return nil
	}
	ev := &Event{Key: key, Outcome: outcome, Ran: ran, Err: err}
	ev.Waited = q.since(h.enq) - ran
	ev.KeyDepth, ev.Depth = q.depths(key)
	return ev
}

// since returns the time elapsed since enq, a time since q.epoch.
func (q *Queue[K]) since(enq time.Duration) time.Duration {
	return time.Since(q.epoch) - enq
}

// depths returns the jobs waiting for key and in the whole queue. Called with
// q.mu held.
func (q *Queue[K]) depths(key K) (keyDepth, depth int) {
	if l := q.lanes[key]; l != nil {
		keyDepth = l.n
	}
	return keyDepth, q.queued
}

// emit hands an event to the observer. Called without q.mu.
func (q *Queue[K]) emit(ev *Event) {
	if ev != nil {
		q.opts.observer(*ev)
	}
}

// Close stops the queue from accepting work and waits until every job
// already submitted has finished, or until ctx ends.
//
// After Close is called, Do and Submit return [ErrClosed]. Jobs waiting at
// that moment still run, in order, and Close returns nil once they and the
// running ones have finished. If ctx ends first, Close drops every job that
// has not started: it never runs, and its waiters receive [ErrClosed]. Jobs
// already running are left to finish on their own (their functions hold
// their submitters' contexts); Close returns ctx.Err() without waiting for
// them. Calling Close again waits for those running jobs.
func (q *Queue[K]) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	if q.drained == nil {
		q.drained = make(chan struct{})
		q.checkDrained()
	}
	drained := q.drained
	q.mu.Unlock()

	select {
	case <-drained:
		return nil
	case <-ctx.Done():
	}

	// Give up on everything that has not started.
	q.mu.Lock()
	var lanes []*lane[K]
	for _, l := range q.lanes {
		if l.n > 0 {
			lanes = append(lanes, l)
		}
	}
	var events []*Event
	for _, l := range lanes {
		// remove drops and recycles l with its last job; l.n says when.
		for seq := l.seq; l.n > 0; seq++ {
			if h := *l.at(seq); h != nil {
				if ev := q.remove(h, ErrClosed, Dropped); ev != nil {
					events = append(events, ev)
				}
			}
		}
	}
	q.checkDrained()
	q.mu.Unlock()
	for _, ev := range events {
		q.emit(ev)
	}
	select {
	case <-drained:
		return nil
	default:
		return ctx.Err()
	}
}

// checkDrained closes q.drained when the closed queue has no work left.
// Called with q.mu held.
func (q *Queue[K]) checkDrained() {
	if q.drained != nil && q.queued == 0 && q.running == 0 {
		select {
		case <-q.drained:
		default:
			close(q.drained)
		}
	}
}

// Stats is a snapshot of a queue's load.
type Stats struct {
	Keys    int  // keys with a waiting or running job
	Waiting int  // jobs submitted and not yet started
	Running int  // jobs running
	Closed  bool // Close has been called
}

// Stats returns a snapshot of the queue's load.
func (q *Queue[K]) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return Stats{Keys: len(q.lanes), Waiting: q.queued, Running: q.running, Closed: q.closed}
}
