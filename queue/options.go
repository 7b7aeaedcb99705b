package queue

import (
	"errors"
	"fmt"
	"time"
)

// ErrClosed is returned by [Queue.Do] and [Queue.Submit] once [Queue.Close]
// has been called, and is the result of every job that [Queue.Close] dropped
// because its context ended before the job started.
var ErrClosed = errors.New("queue: closed")

// ErrFull is returned, wrapped with the key and the limit, by [Queue.Do] and
// [Queue.Submit] when the key already holds as many waiting jobs as
// [WithMaxQueuedPerKey] allows. Nothing is queued.
var ErrFull = errors.New("queue: too many jobs waiting for this key")

// ErrPanic is the target, for [errors.Is], of the error a job returns when
// its function panicked. The error is a [*PanicError].
var ErrPanic = errors.New("queue: job panicked")

// PanicError is the result of a job whose function panicked. The lane of the
// job's key goes on with the next job.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the time of the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("queue: job panicked: %v\n\n%s", e.Value, e.Stack)
}

// Unwrap makes errors.Is(err, ErrPanic) true.
func (e *PanicError) Unwrap() error { return ErrPanic }

// Outcome says what became of a job; see [Event].
type Outcome uint8

const (
	// Ran: the job's function ran; Event.Err is what it returned.
	Ran Outcome = iota + 1
	// Canceled: the job's context ended before it started; it never ran.
	Canceled
	// Dropped: Close gave up waiting before the job started; it never ran.
	Dropped
	// Coalesced: a newer job with the same key and tag replaced this one
	// before it started; its waiters receive the newer job's result.
	Coalesced
)

func (o Outcome) String() string {
	switch o {
	case Ran:
		return "ran"
	case Canceled:
		return "canceled"
	case Dropped:
		return "dropped"
	case Coalesced:
		return "coalesced"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Event describes one job that has left the queue. It is passed to the
// observer installed with [WithObserver].
type Event struct {
	Key      any           // the job's key
	Outcome  Outcome       // what became of the job
	Waited   time.Duration // from submission to start (or to leaving, if it never ran)
	Ran      time.Duration // how long its function ran; 0 unless Outcome is Ran
	Err      error         // the job's result; nil for Coalesced
	KeyDepth int           // jobs still waiting for the same key
	Depth    int           // jobs still waiting in the whole queue
}

// Option configures a [Queue].
type Option interface{ apply(*options) }

type options struct {
	maxConcurrent int
	maxPerKey     int
	observer      func(Event)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithMaxConcurrent limits how many jobs, over all keys, run at once. When
// the limit is reached, keys with waiting jobs take turns: each runs one job,
// then goes to the back of the line. 0, the default, means no global limit:
// every key with work runs, on one worker per processor while jobs are
// short, and on one worker each when they block (see the package's Model).
// Negative values are treated as 0.
func WithMaxConcurrent(n int) Option {
	return optionFunc(func(o *options) { o.maxConcurrent = max(n, 0) })
}

// WithMaxQueuedPerKey bounds the number of jobs waiting (submitted, not yet
// started) for one key. A submission beyond the bound fails with an error
// wrapping [ErrFull]; a submission that coalesces with a waiting job never
// counts against it. 0, the default, means no bound.
func WithMaxQueuedPerKey(n int) Option {
	return optionFunc(func(o *options) { o.maxPerKey = max(n, 0) })
}

// WithObserver installs fn, called once for every job that leaves the queue
// (ran, canceled, dropped or coalesced), with its key, the time it waited and
// ran, and the depth left behind. fn runs on the queue's goroutines, after
// the job has finished and its waiters have been released, outside any lock;
// it must be quick and must not block. It may be called concurrently.
//
// With no observer the queue reads no clocks.
func WithObserver(fn func(Event)) Option {
	return optionFunc(func(o *options) { o.observer = fn })
}

// JobOption configures one job submitted with [Queue.Do] or [Queue.Submit].
// The zero JobOption changes nothing.
type JobOption struct {
	tag string
}

// Coalesce marks a job as interchangeable with other jobs of the same key
// and tag, such as "reconcile this guest". When such a job is submitted while
// an earlier job with the same key and tag is still waiting, the new job
// replaces the waiting one: it takes the earlier job's place in line, the
// earlier function is discarded without running, and the earlier job's
// waiters receive the new job's result. A job that has started is never
// replaced. The empty tag disables coalescing.
func Coalesce(tag string) JobOption { return JobOption{tag: tag} }
