package queue

import (
	"runtime"
	"time"
)

// Workers for short jobs. A queue whose jobs are short runs fastest with
// about one worker per processor: more only take turns on the processors
// and queue up on the locks, parking and waking each other. So a lane that
// gets work while a slot is free starts a worker at once only while fewer
// workers run than there are processors (GOMAXPROCS); otherwise it joins
// the ready list, where the running workers, which take a ready lane after
// each job, find it.
//
// Running workers may be stuck in long jobs, though, and then nobody takes
// it. A watch, armed while such a lane waits, looks again after stallWait:
// if no worker has taken a lane from the ready list meanwhile, and every
// slot is held by a job that is running (no worker is between jobs, about
// to take a lane), it starts workers for the waiting lanes, as many as run
// already (at least one per processor) and the free slots allow, and looks
// again. A queue whose jobs block (on the network, say) thus doubles its
// workers every stallWait until it runs as many jobs at once as its limit
// allows, while one whose workers are merely short of processor time,
// which more workers would not give them, adds none.

// stallWait is how long a lane left waiting despite a free slot may go
// without any worker taking a ready lane before the queue starts workers
// for it: long against a short job (a worker takes a ready lane after each
// job), short against a network round trip.
const stallWait = time.Millisecond

// watchStalls arms the watch unless it is armed. Called with q.mu held.
func (q *Queue[K]) watchStalls() {
	if q.watchArmed {
		return
	}
	q.watchArmed = true
	q.watchMark = q.progress
	if q.watchTimer == nil {
		q.watchTimer = time.AfterFunc(stallWait, q.checkStalls)
	} else {
		q.watchTimer.Reset(stallWait)
	}
}

// checkStalls is the watch: it starts workers for the ready lanes, up to
// the free slots, if no worker has taken a ready lane since it was armed,
// and looks again later if lanes still wait despite a free slot.
func (q *Queue[K]) checkStalls() {
	procs := runtime.GOMAXPROCS(0) // it may change while the queue lives
	inJobs := 0
	for i := range q.shards {
		s := &q.shards[i]
		s.lock()
		inJobs += s.running
		s.unlock()
	}
	q.mu.Lock()
	if !q.procsFixed {
		q.procs = procs
	}
	q.watchArmed = false
	if q.readyH == nil || !q.hasSlot() {
		q.mu.Unlock()
		return
	}
	if q.progress != q.watchMark || inJobs < q.running {
		// The workers take the lanes, or one at least is between jobs
		// and will: it is short of processor time, which more workers
		// would not give it. Look again later.
		q.watchStalls()
		q.mu.Unlock()
		return
	}
	var starts *lane[K]
	for n := max(q.running, q.procs); n > 0 && q.readyH != nil && q.hasSlot(); n-- {
		l := q.popReady()
		q.running++
		l.nextStart, starts = starts, l // a ready lane is on no start list
	}
	if q.readyH != nil && q.hasSlot() {
		q.watchStalls()
	}
	q.mu.Unlock()
	q.launch(starts, nil, false)
}
