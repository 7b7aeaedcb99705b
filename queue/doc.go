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
// goroutine, one job at a time. When the lane runs dry the worker exits and
// the lane is forgotten: an idle key holds no goroutine and no memory, so a
// queue that has seen a hundred thousand keys costs no more, once idle, than
// a new one.
//
// # Ordering
//
//   - Same key: never two jobs at once, and strictly in submit order. Submit
//     order is the order in which Do or Submit calls took the queue's lock;
//     calls that return in sequence on one goroutine are ordered as called.
//   - Different keys: run in parallel. With [WithMaxConcurrent] at most n
//     jobs run at once; keys with waiting work then take turns, one job each
//     in round-robin order, so a key with ten thousand queued jobs delays a
//     key with one by at most one job per running slot.
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
// One mutex guards the queue. Do on an idle key runs the job on the
// caller's goroutine and allocates nothing; Do behind other work allocates
// the job and its completion channel. Submit allocates one 80-byte handle,
// whatever its context: nothing watches a waiting job's context on its own.
// Whoever waits for the job watches it (Do, [Handle.Wait]), [Handle.Done]
// registers a watcher when called, and a job nobody waits for is checked
// when its turn comes, and skipped without running if its context has
// ended. A key turning active reuses a recycled lane.
//
// The benchmarks in this package compare the queue with a minimal per-key
// FIFO that offers none of these guarantees.
package queue
