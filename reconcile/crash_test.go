package reconcile_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The points between journal steps at which the engine can be stopped.
var checkpoints = []string{
	"op/before-intent",
	"op/after-intent",
	"op/after-call",
	"op/after-task-record",
	"op/after-wait",
	"op/after-outcome",
}

var errCrash = errors.New("simulated crash")

// crashAt returns a context under which every operation stops at point
// with errCrash, as a crash there would stop it. The test fails if no
// operation reached point: a crash test whose crash never happened
// proves nothing.
func crashAt(t *testing.T, point string) context.Context {
	t.Helper()
	var reached atomic.Int64
	fp := new(failpoint.Set)
	fp.Enable(point, func() error {
		reached.Add(1)
		return errCrash
	})
	t.Cleanup(func() {
		if reached.Load() == 0 {
			t.Errorf("no operation reached %s: the crash under test never happened", point)
		}
	})
	return checkpoint.With(ctxT(t), fp)
}

// crashFleet declares one action of each shape: a QEMU start and a QEMU
// config change (tasks), an LXC config change (synchronous) and an LXC stop.
func crashFleet(f *fixture) map[proxmox.Ref]string {
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 201, Running: true, Config: map[string]string{"memory": "512"}})
	f.desire(
		reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: qemu(101), Config: map[string]string{"memory": "1024"}},
		reconcile.Desired{Ref: lxc(200), Config: map[string]string{"memory": "1024"}},
		reconcile.Desired{Ref: lxc(201), Power: reconcile.PowerStopped},
	)
	return map[proxmox.Ref]string{qemu(100): "qmstart", qemu(101): "qmconfig", lxc(201): "vzstop"}
}

