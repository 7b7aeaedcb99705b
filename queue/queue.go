package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// Handle is a submitted job. Its result can be awaited with [Handle.Wait] or
// [Handle.Done]. A Handle is safe for concurrent use.
type Handle[K comparable] struct {
	q *Queue[K]

	// Guarded by q.mu. Kept to 64 bytes: it is Submit's one allocation.
	seq     uint32 // position in its lane while waiting (wraps; see lane.at)
	state   uint8
	tagged  bool     // listed in its lane's tagged list
	watched bool     // Done registered a context watcher (see Queue.watches)
	lane    *lane[K] // while waiting
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
	q := h.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if h.done == nil {
		h.done = make(chan struct{})
		if h.state == finished {
			close(h.done)
		}
	}
	if h.state == waiting && !h.watched {
		// Somebody may wait on the channel alone: make the job leave the
		// line as soon as its context ends, as Wait would.
		q.watch(h)
	}
	return h.done
}

// Wait blocks until the job's result is known and returns it, or until ctx
// ends, in which case it returns ctx.Err() and the job is unaffected: ctx
// only bounds the wait. To cancel a job, cancel the context it was submitted
// with.
func (h *Handle[K]) Wait(ctx context.Context) error {
	q := h.q
	for {
		q.mu.Lock()
		if h.state == finished {
			err := h.err()
			q.mu.Unlock()
			return err
		}
		if h.done == nil {
			h.done = make(chan struct{})
		}
		done, jobCtx := h.done, h.ctx()
		waiting := h.state == waiting
		q.mu.Unlock()
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
			q.cancel(h, jobCtx) // resolves h, or finds it started or retargeted
		}
	}
}

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

// watch makes the waiting job h leave the line as soon as its context
// ends. If it has ended already, AfterFunc runs the watcher on its own
// goroutine, which waits for q.mu: no deadlock. Called with q.mu held.
func (q *Queue[K]) watch(h *Handle[K]) {
	ctx := h.ctx()
	if ctx.Done() == nil {
		return // it cannot end
	}
	if q.watches == nil {
		q.watches = make(map[*Handle[K]]func() bool)
	}
	q.watches[h] = context.AfterFunc(ctx, func() { q.cancel(h, ctx) })
	h.watched = true
}

// unwatch removes h's watcher, if it has one. Called with q.mu held.
func (q *Queue[K]) unwatch(h *Handle[K]) {
	if !h.watched {
		return
	}
	if stop := q.watches[h]; stop != nil {
		stop()
	}
	delete(q.watches, h)
	if len(q.watches) == 0 {
		q.watches = nil // a map never shrinks; this one is rarely used
	}
	h.watched = false
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
	q.mu.Lock()
	if h.state != waiting {
		q.mu.Unlock()
		return tooLate
	}
	if h.ctx() != ctx {
		q.mu.Unlock()
		return replaced
	}
	ev := q.remove(h, ctx.Err(), Canceled)
	q.checkDrained()
	q.mu.Unlock()
	q.emit(ev)
	return canceledNow
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
