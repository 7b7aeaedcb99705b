package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// settleIn bounds waits for what must happen; a failure deadline, not a
// synchronization device.
const settleIn = 10 * time.Second

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(settleIn):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// A lingering worker takes at most one new lane: a second lane that
// arrives while a slot is free must start at once, not wait for the
// lingering worker to finish the first (whose job may block for ever).
func TestLingeringWorkerNeverHoldsBackASecondLane(t *testing.T) {
	q := New[int](WithMaxConcurrent(4))
	lingering := make(chan struct{})
	resume := make(chan struct{})
	var once sync.Once
	q.lingerHook = func() {
		once.Do(func() {
			close(lingering)
			<-resume
		})
	}
	ctx := context.Background()
	// A job that ends leaves its worker with nothing to do: it lingers,
	// and the hook holds it there.
	if _, err := q.Submit(ctx, 0, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, lingering, "the worker to linger")

	release := make(chan struct{})
	started := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var hs []*Handle[int]
	for i := range started {
		h, err := q.Submit(ctx, i+1, func(context.Context) error {
			close(started[i])
			<-release
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	close(resume)
	waitFor(t, started[0], "the first new lane to start")
	waitFor(t, started[1], "the second new lane to start while the first blocks")
	close(release)
	for _, h := range hs {
		if err := h.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	closeCtx, cancel := context.WithTimeout(ctx, settleIn)
	defer cancel()
	if err := q.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
}

// Lanes and the handles linked through them are recycled from key to key
// once evicted.
// Jobs of many keys, with holes left by canceled jobs and lanes dropped with
// holes in them and reused thousands of times, must each run under their
// own key, in order, never beside another job of the same key; and no
// finished handle may stay linked to another job.
func TestRecycledLanesKeepJobsApart(t *testing.T) {
	const (
		slots  = 3
		keys   = 300
		rounds = 20
		perKey = 3
	)
	var (
		mu      sync.Mutex
		running = map[int]bool{}
		last    = map[int]int{} // seq+1 of the last job that ran, per key
		keyOf   = map[error]int{}
	)
	owner := func(err error) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		k, ok := keyOf[err]
		return k, ok
	}
	obs := func(ev Event) {
		if ev.Outcome != Ran || ev.Key.(int) < 0 {
			return
		}
		if k, ok := owner(ev.Err); !ok || k != ev.Key.(int) {
			t.Errorf("job of key %d (known: %v) reported under key %v", k, ok, ev.Key)
		}
	}
	q := New[int](WithMaxConcurrent(slots), WithObserver(obs))
	// Evict nearly every lane that goes idle, so that lanes pass from key
	// to key rather than wait, idle, for their own key's next job.
	q.idleCap = 2
	ctx := context.Background()
	var all []*Handle[int]
	for round := range rounds {
		// Hold every slot, so that every lane below waits in the ready
		// list while its canceled jobs leave holes.
		gate := make(chan struct{})
		var gates []*Handle[int]
		for i := range slots {
			started := make(chan struct{})
			h, err := q.Submit(ctx, -1-i, func(context.Context) error { close(started); <-gate; return nil })
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, started, "a gate job to start")
			gates = append(gates, h)
		}
		canceled, cancel := context.WithCancel(ctx)
		var kept, dropped []*Handle[int]
		keysOf := map[*Handle[int]]int{}
		for i := range keys * perKey {
			key, pos := i%keys, i/keys
			seq := round*perKey + pos
			res := fmt.Errorf("job %d of key %d", seq, key) // tells whose job ran
			mu.Lock()
			keyOf[res] = key
			mu.Unlock()
			// Even keys lose every job, so their lanes are dropped with
			// nothing but holes; odd keys lose their middle job.
			jobCtx := ctx
			if key%2 == 0 || pos == 1 {
				jobCtx = canceled
			}
			h, err := q.Submit(jobCtx, key, func(context.Context) error {
				mu.Lock()
				if running[key] {
					t.Errorf("key %d: two jobs at once", key)
				}
				if seq+1 <= last[key] {
					t.Errorf("key %d: job %d ran after job %d", key, seq, last[key]-1)
				}
				running[key], last[key] = true, seq+1
				mu.Unlock()
				runtime.Gosched() // gives an overlapping job a chance to show
				mu.Lock()
				running[key] = false
				mu.Unlock()
				return res
			})
			if err != nil {
				t.Fatal(err)
			}
			keysOf[h] = key
			if jobCtx == ctx {
				kept = append(kept, h)
			} else {
				dropped = append(dropped, h)
			}
		}
		cancel()
		for _, h := range dropped {
			if err := h.Wait(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("canceled job of key %d: %v", keysOf[h], err)
			}
		}
		close(gate)
		for _, h := range gates {
			if err := h.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range kept {
			err := h.Wait(ctx)
			if k, ok := owner(err); !ok || k != keysOf[h] {
				t.Fatalf("handle of key %d got %v", keysOf[h], err)
			}
		}
		all = append(all, dropped...)
		all = append(all, kept...)
	}
	closeCtx, cancelClose := context.WithTimeout(ctx, settleIn)
	defer cancelClose()
	if err := q.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	for _, h := range all {
		h.s.mu.Lock()
		linked := h.next != nil
		h.s.mu.Unlock()
		if linked {
			t.Fatal("a finished handle is still linked into a lane")
		}
	}
}

// The last worker of a queue that runs dry with shards to trim sleeps a
// moment before it exits. A submission must wake it, and so must Close;
// neither may wait for its timer, made endless here. Nor may the observer:
// the worker reports its last job before it sleeps.
func TestSleepingLastWorkerIsWokenBySubmitAndClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		wake func(t *testing.T, q *Queue[int])
	}{
		{"Submit", func(t *testing.T, q *Queue[int]) {
			done := make(chan struct{})
			if _, err := q.Submit(context.Background(), 1, func(context.Context) error { close(done); return nil }); err != nil {
				t.Fatal(err)
			}
			waitFor(t, done, "a job submitted while the last worker sleeps to run")
		}},
		{"Close", func(*testing.T, *Queue[int]) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const keys = 100 * shardCount
			var seen atomic.Int64
			allSeen := make(chan struct{})
			q := New[int](WithMaxConcurrent(1), WithObserver(func(ev Event) {
				if seen.Add(1) == keys {
					close(allSeen)
				}
			}))
			q.lingerSleep = time.Hour
			asleep := make(chan struct{}, 1)
			q.sleepHook = func() {
				select {
				case asleep <- struct{}{}:
				default:
				}
			}

			// Enough keys waiting at once that some shard's map grows
			// past its share, so that running dry calls for a sweep.
			gate := make(chan struct{})
			hold := func(context.Context) error { <-gate; return nil }
			var hs []*Handle[int]
			for key := range keys {
				h, err := q.Submit(context.Background(), key, hold)
				if err != nil {
					t.Fatal(err)
				}
				hs = append(hs, h)
			}
			close(gate)
			for _, h := range hs {
				if err := h.Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, asleep, "the last worker to sleep")
			// The worker reports a job before it moves on or sleeps.
			waitFor(t, allSeen, "the observer to see every job while the worker sleeps")
			tc.wake(t, q)

			ctx, cancel := context.WithTimeout(context.Background(), settleIn)
			defer cancel()
			if err := q.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for i := range q.shards {
				s := &q.shards[i]
				s.mu.Lock()
				n, peak := len(s.lanes), s.highLen
				s.mu.Unlock()
				if n != 0 || peak > shardRetain {
					t.Fatalf("shard %d after Close: %d lanes, peak %d", i, n, peak)
				}
			}
		})
	}
}

