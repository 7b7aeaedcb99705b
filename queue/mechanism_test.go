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

// Lanes and the handles linked through them are recycled from key to key.
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
		linked := h.next != nil || h.lane != nil
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
