package queue_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/guestward/guestward/queue"
)

// TestStress runs many submitters against shared keys, with Do and Submit,
// coalescing, cancellations and panics mixed in, under the race detector.
// Per key, jobs must never overlap and must start in submit order; every
// call must get a result; the queue must drain.
func TestStress(t *testing.T) {
	const (
		keys       = 16
		submitters = 32
		perSub     = 400
	)
	q := queue.New[int](queue.WithMaxConcurrent(4), queue.WithMaxQueuedPerKey(10_000))

	type keyState struct {
		mu      sync.Mutex
		running bool
		lastSeq int64 // submit sequence of the last job that started
	}
	var state [keys]keyState
	var submitMu [keys]sync.Mutex
	var nextSeq [keys]int64

	var started, canceled, panicked atomic.Int64
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			var pending []*queue.Handle[int]
			var cancels []context.CancelFunc
			for range perSub {
				key := rng.IntN(keys)
				ctx, cancel := context.WithCancel(context.Background())
				var seq int64
				fn := func(context.Context) error {
					ks := &state[key]
					ks.mu.Lock()
					if ks.running {
						t.Errorf("key %d: two jobs at once", key)
					}
					if seq > 0 { // ordered: a plain Submit
						if seq <= ks.lastSeq {
							t.Errorf("key %d: job %d started after job %d", key, seq, ks.lastSeq)
						}
						ks.lastSeq = seq
					}
					ks.running = true
					ks.mu.Unlock()
					started.Add(1)
					defer func() {
						ks.mu.Lock()
						ks.running = false
						ks.mu.Unlock()
					}()
					if rng := rand.N(50); rng == 0 {
						panic("stress")
					}
					return nil
				}
				var opts []queue.JobOption
				if rng.IntN(8) == 0 {
					opts = append(opts, queue.Coalesce("reconcile"))
				}
				async := rng.IntN(2) == 0
				var h *queue.Handle[int]
				var err error
				if async {
					// The sequence number is taken with the submission under
					// one lock, so it matches the queue's submit order. Do
					// blocks, and a coalesced job runs in an earlier job's
					// place, so neither takes part in the order check.
					submitMu[key].Lock()
					if opts == nil {
						nextSeq[key]++
						seq = nextSeq[key]
					}
					h, err = q.Submit(ctx, key, fn, opts...)
					submitMu[key].Unlock()
				}
				if rng.IntN(10) == 0 {
					cancel()
				}
				if async {
					if err != nil {
						t.Error(err)
						cancel()
						continue
					}
					pending = append(pending, h)
					cancels = append(cancels, cancel)
				} else {
					err = q.Do(ctx, key, fn, opts...)
					record(t, err, &canceled, &panicked)
					cancel()
				}
			}
			for i, h := range pending {
				record(t, h.Wait(context.Background()), &canceled, &panicked)
				cancels[i]()
			}
		}()
	}
	wg.Wait()
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := q.Stats(); s.Keys != 0 || s.Waiting != 0 || s.Running != 0 {
		t.Fatalf("drained queue reports %+v", s)
	}
	t.Logf("started %d, canceled %d, panicked %d", started.Load(), canceled.Load(), panicked.Load())
	if started.Load() == 0 {
		t.Fatal("nothing ran")
	}
}

func record(t *testing.T, err error, canceled, panicked *atomic.Int64) {
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled):
		canceled.Add(1)
	case errors.Is(err, queue.ErrPanic):
		panicked.Add(1)
	default:
		t.Errorf("unexpected result %v", err)
	}
}