// holdSlot submits a job for key that holds a slot until the returned
// function is called, so that the queue never runs dry meanwhile.
func holdSlot(t *testing.T, q *Queue[int], key int) (release func()) {
	t.Helper()
	gate, started := make(chan struct{}), make(chan struct{})
	h, err := q.Submit(context.Background(), key, func(context.Context) error {
		close(started)
		<-gate
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, started, "the slot-holding job to start")
	return func() {
		close(gate)
		if err := h.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// A busy queue keeps the lane of a key that ran out of work, so that the
// key's next job finds it: no allocation, no map insert or delete.
func TestBusyQueueKeepsIdleLanes(t *testing.T) {
	q := New[int](WithMaxConcurrent(2))
	release := holdSlot(t, q, -1)
	ctx := context.Background()
	const keys = 3 * retainIdle // more than an idle queue keeps
	round := func() {
		for k := range keys {
			if err := q.Do(ctx, k, noop); err != nil {
				t.Fatal(err)
			}
		}
	}
	round()
	lanes := make(map[int]*lane[int], keys)
	lookup := func(k int) *lane[int] {
		s := q.shard(k)
		s.mu.Lock()
		defer s.mu.Unlock()
		l := s.lanes[k]
		if l == nil || l.scheduled || l.n != 0 || l.head != nil {
			t.Fatalf("key %d after its job: lane %+v, want an idle one", k, l)
		}
		return l
	}
	for k := range keys {
		lanes[k] = lookup(k)
	}
	if allocs := testing.AllocsPerRun(1, round); allocs != 0 {
		t.Errorf("a round over keys seen before allocated %v times, want 0", allocs)
	}
	for k := range keys {
		if l := lookup(k); l != lanes[k] {
			t.Fatalf("key %d has a new lane", k)
		}
	}
	if st := q.Stats(); st.Keys != 1 || st.Running != 1 {
		t.Errorf("Stats = %+v, want 1 key (the slot holder) and 1 running", st)
	}
	release()
	closeCtx, cancel := context.WithTimeout(ctx, settleIn)
	defer cancel()
	if err := q.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
}

// A busy queue evicts idle lanes past its bound, and the evicted lanes
// serve other keys, their jobs in order.
func TestIdleLanesBoundedWhileBusy(t *testing.T) {
	q := New[int](WithMaxConcurrent(3))
	q.idleCap = 8
	release := holdSlot(t, q, -1)
	ctx := context.Background()
	check := func() {
		t.Helper()
		for i := range q.shards {
			s := &q.shards[i]
			s.mu.Lock()
			idle, nfree := len(s.lanes)-s.active, s.nfree
			s.mu.Unlock()
			if idle > q.idleCap || nfree > max(q.idleCap/2, shardFree) {
				t.Fatalf("shard %d: %d idle lanes, %d free, bound %d", i, idle, nfree, q.idleCap)
			}
		}
	}
	const keys = 5000
	for k := range keys {
		// Two jobs a key, the second submitted while the first may run,
		// each checking that it follows the other.
		var seq atomic.Int32
		var hs [2]*Handle[int]
		for i := range hs {
			h, err := q.Submit(ctx, k, func(context.Context) error {
				if got := seq.Add(1); got != int32(i+1) {
					return fmt.Errorf("key %d: job %d ran as number %d", k, i, got)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			hs[i] = h
		}
		for _, h := range hs {
			if err := h.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if k%250 == 0 {
			check()
		}
	}
	check()
	if st := q.Stats(); st.Keys != 1 {
		t.Errorf("Stats().Keys = %d, want 1 (the slot holder)", st.Keys)
	}
	release()
	closeCtx, cancel := context.WithTimeout(ctx, settleIn)
	defer cancel()
	if err := q.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
}
