package queue_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/guestward/guestward/queue"
)

// baseline is the smallest per-key FIFO worth comparing against: one mutex,
// one sync.Cond, a FIFO per key and a FIFO of ready keys, served by a fixed
// pool of workers. It keeps per-key order and never runs a key twice at once,
// and offers nothing else: no cancellation, no panics caught, no fairness
// bound, no observer, and its workers live as long as it does.
type baseline struct {
	mu     sync.Mutex
	cond   *sync.Cond
	lanes  map[int]*baseLane
	ready  []*baseLane // FIFO: ready[head:]
	head   int
	closed bool
	wg     sync.WaitGroup
}

type baseLane struct {
	key    int
	items  []baseItem
	active bool // in ready or being run
}

type baseItem struct {
	fn   func()
	done chan struct{} // nil for fire-and-forget
}

func newBaseline(workers int) *baseline {
	b := &baseline{lanes: make(map[int]*baseLane)}
	b.cond = sync.NewCond(&b.mu)
	b.wg.Add(workers)
	for range workers {
		go b.worker()
	}
	return b
}

func (b *baseline) add(key int, it baseItem) {
	b.mu.Lock()
	l := b.lanes[key]
	if l == nil {
		l = &baseLane{key: key}
		b.lanes[key] = l
	}
	l.items = append(l.items, it)
	if !l.active {
		l.active = true
		b.ready = append(b.ready, l)
		b.cond.Signal()
	}
	b.mu.Unlock()
}

// Add queues fn for key.
func (b *baseline) Add(key int, fn func()) { b.add(key, baseItem{fn: fn}) }

// Do queues fn for key and waits until it has run.
func (b *baseline) Do(key int, fn func()) {
	done := make(chan struct{})
	b.add(key, baseItem{fn: fn, done: done})
	<-done
}

func (b *baseline) worker() {
	defer b.wg.Done()
	b.mu.Lock()
	for {
		for b.head == len(b.ready) && !b.closed {
			b.cond.Wait()
		}
		if b.head == len(b.ready) {
			b.mu.Unlock()
			return
		}
		l := b.ready[b.head]
		b.ready[b.head] = nil
		b.head++
		if b.head == len(b.ready) {
			b.ready, b.head = b.ready[:0], 0
		}
		it := l.items[0]
		l.items[0] = baseItem{}
		l.items = l.items[1:]
		b.mu.Unlock()

		it.fn()
		if it.done != nil {
			close(it.done)
		}

		b.mu.Lock()
		if len(l.items) > 0 {
			b.ready = append(b.ready, l)
		} else {
			l.active = false
			delete(b.lanes, l.key)
		}
	}
}

func (b *baseline) Close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	b.wg.Wait()
}

// keyFor spreads submitter g's i-th item over nkeys keys, so that every key
// receives a share and submitters interleave on the same keys.
func keyFor(g, i, submitters, nkeys int) int { return (i*submitters + g) % nkeys }

// share splits n items over submitters; the first ones take the remainder.
func share(n, submitters, g int) int {
	s := n / submitters
	if g < n%submitters {
		s++
	}
	return s
}

var benchShapes = func() []struct{ keys, submitters int } {
	var s []struct{ keys, submitters int }
	for _, k := range []int{1, 100, 10000} {
		for _, g := range []int{1, 8, 64} {
			s = append(s, struct{ keys, submitters int }{k, g})
		}
	}
	return s
}()

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// run starts submitters goroutines, each calling body for its share of b.N
// items, and waits for them.
func runSubmitters(b *testing.B, submitters int, body func(g, n int)) {
	var wg sync.WaitGroup
	wg.Add(submitters)
	for g := range submitters {
		go func() {
			defer wg.Done()
			body(g, share(b.N, submitters, g))
		}()
	}
	wg.Wait()
}

// workers is the concurrency both sides get: the baseline's pool size and
// the queue's global limit.
func workers() int { return runtime.GOMAXPROCS(0) }

