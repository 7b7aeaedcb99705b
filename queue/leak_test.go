package queue

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// An idle key holds no goroutine, and an idle queue no more memory than a
// new one's worth: after 100,000 distinct keys have passed through, the
// goroutines and the heap are back where they started, and the lane maps
// hold no more than the retainIdle lanes an idle queue keeps.
func TestIdleKeysHoldNothing(t *testing.T) {
	const keys = 100_000
	for _, tc := range []struct {
		name string
		pass func(t *testing.T, q *Queue[int], n int)
		opts []Option
	}{
		// Do on an idle key runs on the caller's goroutine.
		{"Do", passDo, nil},
		// Each key's job gets a worker goroutine of its own.
		{"Submit/unlimited", passSubmitWindowed, nil},
		// All keys wait at once: the lane map reaches 100,000 entries.
		{"Submit/limit=4/all-waiting", passSubmitAllWaiting, []Option{WithMaxConcurrent(4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Warm up: the runtime keeps the descriptors of goroutines
			// that have exited for reuse, and that memory is not ours.
			// Count goroutines before it: the last worker of a pass
			// lingers a moment after the last job, and must not be
			// counted as part of the baseline.
			goroutines := runtime.NumGoroutine()
			warm := New[int](tc.opts...)
			tc.pass(t, warm, keys/5)
			waitIdle(t, warm)
			waitGoroutines(t, goroutines)
			heap := heapInUse()

			q := New[int](tc.opts...)
			tc.pass(t, q, keys)

			waitIdle(t, q)
			waitGoroutines(t, goroutines)
			q.mu.Lock()
			ready := q.readyH
			q.mu.Unlock()
			var lanes, nfree, active int
			for i := range q.shards {
				s := &q.shards[i]
				s.mu.Lock()
				lanes += len(s.lanes)
				nfree += s.nfree
				active += s.active
				highLen := s.highLen
				s.mu.Unlock()
				if highLen > shardRetain {
					t.Fatalf("shard %d: lane map not rebuilt after emptying: high-water mark %d", i, highLen)
				}
			}
			if lanes > retainIdle || active != 0 || ready != nil {
				t.Fatalf("idle queue holds %d lanes, %d active (ready list empty: %v)", lanes, active, ready == nil)
			}
			if nfree > retainIdle {
				t.Fatalf("idle queue keeps %d free lanes, at most %d", nfree, retainIdle)
			}
			// A map that kept 100,000 entries' worth of groups would hold
			// megabytes; allow a little for the runtime's own noise.
			const slack = 512 << 10
			if grown := heapInUse() - heap; grown > slack {
				t.Fatalf("heap grew by %d bytes after the keys went idle", grown)
			}
			runtime.KeepAlive(q)
		})
	}
}

var noop = func(context.Context) error { return nil }

const submitters = 8

// passDo runs one job for each of n keys with Do, from several goroutines.
func passDo(t *testing.T, q *Queue[int], n int) {
	parallel(n, func(key int) {
		if err := q.Do(context.Background(), key, noop); err != nil {
			t.Error(err)
		}
	})
}

// passSubmitWindowed submits one job for each of n keys from several
// goroutines, each keeping at most window jobs in flight, which bounds the
// goroutines of an unlimited queue (the race detector allows 8128).
func passSubmitWindowed(t *testing.T, q *Queue[int], n int) {
	const window = 256
	var mu sync.Mutex
	inFlight := map[int][]*Handle[int]{}
	parallel(n, func(key int) {
		h, err := q.Submit(context.Background(), key, noop)
		if err != nil {
			t.Error(err)
			return
		}
		g := key % submitters
		mu.Lock()
		hs := append(inFlight[g], h)
		if len(hs) < window {
			inFlight[g] = hs
			mu.Unlock()
			return
		}
		inFlight[g] = nil
		mu.Unlock()
		waitAll(t, hs)
	})
	for _, hs := range inFlight {
		waitAll(t, hs)
	}
}

// passSubmitAllWaiting submits one job for each of n keys while the first
// jobs hold every slot, so that all n keys are waiting at once, then lets
// them all run.
func passSubmitAllWaiting(t *testing.T, q *Queue[int], n int) {
	gate := make(chan struct{})
	hold := func(context.Context) error { <-gate; return nil }
	hs := make([]*Handle[int], n)
	for key := range n {
		h, err := q.Submit(context.Background(), key, hold)
		if err != nil {
			t.Fatal(err)
		}
		hs[key] = h
	}
	if s := q.Stats(); s.Keys != n {
		t.Fatalf("%d keys active, want all %d", s.Keys, n)
	}
	close(gate)
	waitAll(t, hs)
}

// parallel calls fn for keys 0..n-1, spread over the submitters, key k on
// goroutine k%submitters.
func parallel(n int, fn func(key int)) {
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := g; key < n; key += submitters {
				fn(key)
			}
		}()
	}
	wg.Wait()
}

func waitAll(t *testing.T, hs []*Handle[int]) {
	for _, h := range hs {
		if err := h.Wait(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// waitIdle waits until no worker of q holds a slot. The last worker of a
// queue that ran dry may wait a moment for more work before it frees its
// slot and sweeps; the deadline only bounds a failure.
func waitIdle(t *testing.T, q *Queue[int]) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		running := q.running
		q.mu.Unlock()
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held", running)
		}
		runtime.Gosched()
	}
}

// waitGoroutines waits until no more than want goroutines exist. A worker
// gives up its slot under the queue's lock and returns right after, so the
// count settles a moment after the last job; the deadline only bounds a
// failure.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

// Handles live on after their jobs: they must not keep the job's function
// and context reachable.
func TestFinishedHandleReleasesJob(t *testing.T) {
	q := New[int]()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := q.Submit(ctx, 1, noop)
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done() // registers a context watcher while the job waits or runs
	if err := h.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if h.fn != nil || h.ctxOrErr != nil || h.next != nil || h.watched || h.s.watches != nil {
		t.Fatal("finished handle still references its job")
	}
}
