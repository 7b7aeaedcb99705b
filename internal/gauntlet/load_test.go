package gauntlet

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// loadTaskLatency is how long every task of the load test runs; with it
// the ideal duration of a pass is known: tasks × latency ÷ concurrency.
const loadTaskLatency = 20 * time.Millisecond

// loadConcurrency is the engine's limit on guests changed (and observed)
// at once.
const loadConcurrency = 32

// TestLoad reconciles a large fleet spread over five nodes, every guest of
// which needs a task (a start), with a known task latency and a
// concurrency limit. It reports the pass time and the achieved action rate
// against the theoretical one, and checks that goroutines and memory stay
// bounded by the concurrency rather than growing with the fleet. The times
// are reported, not asserted: they measure this machine.
func TestLoad(t *testing.T) {
	n := sized(5000, 20000)
	if raceEnabled {
		// The race detector multiplies the cost of every memory access;
		// the shape of the test is the same at a tenth of the size.
		n = sized(500, 5000)
	}
	fig := newFigures(t)
	ctx := ctxFor(t, 10*time.Minute)
	nodes := []string{"pve1", "pve2", "pve3", "pve4", "pve5"}
	srv := proxmoxtest.Start(t,
		proxmoxtest.WithNodes(nodes...),
		proxmoxtest.WithTaskDuration(loadTaskLatency),
		proxmoxtest.WithRequestLogLimit(0),
	)
	var requests atomic.Int64
	srv.Inject(proxmoxtest.Fault{Before: func() { requests.Add(1) }})
	desired := make([]reconcile.Desired, n)
	for i := range n {
		ref := proxmox.Ref{Node: nodes[i%len(nodes)], Type: proxmox.QEMU, VMID: 100 + i}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID,
			Config: map[string]string{"name": fmt.Sprintf("vm%d", ref.VMID), "memory": "1024", "cores": "2"}}); err != nil {
			t.Fatal(err)
		}
		desired[i] = reconcile.Desired{Ref: ref, Power: reconcile.PowerRunning, Config: map[string]string{"memory": "1024"}}
	}
	prov, err := reconcile.NewStaticProvider(desired)
	if err != nil {
		t.Fatal(err)
	}
	client := newClient(t, srv, proxmox.WithTaskPolling(2*time.Millisecond, 8*time.Millisecond))
	// The file journal, syncing every record: the engine's real cost.
	jr, err := journal.OpenFile(filepath.Join(t.TempDir(), "load.journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer jr.Close()
	// The acting phase, from the first action's start to the last one's
	// end; before it the pass observes every guest.
	var actMu sync.Mutex
	var firstStart, lastDone time.Time
	engine, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: client, Journal: jr, Provider: prov, Concurrency: loadConcurrency,
		OnEvent: func(ev reconcile.Event) {
			actMu.Lock()
			defer actMu.Unlock()
			switch ev.Phase {
			case "start":
				if firstStart.IsZero() || ev.At.Before(firstStart) {
					firstStart = ev.At
				}
			case "done", "failed":
				if ev.At.After(lastDone) {
					lastDone = ev.At
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Queue().Close(ctx)
	if _, err := engine.Recover(ctx); err != nil {
		t.Fatal(err)
	}

	// Sample goroutines and heap while the pass runs.
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	baseG := runtime.NumGoroutine()
	var peakG, peakHeap atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if g := int64(runtime.NumGoroutine()); g > peakG.Load() {
				peakG.Store(g)
			}
			runtime.ReadMemStats(&ms)
			if h := int64(ms.HeapInuse); h > peakHeap.Load() {
				peakHeap.Store(h)
			}
		}
	}()

	requests.Store(0)
	start := time.Now()
	rep, err := engine.ReconcileOnce(ctx)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	sent, ok := rep.Actions()
	if !rep.Converged() || sent != n || ok != n {
		t.Fatalf("first pass: converged=%v, %d actions sent, %d succeeded, want %d:\n%v", rep.Converged(), sent, ok, n, rep.Count())
	}
	passRequests := requests.Load()
	if got := srv.TaskCount(proxmox.Ref{}, "qmstart"); got != n {
		t.Fatalf("%d start tasks, want %d", got, n)
	}

	// A second pass finds everything in sync and sends nothing.
	requests.Store(0)
	start2 := time.Now()
	rep2, err := engine.ReconcileOnce(ctx)
	elapsed2 := time.Since(start2)
	if err != nil {
		t.Fatal(err)
	}
	if sent, _ := rep2.Actions(); sent != 0 || rep2.Count()[reconcile.GuestInSync] != n {
		t.Fatalf("second pass: %d actions, %v", sent, rep2.Count())
	}
	// It reads the list and each declared guest once (the pending
	// endpoint carries configuration, digest, lock and pending changes).
	if got, want := requests.Load(), int64(1+n); got != want {
		t.Errorf("second pass sent %d requests, want %d: the list and one per guest", got, want)
	}

	// Bounded: the goroutines at the peak are a multiple of the
	// concurrency, not of the fleet (the fake server's included: a
	// connection and a task timer per operation in progress).
	extraG := peakG.Load() - int64(baseG)
	if limit := int64(12*loadConcurrency + 64); extraG > limit {
		t.Errorf("%d goroutines beyond the %d before the pass; the bound is %d", extraG, baseG, limit)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	retained := int64(after.HeapAlloc) - int64(base.HeapAlloc)
	perGuest := retained / int64(n)
	// What stays is the reports and the journal's index, a few KiB per
	// guest at most; a leak of anything per request would show here.
	if perGuest > 16<<10 {
		t.Errorf("%d bytes retained per guest after the pass", perGuest)
	}

	theoretical := time.Duration(n) * loadTaskLatency / loadConcurrency
	actMu.Lock()
	acting := lastDone.Sub(firstStart)
	actMu.Unlock()
	fig.set("acting_s", round3(acting.Seconds()))
	fig.set("acting_efficiency", round3(theoretical.Seconds()/acting.Seconds()))
	fig.set("guests", n)
	fig.set("nodes", len(nodes))
	fig.set("concurrency", loadConcurrency)
	fig.set("task_latency_ms", loadTaskLatency.Milliseconds())
	fig.set("tasks", n)
	fig.set("pass_s", round3(elapsed.Seconds()))
	fig.set("theoretical_s", round3(theoretical.Seconds()))
	fig.set("actions_per_s", round3(float64(n)/elapsed.Seconds()))
	fig.set("theoretical_actions_per_s", round3(float64(loadConcurrency)/loadTaskLatency.Seconds()))
	fig.set("efficiency", round3(theoretical.Seconds()/elapsed.Seconds()))
	fig.set("requests_first_pass", int(passRequests))
	fig.set("noop_pass_s", round3(elapsed2.Seconds()))
	fig.set("requests_noop_pass", int(requests.Load()))
	fig.set("requests_per_guest_noop", round3(float64(requests.Load())/float64(n)))
	// Every guest is acted on in the first pass.
	fig.set("requests_per_acted_guest", round3(float64(passRequests)/float64(n)))
	fig.set("peak_goroutines_over_base", int(extraG))
	fig.set("peak_heap_inuse_mib", round3(float64(peakHeap.Load())/(1<<20)))
	fig.set("retained_bytes_per_guest", int(perGuest))
	fig.set("journal_bytes", int(jr.Stats().Size))
	fig.set("race", raceEnabled)
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }
