package reconcile_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// countingProvider records how many passes read it at once.
type countingProvider struct {
	inner           reconcile.DesiredProvider
	active, maxSeen atomic.Int32
	calls           atomic.Int32
	gate            chan struct{} // if set, each call waits for a token
}

func (p *countingProvider) Desired(ctx context.Context) ([]reconcile.Desired, error) {
	n := p.active.Add(1)
	defer p.active.Add(-1)
	for m := p.maxSeen.Load(); n > m && !p.maxSeen.CompareAndSwap(m, n); m = p.maxSeen.Load() {
	}
	p.calls.Add(1)
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return p.inner.Desired(ctx)
}

func TestRunPassesOnTriggerAndStopsCleanly(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	cp := &countingProvider{inner: f.prov}
	reports := make(chan reconcile.Report, 16)
	e := f.newEngine(f.j, func(c *reconcile.Config) {
		c.Provider = cp
		c.Interval = time.Hour // only the first pass and triggers run
		c.OnReport = func(r reconcile.Report) { reports <- r }
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	first := <-reports
	if g := outcome(first, qemu(100)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("first pass: %+v", g)
	}
	e.Trigger()
	second := <-reports
	if g := outcome(second, qemu(100)); g.Outcome != reconcile.GuestInSync {
		t.Fatalf("triggered pass: %+v", g)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if _, err := e.Queue().Submit(context.Background(), 1, func(context.Context) error { return nil }); err == nil {
		t.Fatal("the engine's queue is still open after Run")
	}
}

func TestPassesNeverOverlap(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Config: map[string]string{"memory": "512"}})
	cp := &countingProvider{inner: f.prov, gate: make(chan struct{})}
	e := f.newEngine(f.j, func(c *reconcile.Config) { c.Provider = cp })
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.ReconcileOnce(ctxT(t)); err != nil {
				t.Error(err)
			}
		}()
	}
	for range 4 {
		cp.gate <- struct{}{} // lets exactly one pass read the state
	}
	wg.Wait()
	if cp.calls.Load() != 4 || cp.maxSeen.Load() != 1 {
		t.Fatalf("%d passes, at most %d at once", cp.calls.Load(), cp.maxSeen.Load())
	}
}

func TestStaleDesiredStateIsActedOnAndReported(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	e := f.newEngine(f.j, func(c *reconcile.Config) {
		c.Provider = staleProvider{ds: []reconcile.Desired{{Ref: qemu(100), Power: reconcile.PowerRunning}}}
	})
	rep, err := e.ReconcileOnce(ctxT(t))
	if err != nil || rep.DesiredErr == "" || outcome(rep, qemu(100)).Outcome != reconcile.GuestChanged {
		t.Fatalf("%+v %v", rep, err)
	}
	// Without a last good state, nothing happens.
	e2 := f.newEngine(f.j, func(c *reconcile.Config) { c.Provider = staleProvider{} })
	if _, err := e2.ReconcileOnce(ctxT(t)); !errors.Is(err, reconcile.ErrPassAborted) {
		t.Fatalf("%v", err)
	}
}

type staleProvider struct{ ds []reconcile.Desired }

func (p staleProvider) Desired(context.Context) ([]reconcile.Desired, error) {
	if p.ds == nil {
		return nil, errors.New("cannot read the source")
	}
	return p.ds, errors.Join(reconcile.ErrStale, errors.New("cannot read the source"))
}
