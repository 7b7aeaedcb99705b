package queue

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Queue serializes jobs per key: jobs with the same key run one at a time,
// in the order they were submitted; jobs with different keys run in
// parallel, up to the limit set with [WithMaxConcurrent], and fairly.
//
// A Queue must be created with [New]. It is safe for concurrent use.
//
// Its state is split between shards and a scheduler. Each key belongs to one
// shard (by hash), whose lock guards the key's lane and jobs; the scheduler's
// lock, q.mu, guards the slots and the ready list. Locks are taken in that
// order: a shard's, then q.mu, never the other way round. A submission for a
// key whose lane already waits or runs takes only its shard's lock, or, if
// it is held, leaves the job on the shard's inbox (see inbox.go).
type Queue[K comparable] struct {
	// Read by every submission, written at most once after New.
	opts       options
	epoch      time.Time // origin of Handle.enq
	seed       maphash.Seed
	shards     []shard[K] // len is shardCount
	closed     atomic.Bool
	dropping   atomic.Bool // Close gave up waiting: drop what is not started
	lingerMark *lane[K]
	wake       chan struct{} // wakes a lingering worker that sleeps; buffered

	// Tests only: called under the key's shard lock once Do's job is in
	// line or started.
	afterDoEnqueue atomic.Pointer[func()]
	lingerSleep    time.Duration // lingerSleep, but for tests
	idleCap        int           // shardIdle, but for tests: see retention.go

	// Tests only: set before any work, called without locks at each turn
	// of a lingering worker, and before the last worker sleeps.
	lingerHook, sleepHook func()

	// Written by workers: kept off the cache lines of the fields above,
	// which every submission reads.
	_ cacheLinePad

	mu     sync.Mutex
	readyH *lane[K] // lanes with waiting jobs and no slot, oldest first
	readyT *lane[K]

	// The lingering worker's mailbox (see linger): nil when no worker
	// lingers, lingerMark when one does with nothing to do, or the lane a
	// submitter handed it. Only a holder of q.mu sets it from nil, only a
	// submitter from lingerMark to a lane, only the lingering worker back.
	mailbox   atomic.Pointer[lane[K]]
	nready    atomic.Int32  // lanes in the ready list; written under q.mu
	running   int           // slots in use: lanes that are busy, and a lingering worker
	drained   chan struct{} // closed when closed && queued == 0 && running == 0
	oversized atomic.Int32  // shards whose peak calls for a sweep (see retention.go)

	// Workers started at once, and the watch over lanes left waiting
	// despite a free slot (see stalls.go).
	procs      int         // start a worker at once while running < procs
	procsFixed bool        // tests only: procs stays as set
	progress   uint64      // lanes taken from the ready list so far
	watchMark  uint64      // progress when the watch was armed
	watchArmed bool        // watchTimer will fire
	watchTimer *time.Timer // runs checkStalls
}

// cacheLinePad keeps the fields before it and after it on different cache
// lines (128 bytes: some processors fetch lines in pairs), so that writing
// one does not slow down goroutines that read the other.
type cacheLinePad [128]byte

// shardCount is the number of shards, a power of two: enough that
// submitters and workers on different keys seldom meet on one lock.
const shardCount = 32

// New returns an empty, open queue.
func New[K comparable](opts ...Option) *Queue[K] {
	q := &Queue[K]{
		seed:   maphash.MakeSeed(),
		shards: make([]shard[K], shardCount),
		wake:   make(chan struct{}, 1),

		lingerMark: new(lane[K]),

		lingerSleep: lingerSleep,
		idleCap:     shardIdle,
		procs:       runtime.GOMAXPROCS(0),
	}
	for i := range q.shards {
		q.shards[i].q = q
		q.shards[i].lanes = make(map[K]*lane[K])
	}
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

// shard returns the shard that owns key.
func (q *Queue[K]) shard(key K) *shard[K] {
	return &q.shards[maphash.Comparable(q.seed, key)&(shardCount-1)]
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

	s := q.shard(key)
	s.lock()
	if q.closed.Load() {
		s.unlock()
		return ErrClosed
	}
	if l := s.lanes[key]; (l == nil || !l.scheduled) && q.takeSlot() {
		// Nothing waits for this key and a slot is free: the job is first
		// in line and may start now, right here.
		if l == nil {
			l = s.newLane(key)
		}
		s.activate(l)
		s.running++
		q.afterDo()
		s.unlock()
		return q.runInline(l, ctx, fn)
	}
	h := &Handle[K]{s: s, key: key, fn: fn, ctxOrErr: ctx, done: make(chan struct{})}
	h, ev, err := s.enqueue(h, jo)
	if err == nil {
		q.afterDo()
	}
	s.unlock()
	if err != nil {
		return err
	}
	q.emit(ev)

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

// afterDo calls the test hook, if any.
func (q *Queue[K]) afterDo() {
	if fn := q.afterDoEnqueue.Load(); fn != nil {
		(*fn)()
	}
}

// takeSlot takes a free slot, if there is one, for a lane about to run.
func (q *Queue[K]) takeSlot() bool {
	q.mu.Lock()
	ok := q.hasSlot()
	if ok {
		q.running++
	}
	q.mu.Unlock()
	return ok
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

	l.s.lock()
	l.s.running--
	if q.opts.observer != nil {
		ev.KeyDepth, ev.Depth = l.n, q.waiting()
	}
	if next := q.release(l, false); next != nil {
		next.start()
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
	s := q.shard(key)
	h := &Handle[K]{s: s, key: key, fn: fn, ctxOrErr: ctx} // outside the lock: keep it short
	if jo.tag != "" || q.opts.maxPerKey > 0 {
		// The job's fate depends on its lane: take the lock.
		s.lock()
		if q.closed.Load() {
			s.unlock()
			return nil, ErrClosed
		}
		h, ev, err := s.enqueue(h, jo)
		s.unlock()
		if err != nil {
			return nil, err
		}
		q.emit(ev)
		return h, nil
	}
	if q.opts.observer != nil {
		h.enq = time.Since(q.epoch)
	}
	// Count the job before looking at closed: Close sets closed before
	// it reads the count, so it waits for the job unless we see closed.
	s.queued.Add(1)
	if q.closed.Load() {
		s.queued.Add(-1)
		q.noteDequeued()
		return nil, ErrClosed
	}
	if s.mu.TryLock() {
		if s.inbox.Load() != nil || q.dropping.Load() {
			// Behind the older jobs; or dropped, as they would be,
			// if Close has given up since we looked at closed.
			s.push(h)
			s.drain()
		} else {
			s.add(h)
		}
		s.unlock()
		return h, nil
	}
	// Somebody holds the lock: leave the job to them (see inbox.go).
	s.push(h)
	s.settle()
	return h, nil
}

// enqueue appends the new job h to its key's lane, or, when h carries a tag
// and a job with that tag waits, merges h into that job and returns the
// job's handle instead of h. It returns the job's handle and the
// observer's event for a coalesced job. Called with s.mu held.
//
// Nothing watches a job's context while it waits: the worker checks it
// before running the job (a job whose context has ended never runs), Do and
// Handle.Wait watch it while they wait, and Handle.Done registers a watcher
// when it is called. Jobs nobody waits for cost no watcher.
func (s *shard[K]) enqueue(h *Handle[K], jo JobOption) (_ *Handle[K], ev *Event, err error) {
	q := s.q
	key := h.key
	l := s.lanes[key]
	if l != nil && jo.tag != "" {
		if old := l.findTagged(jo.tag); old != nil {
			old.fn, old.ctxOrErr = h.fn, h.ctxOrErr
			if h.done != nil && old.done == nil {
				old.done = h.done // the caller waits on it
			}
			if old.watched || old.done != nil {
				// Its waiters watch the context the job had when they
				// started waiting: watch the new one for them.
				s.unwatch(old)
				s.watch(old)
			}
			if q.opts.observer != nil {
				ev = &Event{Key: key, Outcome: Coalesced, Waited: q.since(old.enq)}
				ev.KeyDepth, ev.Depth = l.n, q.waiting()
			}
			return old, ev, nil
		}
	}
	if l != nil && q.opts.maxPerKey > 0 && l.n >= q.opts.maxPerKey {
		return nil, nil, fmt.Errorf("%w: key %v has %d waiting (limit %d)", ErrFull, key, l.n, q.opts.maxPerKey)
	}
	if q.opts.observer != nil {
		h.enq = time.Since(q.epoch)
	}
	s.queued.Add(1)
	l = s.add(h)
	if jo.tag != "" {
		h.tagged = true
		l.tagged = append(l.tagged, taggedJob[K]{tag: jo.tag, h: h})
	}
	return h, nil, nil
}

// add appends the waiting job h, already counted in s.queued, to its key's
// lane, and schedules the lane if it was idle, and returns it. A lane that
// takes a slot is put on the shard's list of workers to start when s.mu is
// released. Called with s.mu held.
func (s *shard[K]) add(h *Handle[K]) *lane[K] {
	q := s.q
	l := s.lanes[h.key]
	if l == nil {
		l = s.newLane(h.key)
	}
	l.push(h)
	if l.scheduled {
		return l
	}
	s.activate(l)
	if q.nready.Load() == 0 && q.mailbox.CompareAndSwap(q.lingerMark, l) {
		// A lingering worker, with its slot, takes it; nothing else
		// waits for a slot, so it jumps nobody's turn.
		select {
		case q.wake <- struct{}{}: // in case it sleeps
		default:
		}
		return l
	}
	q.mu.Lock()
	switch {
	case !q.hasSlot():
		q.pushReady(l)
	case q.running < q.procs:
		q.running++
		l.nextStart, s.startH = s.startH, l
	default:
		// A slot is free, but a worker per processor runs already: l
		// waits for one of them, unless they are stuck (see stalls.go).
		q.pushReady(l)
		q.watchStalls()
	}
	q.mu.Unlock()
	return l
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
// place, and forgets the lane if that leaves it idle. Called with s.mu held.
func (s *shard[K]) remove(h *Handle[K], err error, outcome Outcome) *Event {
	q := s.q
	l := s.lanes[h.key] // a key with a waiting job keeps its lane
	if h.tagged {
		l.untag(h)
	}
	l.n-- // h stays linked, a hole: finish marks it
	s.queued.Add(-1)
	key := l.key
	if l.n == 0 {
		// A lane with no job left waits for no slot. If it holds one, its
		// worker finds it empty and idles it.
		q.mu.Lock()
		idle := l.ready
		if idle {
			q.removeReady(l)
		}
		q.mu.Unlock()
		if idle {
			s.idle(l)
		}
	}
	return s.finish(key, h, err, outcome, 0)
}

// finish records a job's result and releases its waiters. It returns the
// observer's event, if there is an observer. Called with s.mu held.
func (s *shard[K]) finish(key K, h *Handle[K], err error, outcome Outcome, ran time.Duration) *Event {
	s.unwatch(h)
	h.state = finished
	h.ctxOrErr = err // lets the context go while the handle lives on
	h.fn = nil
	if h.done != nil {
		close(h.done)
	}
	q := s.q
	if q.opts.observer == nil {
		return nil
	}
	ev := &Event{Key: key, Outcome: outcome, Ran: ran, Err: err}
	ev.Waited = q.since(h.enq) - ran
	if l := s.lanes[key]; l != nil {
		ev.KeyDepth = l.n
	}
	ev.Depth = q.waiting()
	return ev
}

// waiting returns the number of jobs waiting, over all shards. A job is
// counted from the moment its submission is under way (see Submit).
func (q *Queue[K]) waiting() int {
	var n int64
	for i := range q.shards {
		n += q.shards[i].queued.Load()
	}
	return int(n)
}

// since returns the time elapsed since enq, a time since q.epoch.
func (q *Queue[K]) since(enq time.Duration) time.Duration {
	return time.Since(q.epoch) - enq
}

// emit hands an event to the observer. Called without locks.
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
	q.closed.Store(true)
	select {
	case q.wake <- struct{}{}: // a worker asleep in freeSlot exits now
	default:
	}
	// A submission that takes its shard's lock checks closed under it:
	// once every shard has been locked after the store, none of those is
	// under way. One that does not (Submit's inbox path) counts its job
	// in its shard's queued before it checks closed: either it sees
	// closed and takes its job back, or the count of waiting jobs that
	// Close reads below includes it. Either way, queued counts every job
	// Close must wait for, and the job reaches its lane or is dropped
	// (see drain) even if Close gives up.
	for i := range q.shards {
		q.shards[i].lock()
		q.shards[i].unlock()
	}
	q.mu.Lock()
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

	// Give up on everything that has not started, and on what a
	// submission that was under way when closed was set still pushes.
	q.dropping.Store(true)
	var events []*Event
	for i := range q.shards {
		events = q.shards[i].dropAll(events)
	}
	q.mu.Lock()
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

// dropAll resolves every waiting job of the shard with ErrClosed, appending
// the observer's events to events.
func (s *shard[K]) dropAll(events []*Event) []*Event {
	s.lock()
	defer s.unlock()
	var lanes []*lane[K]
	for _, l := range s.lanes {
		if l.n > 0 {
			lanes = append(lanes, l)
		}
	}
	for _, l := range lanes {
		// remove idles l with its last job, unlinking the list (and may
		// evict and recycle it), unless a worker holds it; l.n says when
		// it is empty.
		for h := l.head; h != nil && l.n > 0; {
			next := h.next
			if h.state == waiting {
				if ev := s.remove(h, ErrClosed, Dropped); ev != nil {
					events = append(events, ev)
				}
			}
			h = next
		}
	}
	return events
}

// checkDrained closes q.drained when the closed queue has no work left.
// Called with q.mu held.
func (q *Queue[K]) checkDrained() {
	if q.drained != nil && q.waiting() == 0 && q.running == 0 {
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

// Stats returns a snapshot of the queue's load. Its fields are read one
// after the other, not at one instant.
func (q *Queue[K]) Stats() Stats {
	var keys, running int
	for i := range q.shards {
		s := &q.shards[i]
		s.lock()
		keys += s.active
		running += s.running
		s.unlock()
	}
	return Stats{Keys: keys, Waiting: q.waiting(), Running: running, Closed: q.closed.Load()}
}
