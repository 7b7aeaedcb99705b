package reconcile_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// Shutdown is the whole graceful stop in one call: the operation already
// sent finishes and is journaled, Run returns nil although its context never
// ended, and nothing starts afterwards. A Shutdown whose context ends first
// leaves the engine running, and a later one completes the stop.
func TestShutdownDrainsAndEndsRun(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	e := f.newEngine(f.j, func(c *reconcile.Config) { c.Interval = time.Hour })

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(runCtx) }()
	task, err := f.srv.AwaitTask(ctxT(t), func(proxmoxtest.Task) bool { return true })
	if err != nil {
		t.Fatal(err)
	}

	// The start task is still running: a Shutdown that may not wait for it
	// gives up, and Run goes on.
	short, cancel := context.WithTimeout(ctxT(t), 20*time.Millisecond)
	defer cancel()
	if err := e.Shutdown(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown while an operation runs, with a short context = %v", err)
	}
	select {
	case err := <-runDone:
		t.Fatalf("Run returned %v before the operation ended", err)
	default:
	}

	shut := make(chan error, 1)
	go func() { shut <- e.Shutdown(ctxT(t)) }()
	if err := f.srv.FinishTask(task.UPID); err != nil {
		t.Fatal(err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	// Shutdown returned, so Run has returned too: its result is there.
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatalf("Run after Shutdown = %v, want nil", err)
		}
	default:
		t.Fatal("Shutdown returned before Run did")
	}
	if inflight, err := f.j.InFlight(ctxT(t)); err != nil || len(inflight) != 0 {
		t.Fatalf("in flight after Shutdown: %v %v", inflight, err)
	}
	if g, _ := f.srv.Guest(qemu(100)); !g.Running {
		t.Fatal("guest not running after Shutdown: the operation sent must finish")
	}

	// Afterwards: Run returns at once, nothing is sent, Shutdown is a no-op.
	if err := e.Run(context.Background()); err != nil {
		t.Fatalf("Run after Shutdown = %v, want nil at once", err)
	}
	if _, err := e.ReconcileOnce(ctxT(t)); !errors.Is(err, reconcile.ErrDraining) {
		t.Fatalf("a pass after Shutdown = %v, want ErrDraining", err)
	}
	if err := e.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("a second Shutdown = %v", err)
	}
	if n := f.srv.TaskCount(qemu(100), ""); n != 1 {
		t.Fatalf("%d tasks, want the one start", n)
	}
}

// Shutdown without Run drains and returns.
func TestShutdownWithoutRun(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.eng.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if _, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}); !errors.Is(err, reconcile.ErrDraining) {
		t.Fatalf("Apply after Shutdown = %v, want ErrDraining", err)
	}
}