func openFileJournal(t *testing.T, path string) *journal.FileJournal {
	t.Helper()
	j, err := journal.OpenFile(path, journal.WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// Stopping the engine between any two steps of an operation, then
// restarting it on the same journal, resolves every operation, runs nothing
// twice, and converges.
func TestCrashBetweenJournalStepsIsRecovered(t *testing.T) {
	for _, point := range checkpoints {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t, nil)
			tasks := crashFleet(f)
			path := filepath.Join(t.TempDir(), "ops.journal")

			// First life: every operation stops at point.
			j1 := openFileJournal(t, path)
			e1 := f.newEngine(j1)
			rep, err := e1.ReconcileOnce(crashAt(t, point))
			if err != nil {
				t.Fatal(err)
			}
			// A synchronous change (LXC config) has no task steps.
			taskStep := point == "op/after-task-record" || point == "op/after-wait"
			for _, g := range rep.Guests {
				want := reconcile.OutcomeInterrupted
				if point == "op/after-outcome" || taskStep && g.Ref == lxc(200) {
					want = reconcile.OutcomeSucceeded // the outcome was recorded first
				}
				if len(g.Actions) != 1 || g.Actions[0].Outcome != want {
					t.Fatalf("%s at %s: %+v", g.Ref, point, g.Actions)
				}
			}
			// Whatever the first life started finishes on the cluster.
			if err := f.srv.WaitIdle(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if err := j1.Close(); err != nil {
				t.Fatal(err)
			}

			// Second life: recover from the journal on disk.
			j2 := openFileJournal(t, path)
			defer j2.Close()
			e2 := f.newEngine(j2)
			rec, err := e2.Recover(ctxT(t))
			if err != nil {
				t.Fatalf("Recover: %v (%+v)", err, rec)
			}
			if inflight, _ := j2.InFlight(ctxT(t)); len(inflight) != 0 {
				t.Fatalf("still in flight after Recover: %+v", inflight)
			}
			for _, op := range rec.Ops {
				if op.To == "" {
					t.Errorf("unresolved: %+v", op)
				}
			}
			wantResolved := 4
			switch {
			case point == "op/before-intent" || point == "op/after-outcome":
				wantResolved = 0 // nothing journaled / everything concluded
			case taskStep:
				wantResolved = 3
			}
			if len(rec.Ops) != wantResolved {
				t.Errorf("Recover resolved %d operations, want %d: %+v", len(rec.Ops), wantResolved, rec.Ops)
			}

			// The next pass converges; nothing ran twice.
			rep2, err := e2.ReconcileOnce(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range rep2.Guests {
				if g.Outcome != reconcile.GuestChanged && g.Outcome != reconcile.GuestInSync {
					t.Errorf("after recovery %s: %s %s", g.Ref, g.Outcome, g.Detail)
				}
			}
			if err := f.srv.WaitIdle(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			for ref, typ := range tasks {
				if n := f.srv.TaskCount(ref, typ); n != 1 {
					t.Errorf("%s: %d %s tasks, want exactly 1", ref, n, typ)
				}
			}
			if g := f.guest(lxc(200)); g.Config["memory"] != "1024" {
				t.Errorf("ct 200 memory %q", g.Config["memory"])
			}
			if g := f.guest(qemu(100)); !g.Running {
				t.Error("vm 100 not running")
			}
			if g := f.guest(lxc(201)); g.Running {
				t.Error("ct 201 still running")
			}
			if g := f.guest(qemu(101)); g.Config["memory"] != "1024" {
				t.Errorf("vm 101 memory %q", g.Config["memory"])
			}
		})
	}
}

// A one-shot operation interrupted at any point runs at most once, however
// often it is asked for again after restarts.
func TestOneShotCrashRunsAtMostOnce(t *testing.T) {
	for _, point := range checkpoints {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t, nil)
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
			path := filepath.Join(t.TempDir(), "ops.journal")
			shot := reconcile.OneShot{Key: "hub-request-42", Ref: qemu(100), Kind: reconcile.ActionStart}

			j1 := openFileJournal(t, path)
			e1 := f.newEngine(j1)
			_, _ = e1.Apply(crashAt(t, point), shot)
			if err := f.srv.WaitIdle(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if err := j1.Close(); err != nil {
				t.Fatal(err)
			}

			for life := 2; life <= 3; life++ {
				j := openFileJournal(t, path)
				e := f.newEngine(j)
				res, err := e.Apply(ctxT(t), shot)
				if err != nil {
					t.Fatalf("life %d: %v", life, err)
				}
				if err := f.srv.WaitIdle(ctxT(t)); err != nil {
					t.Fatal(err)
				}
				if n := f.srv.TaskCount(qemu(100), "qmstart"); n > 1 {
					t.Fatalf("life %d: %d start tasks for one key", life, n)
				}
				if life == 3 && !res.Replayed {
					t.Errorf("life 3 ran again: %+v", res)
				}
				j.Close()
			}
			// Stopped before the intent was journaled, the key was never
			// used and the second life runs the operation. Stopped after the
			// intent but before the request, the attempt is recorded as
			// never started, which leaves the key unused: the second life
			// runs it as a new attempt. Stopped later, the first life's
			// request ran, once. Whatever the point, it ran exactly once.
			if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
				t.Errorf("%d start tasks, want 1", n)
			}
		})
	}
}

// crashAndRestart runs one pass on an engine stopped at point, as a crash
// there would stop it, waits for what it sent to finish on the cluster,
// then opens the journal again in a new engine, checks that Recover
// resolves every operation, and returns the report of the next pass.
func crashAndRestart(t *testing.T, f *fixture, point string) reconcile.Report {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ops.journal")
	j1 := openFileJournal(t, path)
	e1 := f.newEngine(j1)
	if _, err := e1.ReconcileOnce(crashAt(t, point)); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.WaitIdle(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := j1.Close(); err != nil {
		t.Fatal(err)
	}

	j2 := openFileJournal(t, path)
	t.Cleanup(func() { j2.Close() })
	e2 := f.newEngine(j2)
	rec, err := e2.Recover(ctxT(t))
	if err != nil {
		t.Fatalf("Recover: %v (%+v)", err, rec)
	}
	for _, op := range rec.Ops {
		if op.To == "" {
			t.Errorf("unresolved: %+v", op)
		}
	}
	rep, err := e2.ReconcileOnce(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.WaitIdle(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return rep
}
