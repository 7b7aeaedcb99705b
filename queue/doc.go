// Package queue serializes work per key: jobs submitted for the same key run
// one at a time, in the order they were submitted, while jobs for different
// keys run in parallel. guestward keys it by guest, so that every mutation of
// a guest, whatever its source, passes through one line; the package itself
// knows nothing of Proxmox and works with any comparable key.
//
// # Model
//
// A [Queue] keeps one FIFO, a lane, per key that has work. [Queue.Do] appends
// a job to its key's lane and waits for its result; [Queue.Submit] appends it
// and returns a [Handle] at once. A lane with waiting jobs is run by a worker
// goroutine, one job at a time. After each job, a worker passes to the
// oldest lane waiting for one, if any; when its lane runs dry and none
// waits, it exits after a moment's wait for more work. The lane stays,
// idle, for the key's next job while the queue is busy (up to 65,536 idle
// lanes). An idle key holds no goroutine, and once the whole queue has run
// dry it keeps at most 1,024 idle lanes, so a queue that has seen a hundred
// thousand keys costs no more, once idle, than a new one.
//
// A lane that gets work starts a worker of its own while fewer run than
// there are processors (GOMAXPROCS). Beyond that it waits for a running
// worker to pass to it; if they all stay in their jobs for a millisecond
// meanwhile, the queue starts more, doubling them every millisecond, up to
// the limit set with [WithMaxConcurrent]. Short jobs thus run on about one
// worker per processor, which is fastest, and jobs that block, on the
// network say, still run in parallel, a few milliseconds later at most.
//
// # Ordering
//
//   - Same key: never two jobs at once, and strictly in submit order. Submit
//     order is the order in which Do and Submit calls put their jobs in
//     line: by taking the lock that guards the key or, for a Submit that
//     finds it taken, by leaving the job to its holder (see Cost). Calls
//     that return in sequence on one goroutine are ordered as called.
//   - Different keys: run in parallel, on as many workers as they need (see
//     Model). With [WithMaxConcurrent] at most n jobs run at once. Keys with
//     waiting work take turns, one job each in round-robin order, so a key
//     with ten thousand queued jobs delays a key with one by at most one job
//     per running worker.
//   - Coalescing ([Coalesce]) is the one exception to submit order, and only
//     among jobs that asked for it: a tagged job replaces a waiting job of the
//     same key and tag and runs in that job's place in line.
//
// # Cancellation, panics and closing
//
// A job runs with the context it was submitted with. If that context ends
// before the job starts, the job never runs and its result is ctx.Err(),
// delivered at once rather than when the lane would have reached it. Once a
// job has started, it runs to completion; it should honour its context.
//
// A panic in a job is recovered into a [*PanicError], which wraps [ErrPanic]
// and carries the stack; the lane goes on with its next job.
//
// [Queue.Close] stops new submissions and waits for the work already
// submitted. Its context bounds the wait: when it ends, jobs that have not
// started are dropped with [ErrClosed], and jobs that are running are left to
// finish.
//
// # Observability
//
// [WithObserver] reports every job that leaves the queue with its key, how
// long it waited and ran, and the depth behind it, without tying the package
// to a metrics library. [Queue.Stats] gives a snapshot of the load.
//
// # Cost
//
// Keys are spread by hash over 32 shards, each with its own lock for its
// keys' lanes and jobs; one more lock guards the slots and the line of keys
// waiting for one. A submission for a key that already has work takes only
// its shard's lock, and Submit does not wait for it: when another goroutine
// holds it, Submit pushes the job onto the shard's lock-free inbox and
// returns, and the holder moves the job into line as it lets go of the
// lock. Submit with [Coalesce], or on a queue with [WithMaxQueuedPerKey],
// must look at the key's line first, and waits for the lock. Do on an idle
// key runs the job on the caller's goroutine and allocates nothing; Do
// behind other work allocates the job and its completion channel. Submit
// allocates one 80-byte handle (with a key of one word, such as an int),
// whatever its context, and nothing else once each of its keys has had a
// job: jobs are linked through their handles, a key keeps its lane while
// the queue is busy, and a worker with nothing to do lingers a scheduler
// turn or two, so that a submitter producing jobs one by one can hand them
// to it instead of starting a goroutine for each. A key's first job
// allocates its lane.
// Nothing watches a waiting job's context on its own: whoever waits for
// the job watches it (Do, [Handle.Wait]), [Handle.Done] registers a watcher
// when called, and a job nobody waits for is checked when its turn comes,
// and skipped without running if its context has ended.
//
// Measured against client-go's workqueue (v0.37.2) with 8 workers doing
// Get and Done on distinct items, which keeps no per-key order, while the
// queue has 8 slots; trivial jobs, submitters adding as fast as they can,
// the clock running from the first submission until every job has run;
// medians of 10 interleaved runs of 500,000 jobs on a virtual machine
// with 2 cores and nothing else running (go1.26.8, linux/amd64), with CPU
// time per job too:
//
//	keys   submitters  jobs/s: queue  workqueue  ratio  CPU ns/job: queue  workqueue
//	100    1                   2.46M      0.83M  2.95x               689       2022
//	100    8                   1.75M      0.62M  2.80x               972       2478
//	100    64                  2.34M      0.53M  4.44x               716       2794
//	10000  1                   3.10M      0.89M  3.47x               539       1864
//	10000  8                   2.10M      0.65M  3.25x               821       2322
//	10000  64                  2.36M      0.57M  4.15x               728       2553
//
// With another process keeping the same machine's cores busy, which makes
// waking a parked goroutine much cheaper there, workqueue gains more than
// the queue: it moved 1.0-2.0M jobs per second, the queue 2.4-3.4M, 1.5x
// to 2.4x as many, at 0.5x to 0.9x its CPU time per job. What the queue
// then spends most on is memory: each waiting job holds its 80-byte
// handle, and a backlog of millions of them is allocated, cleared and
// scanned by the garbage collector.
//
// Allocations per job over 3,000,000 jobs are 1.000 at 100 keys and
// 1.003-1.004 at 10,000: each key's first job allocates its lane (and the
// first goroutine started on a lane the function it runs). Once every key
// has had a job, 1.000 in every shape.
//
// The benchmarks in this package compare the queue with a minimal per-key
// FIFO that offers none of these guarantees.
package queue
