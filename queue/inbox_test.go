package queue

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"unsafe"
)

// A submission that finds its shard's lock held goes through the inbox and
// returns without waiting for the lock; the holder, on letting go, moves
// the jobs to their lane in the order they were submitted.
func TestSubmitDoesNotWaitForTheShardLock(t *testing.T) {
	q := New[int]()
	ctx := context.Background()
	s := q.shard(7)

	var mu sync.Mutex
	var ran []int
	allRan := make(chan struct{})
	job := func(i int) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			ran = append(ran, i)
			if len(ran) == 5 {
				close(allRan)
			}
			mu.Unlock()
			return nil
		}
	}

	s.mu.Lock() // somebody else holds the lock
	var hs []*Handle[int]
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		for i := range 5 {
			h, err := q.Submit(ctx, 7, job(i))
			if err != nil {
				t.Error(err)
			}
			hs = append(hs, h)
		}
	}()
	waitFor(t, submitted, "Submit to return while the shard's lock is held")
	if s.inbox.Load() == nil {
		t.Fatal("the jobs are not on the inbox")
	}
	s.unlock() // the holder lets go: it must drain the inbox
	// Nothing else takes the lock (Wait would, and drain it too).
	waitFor(t, allRan, "the jobs on the inbox to run")
	for _, h := range hs {
		waitCtx, cancel := context.WithTimeout(ctx, settleIn)
		err := h.Wait(waitCtx)
		cancel()
		if err != nil {
			t.Fatalf("job: %v", err)
		}
	}
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(ran, want) {
		t.Fatalf("ran %v, want %v", ran, want)
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A caller that takes the shard's lock drains the inbox before it looks at
// a lane, so that a job submitted through the inbox runs before one
// submitted after it under the lock, even when nobody settles the inbox.
func TestLockDrainsTheInboxFirst(t *testing.T) {
	q := New[int]()
	ctx := context.Background()
	s := q.shard(3)

	var mu sync.Mutex
	var ran []string
	job := func(name string) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			ran = append(ran, name)
			mu.Unlock()
			return nil
		}
	}

	s.mu.Lock()
	first, err := q.Submit(ctx, 3, job("inbox"))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Unlock() // no settle: the inbox keeps the job

	// The tagged job takes the lock; it must find the inbox's job first.
	second, err := q.Submit(ctx, 3, job("locked"), Coalesce("t"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Handle[int]{first, second} {
		waitCtx, cancel := context.WithTimeout(ctx, settleIn)
		err := h.Wait(waitCtx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"inbox", "locked"}; !slices.Equal(ran, want) {
		t.Fatalf("ran %v, want %v", ran, want)
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A submission under way when Close gives up may put its job in after
// Close has dropped the waiting ones, through the inbox or under the lock:
// it is dropped too and reported, and the queue counts as drained.
func TestDrainDropsJobsOnceCloseHasGivenUp(t *testing.T) {
	var events []Event
	var evMu sync.Mutex
	q := New[int](WithObserver(func(ev Event) {
		evMu.Lock()
		events = append(events, ev)
		evMu.Unlock()
	}))
	ctx := context.Background()
	s := q.shard(9)

	mustNotRun := func(context.Context) error {
		t.Error("a dropped job ran")
		return nil
	}

	// Two submissions under way when Close gives up, both past their
	// look at closed: one finds the shard's lock held and leaves its job
	// on the inbox, the other takes the lock after Close has given up.
	s.mu.Lock()
	h1, err := q.Submit(ctx, 9, mustNotRun)
	if err != nil {
		t.Fatal(err)
	}
	q.dropping.Store(true) // Close's context has ended
	s.unlock()
	h2, err := q.Submit(ctx, 9, mustNotRun)
	if err != nil {
		t.Fatal(err)
	}
	q.closed.Store(true)

	waitCtx, cancel := context.WithTimeout(ctx, settleIn)
	defer cancel()
	for _, h := range []*Handle[int]{h1, h2} {
		if err := h.Wait(waitCtx); !errors.Is(err, ErrClosed) {
			t.Fatalf("job result %v, want ErrClosed", err)
		}
	}
	if err := q.Close(waitCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	evMu.Lock()
	defer evMu.Unlock()
	if len(events) != 2 || events[0].Outcome != Dropped || events[1].Outcome != Dropped || events[0].Key != 9 {
		t.Fatalf("events %+v, want two Dropped for key 9", events)
	}
	if st := q.Stats(); st.Waiting != 0 || st.Keys != 0 {
		t.Fatalf("stats %+v after the drop", st)
	}
}

// Submit's one allocation stays within the 80-byte size class with a
// one-word key.
func TestHandleSize(t *testing.T) {
	if n := unsafe.Sizeof(Handle[int]{}); n > 80 {
		t.Fatalf("Handle[int] is %d bytes, want at most 80", n)
	}
}