// BenchmarkDo measures synchronous submission: every submitter waits for
// each job before submitting the next. Sub-benchmarks "queue" and "baseline"
// run the same shape in the same process so their items/s can be compared.
func BenchmarkDo(b *testing.B) {
	for _, s := range benchShapes {
		name := fmt.Sprintf("keys=%d/submitters=%d", s.keys, s.submitters)
		b.Run(name+"/impl=queue", func(b *testing.B) {
			q := queue.New[int](queue.WithMaxConcurrent(workers()))
			ctx := context.Background()
			var ran atomic.Int64
			fn := func(context.Context) error { ran.Add(1); return nil }
			b.ReportAllocs()
			b.ResetTimer()
			runSubmitters(b, s.submitters, func(g, n int) {
				for i := range n {
					if err := q.Do(ctx, keyFor(g, i, s.submitters, s.keys), fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportRate(b)
			if err := q.Close(ctx); err != nil || ran.Load() != int64(b.N) {
				b.Fatalf("close: %v, ran %d of %d", err, ran.Load(), b.N)
			}
		})
		b.Run(name+"/impl=baseline", func(b *testing.B) {
			q := newBaseline(workers())
			defer q.Close()
			var ran atomic.Int64
			fn := func() { ran.Add(1) }
			b.ReportAllocs()
			b.ResetTimer()
			runSubmitters(b, s.submitters, func(g, n int) {
				for i := range n {
					q.Do(keyFor(g, i, s.submitters, s.keys), fn)
				}
			})
			b.StopTimer()
			reportRate(b)
			if ran.Load() != int64(b.N) {
				b.Fatalf("ran %d of %d", ran.Load(), b.N)
			}
		})
	}
}

// window bounds the jobs each submitter has in flight in BenchmarkSubmit,
// so the benchmark measures steady-state throughput rather than how fast
// an ever-growing backlog can be allocated.
const window = 256

// BenchmarkSubmit measures asynchronous submission: submitters queue jobs
// without waiting for each, keeping up to window jobs in flight, and the
// clock stops when every job has run.
func BenchmarkSubmit(b *testing.B) {
	for _, s := range benchShapes {
		name := fmt.Sprintf("keys=%d/submitters=%d", s.keys, s.submitters)
		b.Run(name+"/impl=queue", func(b *testing.B) {
			q := queue.New[int](queue.WithMaxConcurrent(workers()))
			ctx := context.Background()
			var wg sync.WaitGroup
			wg.Add(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			runSubmitters(b, s.submitters, func(g, n int) {
				tokens := make(chan struct{}, window)
				fn := func(context.Context) error { <-tokens; wg.Done(); return nil }
				for i := range n {
					tokens <- struct{}{}
					if _, err := q.Submit(ctx, keyFor(g, i, s.submitters, s.keys), fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
			wg.Wait()
			b.StopTimer()
			reportRate(b)
			if err := q.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(name+"/impl=baseline", func(b *testing.B) {
			q := newBaseline(workers())
			defer q.Close()
			var wg sync.WaitGroup
			wg.Add(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			runSubmitters(b, s.submitters, func(g, n int) {
				tokens := make(chan struct{}, window)
				fn := func() { <-tokens; wg.Done() }
				for i := range n {
					tokens <- struct{}{}
					q.Add(keyFor(g, i, s.submitters, s.keys), fn)
				}
			})
			wg.Wait()
			b.StopTimer()
			reportRate(b)
		})
	}
}

// BenchmarkSubmitBurst is Submit with no bound on the jobs in flight: the
// submitters run ahead and the backlog grows up to b.N jobs, and the clock
// stops when every job has run. Both sides get burstSlots workers whatever
// the machine, the shape in which the queue is compared with client-go's
// workqueue outside this module (see the package doc's Cost section).
func BenchmarkSubmitBurst(b *testing.B) {
	for _, keys := range []int{100, 10000} {
		for _, subs := range []int{1, 8, 64} {
			name := fmt.Sprintf("keys=%d/submitters=%d", keys, subs)
			b.Run(name+"/impl=queue", func(b *testing.B) {
				q := queue.New[int](queue.WithMaxConcurrent(burstSlots))
				ctx := context.Background()
				var wg sync.WaitGroup
				wg.Add(b.N)
				fn := func(context.Context) error { wg.Done(); return nil }
				b.ReportAllocs()
				b.ResetTimer()
				runSubmitters(b, subs, func(g, n int) {
					for i := range n {
						if _, err := q.Submit(ctx, keyFor(g, i, subs, keys), fn); err != nil {
							b.Error(err)
							return
						}
					}
				})
				wg.Wait()
				b.StopTimer()
				reportRate(b)
				if err := q.Close(ctx); err != nil {
					b.Fatal(err)
				}
			})
			b.Run(name+"/impl=baseline", func(b *testing.B) {
				q := newBaseline(burstSlots)
				defer q.Close()
				var wg sync.WaitGroup
				wg.Add(b.N)
				fn := func() { wg.Done() }
				b.ReportAllocs()
				b.ResetTimer()
				runSubmitters(b, subs, func(g, n int) {
					for i := range n {
						q.Add(keyFor(g, i, subs, keys), fn)
					}
				})
				wg.Wait()
				b.StopTimer()
				reportRate(b)
			})
		}
	}
}

// burstSlots is the concurrency of BenchmarkSubmitBurst on both sides.
const burstSlots = 8

// BenchmarkSubmitUnlimited is Submit with no global limit: every key with
// work gets its own worker goroutine.
func BenchmarkSubmitUnlimited(b *testing.B) {
	for _, keys := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("keys=%d/submitters=8", keys), func(b *testing.B) {
			q := queue.New[int]()
			ctx := context.Background()
			var wg sync.WaitGroup
			wg.Add(b.N)
			fn := func(context.Context) error { wg.Done(); return nil }
			b.ReportAllocs()
			b.ResetTimer()
			runSubmitters(b, 8, func(g, n int) {
				for i := range n {
					if _, err := q.Submit(ctx, keyFor(g, i, 8, keys), fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
			wg.Wait()
			b.StopTimer()
			reportRate(b)
			if err := q.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkSubmitCancellable is Submit with a context that can end, which
// costs a context watcher per job.
func BenchmarkSubmitCancellable(b *testing.B) {
	q := queue.New[int](queue.WithMaxConcurrent(workers()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(b.N)
	fn := func(context.Context) error { wg.Done(); return nil }
	b.ReportAllocs()
	b.ResetTimer()
	runSubmitters(b, 8, func(g, n int) {
		for i := range n {
			if _, err := q.Submit(ctx, keyFor(g, i, 8, 100), fn); err != nil {
				b.Error(err)
				return
			}
		}
	})
	wg.Wait()
	b.StopTimer()
	reportRate(b)
	if err := q.Close(ctx); err != nil {
		b.Fatal(err)
	}
}
