package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// With a worker per processor running, a lane that gets work waits in the
// ready list for one of them; if they are all stuck in jobs, the watch
// starts workers for it, up to the limit.
func TestStuckWorkersGetCompany(t *testing.T) {
	q := New[int](WithMaxConcurrent(4))
	q.mu.Lock()
	q.procs, q.procsFixed = 1, true // one worker at once, whatever this machine has
	q.mu.Unlock()
	ctx := context.Background()

	release := make(chan struct{})
	var started [4]chan struct{}
	var hs []*Handle[int]
	for k := range 4 {
		started[k] = make(chan struct{})
		h, err := q.Submit(ctx, k, func(context.Context) error {
			close(started[k])
			<-release
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for k := range 4 {
		waitFor(t, started[k], fmt.Sprintf("key %d's job to start beside the stuck ones", k))
	}
	if st := q.Stats(); st.Running != 4 {
		t.Fatalf("stats %+v, want 4 running", st)
	}
	close(release)
	for _, h := range hs {
		if err := h.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// Jobs that block until every one of them has started must all start: an
// unlimited queue with one worker per processor doubles its workers until
// each waiting lane has one, and a limited queue stops at its limit.
func TestBlockingJobsAllRunAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int // 0: unlimited
		keys  int
	}{
		{"unlimited", 0, 64},
		{"limit=16", 16, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := New[int](WithMaxConcurrent(tc.limit))
			q.mu.Lock()
			q.procs, q.procsFixed = 1, true
			q.mu.Unlock()
			ctx := context.Background()

			var started sync.WaitGroup
			started.Add(tc.keys)
			all := make(chan struct{})
			go func() { started.Wait(); close(all) }()
			var hs []*Handle[int]
			for k := range tc.keys {
				h, err := q.Submit(ctx, k, func(context.Context) error {
					started.Done()
					<-all // blocks until every job has started
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				hs = append(hs, h)
			}
			waitFor(t, all, fmt.Sprintf("all %d blocking jobs to run at once", tc.keys))
			for _, h := range hs {
				if err := h.Wait(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
