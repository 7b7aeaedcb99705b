package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/queue"
)

// blocker is a job that holds its key's turn until released.
type blocker struct {
	started chan struct{}
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}), release: make(chan struct{})}
}

func (b *blocker) fn(context.Context) error {
	close(b.started)
	<-b.release
	return nil
}

// occupy submits a blocker for key and waits until it runs.
func occupy(t *testing.T, q *queue.Queue[string], key string) *blocker {
	t.Helper()
	b := newBlocker()
	if _, err := q.Submit(context.Background(), key, b.fn); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, b.started, "blocker on %q to start", key)
	return b
}

func closeQueue(t *testing.T, q *queue.Queue[string]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func waitErr(t *testing.T, h *queue.Handle[string]) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	err := h.Wait(ctx)
	if ctx.Err() != nil {
		t.Fatal("timed out waiting for a job's result")
	}
	return err
}

func TestSameKeyRunsInSubmitOrderOneAtATime(t *testing.T) {
	q := queue.New[string]()
	var (
		mu      sync.Mutex
		order   []int
		running atomic.Int32
	)
	const n = 500
	handles := make([]*queue.Handle[string], n)
	for i := range n {
		h, err := q.Submit(context.Background(), "vm100", func(context.Context) error {
			if running.Add(1) != 1 {
				t.Errorf("job %d overlaps another job of the same key", i)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			running.Add(-1)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		handles[i] = h
	}
	for _, h := range handles {
		if err := waitErr(t, h); err != nil {
			t.Fatal(err)
		}
	}
	closeQueue(t, q)
	for i, got := range order {
		if got != i {
			t.Fatalf("position %d ran job %d; jobs must run in submit order", i, got)
		}
	}
	if len(order) != n {
		t.Fatalf("ran %d jobs, want %d", len(order), n)
	}
}

func TestDifferentKeysRunInParallel(t *testing.T) {
	q := queue.New[string]()
	defer closeQueue(t, q)
	// a cannot finish until b has run: only parallel lanes let both end.
	bRan := make(chan struct{})
	ha, err := q.Submit(context.Background(), "a", func(context.Context) error {
		waitClosed(t, bRan, "key b to run while key a is running")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Do(context.Background(), "b", func(context.Context) error { close(bRan); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, ha); err != nil {
		t.Fatal(err)
	}
}

func TestMaxConcurrentIsReachedAndNeverExceeded(t *testing.T) {
	const limit = 3
	q := queue.New[int](queue.WithMaxConcurrent(limit))
	var running, peak atomic.Int32
	full := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for key := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := q.Do(context.Background(), key, func(context.Context) error {
				n := running.Add(1)
				defer running.Add(-1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				if n == limit {
					once.Do(func() { close(full) })
				}
				// The first jobs hold their slots until the limit is
				// reached, which proves the queue does run that many.
				waitClosed(t, full, "%d jobs to run at once", limit)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p != limit {
		t.Fatalf("peak concurrency %d, want exactly %d", p, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A key with ten thousand queued jobs must not starve a key with one: when
// the limit is reached, ready keys take turns.
func TestHotKeyDoesNotStarveOthers(t *testing.T) {
	q := queue.New[string](queue.WithMaxConcurrent(1))
	defer closeQueue(t, q)
	hot := occupy(t, q, "hot")
	var (
		mu    sync.Mutex
		order []string
	)
	record := func(key string) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			order = append(order, key)
			mu.Unlock()
			return nil
		}
	}
	var last *queue.Handle[string]
	for range 10000 {
		h, err := q.Submit(context.Background(), "hot", record("hot"))
		if err != nil {
			t.Fatal(err)
		}
		last = h
	}
	cold, err := q.Submit(context.Background(), "cold", record("cold"))
	if err != nil {
		t.Fatal(err)
	}
	close(hot.release)
	if err := waitErr(t, cold); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, last); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if order[0] != "cold" {
		t.Fatalf("after the running hot job, %q ran first; the cold key must get the next turn", order[0])
	}
}

func TestCanceledBeforeStartNeverRunsAndDoReturnsAtOnce(t *testing.T) {
	q := queue.New[string]()
	b := occupy(t, q, "vm")
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	inLine := make(chan struct{})
	queue.AfterDoEnqueue(q, func() { close(inLine) })
	result := make(chan error, 1)
	go func() {
		result <- q.Do(ctx, "vm", func(context.Context) error { ran.Store(true); return nil })
	}()
	waitClosed(t, inLine, "Do to queue its job")
	queue.AfterDoEnqueue(q, nil)
	cancel()
	// The blocker still holds the lane: Do must return now, not when the
	// lane reaches the job.
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Do = %v, want context.Canceled", err)
		}
	case <-time.After(settle):
		t.Fatal("Do did not return when its context ended")
	}
	if s := q.Stats(); s.Waiting != 0 {
		t.Fatalf("canceled job still waiting: %+v", s)
	}
	close(b.release)
	closeQueue(t, q)
	if ran.Load() {
		t.Fatal("a job whose context ended before it started ran")
	}
}

func TestSubmitCanceledBeforeStartResolvesAtOnce(t *testing.T) {
	q := queue.New[string]()
	b := occupy(t, q, "vm")
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	h, err := q.Submit(ctx, "vm", func(context.Context) error { ran.Store(true); return nil })
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, h.Done(), "the canceled job's handle")
	if err := h.Wait(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	close(b.release)
	closeQueue(t, q)
	if ran.Load() {
		t.Fatal("a job whose context ended before it started ran")
	}
}

func TestEndedContextIsRefusedAtSubmission(t *testing.T) {
	q := queue.New[string]()
	defer closeQueue(t, q)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fn := func(context.Context) error { t.Error("ran"); return nil }
	if err := q.Do(ctx, "k", fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v", err)
	}
	if _, err := q.Submit(ctx, "k", fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit = %v", err)
	}
}

func TestNilFunctionIsRefused(t *testing.T) {
	q := queue.New[string]()
	defer closeQueue(t, q)
	if err := q.Do(context.Background(), "k", nil); err == nil {
		t.Fatal("Do(nil) succeeded")
	}
	if _, err := q.Submit(context.Background(), "k", nil); err == nil {
		t.Fatal("Submit(nil) succeeded")
	}
}

type ctxKey struct{}

func TestJobReceivesSubmittersContext(t *testing.T) {
	q := queue.New[string](queue.WithMaxConcurrent(1))
	defer closeQueue(t, q)
	check := func(ctx context.Context) error {
		if ctx.Value(ctxKey{}) != "mine" {
			return errors.New("job did not receive its submitter's context")
		}
		return nil
	}
	ctx := context.WithValue(context.Background(), ctxKey{}, "mine")
	if err := q.Do(ctx, "k", check); err != nil { // inline path
		t.Fatal(err)
	}
	b := occupy(t, q, "k")
	h, err := q.Submit(ctx, "k", check) // worker path
	if err != nil {
		t.Fatal(err)
	}
	close(b.release)
	if err := waitErr(t, h); err != nil {
		t.Fatal(err)
	}
}

func TestPanicBecomesErrorAndLaneGoesOn(t *testing.T) {
	q := queue.New[string]()
	defer closeQueue(t, q)
	b := occupy(t, q, "vm")
	h1, _ := q.Submit(context.Background(), "vm", func(context.Context) error { panic("boom") })
	h2, _ := q.Submit(context.Background(), "vm", func(context.Context) error { return nil })
	close(b.release)
	err := waitErr(t, h1)
	if !errors.Is(err, queue.ErrPanic) {
		t.Fatalf("err = %v, want ErrPanic", err)
	}
	var pe *queue.PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" {
		t.Fatalf("err = %#v, want *PanicError with value boom", err)
	}
	if !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "goroutine") {
		t.Fatalf("panic error lacks value or stack: %q", err.Error())
	}
	if err := waitErr(t, h2); err != nil {
		t.Fatalf("next job on the lane: %v", err)
	}
	// Inline path too.
	if err := q.Do(context.Background(), "other", func(context.Context) error { panic(42) }); !errors.Is(err, queue.ErrPanic) {
		t.Fatalf("inline panic: %v", err)
	}
	if err := q.Do(context.Background(), "other", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestCloseWaitsForQueuedAndRunningJobs(t *testing.T) {
	q := queue.New[string]()
	b := occupy(t, q, "vm")
	var ran atomic.Int32
	for range 3 {
		if _, err := q.Submit(context.Background(), "vm", func(context.Context) error { ran.Add(1); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- q.Close(context.Background()) }()
	close(b.release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(settle):
		t.Fatal("Close did not return after the work finished")
	}
	// Close returned only once every queued job had run.
	if ran.Load() != 3 {
		t.Fatalf("%d queued jobs ran, want 3", ran.Load())
	}
}

func TestClosedQueueRefusesWork(t *testing.T) {
	q := queue.New[string]()
	closeQueue(t, q)
	noop := func(context.Context) error { return nil }
	if _, err := q.Submit(context.Background(), "vm", noop); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := q.Do(context.Background(), "vm", noop); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Do after Close = %v, want ErrClosed", err)
	}
	if !q.Stats().Closed {
		t.Fatal("Stats does not report the queue closed")
	}
	closeQueue(t, q) // Close is idempotent
}

func TestCloseGivingUpDropsWaitingJobsAndLeavesRunningOnes(t *testing.T) {
	q := queue.New[string]()
	b := occupy(t, q, "vm")
	var ran atomic.Bool
	var handles []*queue.Handle[string]
	var ct *blocker
	for _, key := range []string{"vm", "vm", "other-is-busy"} {
		if key == "other-is-busy" {
			ct = occupy(t, q, "ct") // keep a second lane running too
			key = "ct"
		}
		h, err := q.Submit(context.Background(), key, func(context.Context) error { ran.Store(true); return nil })
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	for i, h := range handles {
		if err := waitErr(t, h); !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("waiting job %d = %v, want ErrClosed", i, err)
		}
	}
	if s := q.Stats(); s.Waiting != 0 || s.Running != 2 {
		t.Fatalf("after giving up: %+v, want no waiting and the 2 running jobs", s)
	}
	close(b.release)
	// The other blocker is still running: a second Close waits for it.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := q.Close(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("second Close with ended ctx = %v", err)
	}
	close(ct.release)
	closeQueue(t, q)
	if ran.Load() {
		t.Fatal("a dropped job ran")
	}
}

func TestMaxQueuedPerKey(t *testing.T) {
	q := queue.New[string](queue.WithMaxQueuedPerKey(2))
	b := occupy(t, q, "vm") // running: does not count as waiting
	noop := func(context.Context) error { return nil }
	for range 2 {
		if _, err := q.Submit(context.Background(), "vm", noop); err != nil {
			t.Fatal(err)
		}
	}
	_, err := q.Submit(context.Background(), "vm", noop)
	if !errors.Is(err, queue.ErrFull) || !strings.Contains(err.Error(), "vm") {
		t.Fatalf("third waiting job: %v, want ErrFull naming the key", err)
	}
	if err := q.Do(context.Background(), "vm", noop); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("Do on a full key: %v", err)
	}
	// A tagged job with nothing to merge into counts like any other.
	if _, err := q.Submit(context.Background(), "vm", noop, queue.Coalesce("r")); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("first tagged job on a full key: %v, want ErrFull", err)
	}
	// Other keys are unaffected, and a tagged job that merges into a
	// waiting one adds nothing to wait for, so it is never refused.
	b2 := occupy(t, q, "ct")
	if _, err := q.Submit(context.Background(), "ct", noop, queue.Coalesce("r")); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Submit(context.Background(), "ct", noop); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Submit(context.Background(), "ct", noop, queue.Coalesce("r")); err != nil {
		t.Fatalf("tagged job merging on a full key: %v", err)
	}
	close(b.release)
	close(b2.release)
	closeQueue(t, q)
}

func TestCoalesceReplacesWaitingJobInPlace(t *testing.T) {
	q := queue.New[string]()
	b := occupy(t, q, "vm")
	var (
		mu    sync.Mutex
		order []string
	)
	job := func(name string, err error) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return err
		}
	}
	errNew := errors.New("from the newer job")
	hOld, _ := q.Submit(context.Background(), "vm", job("old", nil), queue.Coalesce("reconcile"))
	hMid, _ := q.Submit(context.Background(), "vm", job("mid", nil))
	hNew, err := q.Submit(context.Background(), "vm", job("new", errNew), queue.Coalesce("reconcile"))
	if err != nil {
		t.Fatal(err)
	}
	if hNew != hOld {
		t.Fatal("a coalesced job must share the replaced job's handle")
	}
	// Other tags and untagged jobs do not merge.
	hOther, _ := q.Submit(context.Background(), "vm", job("other", nil), queue.Coalesce("backup"))
	if hOther == hOld {
		t.Fatal("different tags merged")
	}
	if s := q.Stats(); s.Waiting != 3 {
		t.Fatalf("waiting = %d, want 3 (old+new merged, mid, other)", s.Waiting)
	}
	close(b.release)
	if err := waitErr(t, hOld); !errors.Is(err, errNew) {
		t.Fatalf("the replaced job's waiters got %v, want the newer job's result", err)
	}
	waitErr(t, hMid)
	waitErr(t, hOther)
	closeQueue(t, q)
	want := []string{"new", "mid", "other"}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("ran %v, want %v: the newer job runs in the replaced job's place", order, want)
	}
}

func TestCoalesceNeverReplacesStartedJob(t *testing.T) {
	q := queue.New[string]()
	started := make(chan struct{})
	release := make(chan struct{})
	var runs atomic.Int32
	h1, _ := q.Submit(context.Background(), "vm", func(context.Context) error {
		runs.Add(1)
		close(started)
		<-release
		return nil
	}, queue.Coalesce("r"))
	waitClosed(t, started, "the first job to start")
	h2, _ := q.Submit(context.Background(), "vm", func(context.Context) error { runs.Add(1); return nil }, queue.Coalesce("r"))
	if h1 == h2 {
		t.Fatal("a started job was coalesced into")
	}
	close(release)
	waitErr(t, h1)
	waitErr(t, h2)
	closeQueue(t, q)
	if runs.Load() != 2 {
		t.Fatalf("%d runs, want 2", runs.Load())
	}
}

func TestHandleWaitContextOnlyBoundsTheWait(t *testing.T) {
	q := queue.New[string]()
	b := occupy(t, q, "vm")
	var ran atomic.Bool
	h, _ := q.Submit(context.Background(), "vm", func(context.Context) error { ran.Store(true); return nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with ended ctx = %v", err)
	}
	close(b.release)
	if err := waitErr(t, h); err != nil {
		t.Fatal(err)
	}
	closeQueue(t, q)
	if !ran.Load() {
		t.Fatal("ending a Wait canceled the job")
	}
}

func TestObserverSeesEveryJob(t *testing.T) {
	var (
		mu     sync.Mutex
		events []queue.Event
	)
	q := queue.New[string](queue.WithObserver(func(e queue.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}))
	b := occupy(t, q, "vm")
	ctx, cancel := context.WithCancel(context.Background())
	hc, _ := q.Submit(ctx, "vm", func(context.Context) error { return nil })
	hr, _ := q.Submit(context.Background(), "vm", func(context.Context) error { return errJob }, queue.Coalesce("r"))
	q.Submit(context.Background(), "vm", func(context.Context) error { return errJob }, queue.Coalesce("r"))
	cancel()
	waitErr(t, hc)
	close(b.release)
	waitErr(t, hr)
	closeQueue(t, q)

	mu.Lock()
	defer mu.Unlock()
	count := map[queue.Outcome]int{}
	for _, e := range events {
		count[e.Outcome]++
		if e.Key != "vm" {
			t.Errorf("event key %v", e.Key)
		}
		if e.Waited < 0 || e.Ran < 0 {
			t.Errorf("negative duration in %+v", e)
		}
		if e.Outcome == queue.Ran && e.Err == nil && e.Ran == 0 {
			// The blocker ran for as long as the test held it.
			t.Errorf("ran job without a run time: %+v", e)
		}
	}
	want := map[queue.Outcome]int{queue.Ran: 2, queue.Canceled: 1, queue.Coalesced: 1}
	for o, n := range want {
		if count[o] != n {
			t.Errorf("%v events: %d, want %d (all: %+v)", o, count[o], n, events)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[queue.Outcome]string{
		queue.Ran: "ran", queue.Canceled: "canceled", queue.Dropped: "dropped",
		queue.Coalesced: "coalesced", queue.Outcome(99): "Outcome(99)",
	} {
		if got := o.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", o, got, want)
		}
	}
}
