package etcdjournal

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

var errCrash = errors.New("simulated crash")

// Two replicas campaign for one fleet; the leader dies between two journal
// steps of its operations (at every such point in turn); the other takes
// over, recovers, and every operation ends done exactly once.
func TestFailoverBetweenJournalSteps(t *testing.T) {
	for _, point := range checkpoint.Names() {
		t.Run(point, func(t *testing.T) {
			f := newFleet(t)
			prefix := newPrefix(t)
			pauseA := make(chan struct{})
			a := await(t, campaignAsync(t, newClient(t), prefix, "a", withPause(pauseA)), "a")
			bc := campaignAsync(t, newClient(t), prefix, "b")
			waitCandidates(t, a, 2)

			var once sync.Once
			ea := f.engine(a)
			fp := new(failpoint.Set)
			fp.Enable(point, func() error {
				kill(t, a, pauseA, &once)
				return errCrash
			})
			ctxA, cancelA := a.Context(t.Context())
			_, err := ea.ReconcileOnce(checkpoint.With(ctxA, fp))
			cancelA()
			if err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.Canceled) {
				t.Fatalf("a's pass: %v", err)
			}
			if err := f.srv.WaitIdle(ctxT(t, 30*time.Second)); err != nil {
				t.Fatal(err)
			}

			b := await(t, bc, "b")
			eb := f.engine(b)
			ctxB, cancelB := b.Context(t.Context())
			defer cancelB()
			rec, err := eb.Recover(ctxB)
			if err != nil {
				t.Fatalf("b's Recover: %v (%+v)", err, rec)
			}
			t.Logf("b's Recover resolved %d operations left by a", len(rec.Ops))
			for _, op := range rec.Ops {
				if op.To == "" {
					t.Errorf("unresolved: %+v", op)
				}
			}
			if fl, _ := b.Journal().InFlight(ctxB); len(fl) != 0 {
				t.Fatalf("in flight after b's Recover: %+v", fl)
			}
			rep, err := eb.ReconcileOnce(ctxB)
			if err != nil {
				t.Fatal(err)
			}
			if !convergedOrChanged(rep) {
				t.Fatalf("b's pass:\n%s", rep)
			}
			f.checkOnce()
			rep, err = eb.ReconcileOnce(ctxB)
			if err != nil || !rep.Converged() {
				t.Fatalf("second pass of b: %v\n%s", err, rep)
			}
		})
	}
}

func convergedOrChanged(rep reconcile.Report) bool {
	for _, g := range rep.Guests {
		if g.Outcome != reconcile.GuestChanged && g.Outcome != reconcile.GuestInSync {
			return false
		}
	}
	return true
}

// The leader dies while its tasks run on Proxmox; the new leader adopts the
// running tasks instead of starting them again.
func TestFailoverMidTask(t *testing.T) {
	f := newFleet(t, proxmoxtest.WithManualTasks())
	prefix := newPrefix(t)
	pauseA := make(chan struct{})
	a := await(t, campaignAsync(t, newClient(t), prefix, "a", withPause(pauseA)), "a")
	bc := campaignAsync(t, newClient(t), prefix, "b")
	waitCandidates(t, a, 2)

	ea := f.engine(a)
	ctxA, cancelA := a.Context(t.Context())
	defer cancelA()
	passA := make(chan error, 1)
	go func() {
		_, err := ea.ReconcileOnce(ctxA)
		passA <- err
	}()
	// Wait until all three tasks run, then kill a.
	for typ := range map[string]bool{"qmstart": true, "qmconfig": true, "vzstop": true} {
		if _, err := f.srv.AwaitTask(ctxT(t, 30*time.Second), func(tk proxmoxtest.Task) bool { return tk.Type == typ }); err != nil {
			t.Fatalf("task %s: %v", typ, err)
		}
	}
	var once sync.Once
	kill(t, a, pauseA, &once)
	cancelA() // the dead process's own waits end with it
	<-passA

	b := await(t, bc, "b")
	eb := f.engine(b)
	ctxB, cancelB := b.Context(t.Context())
	defer cancelB()
	// The first pass finds the tasks still running and leaves their guests
	// alone; nothing is sent again.
	before := f.writes()
	if _, err := eb.ReconcileOnce(ctxB); err != nil {
		t.Fatal(err)
	}
	fl, err := b.Journal().InFlight(ctxB)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl) != 3 {
		t.Fatalf("in flight while tasks run: %+v, want the three task operations", fl)
	}
	for _, e := range fl {
		if e.State != journal.TaskRunning {
			t.Errorf("op %s is %s, want task_running (the task recorded before the crash)", e.OpID, e.State)
		}
	}
	if got := f.writes(); got != before {
		t.Fatalf("b sent %d writes while a's tasks ran", got-before)
	}
	f.srv.FinishTasks()
	if _, err := eb.Recover(ctxB); err != nil {
		t.Fatal(err)
	}
	if fl, _ := b.Journal().InFlight(ctxB); len(fl) != 0 {
		t.Fatalf("in flight after the tasks ended: %+v", fl)
	}
	rep, err := eb.ReconcileOnce(ctxB)
	if err != nil || !rep.Converged() {
		t.Fatalf("b's pass after recovery: %v\n%s", err, rep)
	}
	f.checkOnce()
}

// A leader frozen while its lease expires still believes it leads; the pass
// it then runs writes no intent and so sends nothing to Proxmox.
func TestPartitionedLeaderSendsNothing(t *testing.T) {
	f := newFleet(t)
	prefix := newPrefix(t)
	pauseA := make(chan struct{})
	a := await(t, campaignAsync(t, newClient(t), prefix, "a", withPause(pauseA)), "a")
	close(pauseA)
	b := await(t, campaignAsync(t, newClient(t), prefix, "b"), "b") // after a's lease expired
	select {
	case <-a.Done():
		t.Fatal("the frozen leader noticed its loss; the test would not show the fence")
	default:
	}
	ea := f.engine(a)
	before := f.writes()
	rep, err := ea.ReconcileOnce(t.Context())
	if err != nil && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a's pass: %v", err)
	}
	if got := f.writes(); got != before {
		t.Fatalf("the deposed leader sent %d writes", got-before)
	}
	for _, g := range rep.Guests {
		for _, act := range g.Actions {
			if act.Outcome == reconcile.OutcomeSucceeded {
				t.Errorf("%s: deposed leader's action %+v succeeded", g.Ref, act)
			}
		}
	}
	if len(f.srv.Tasks()) != 0 {
		t.Fatalf("tasks after the deposed leader's pass: %+v", f.srv.Tasks())
	}
	eb := f.engine(b)
	if rep, err := eb.ReconcileOnce(t.Context()); err != nil || !convergedOrChanged(rep) {
		t.Fatalf("b's pass: %v\n%s", err, rep)
	}
	f.checkOnce()
}

// One one-shot key, sent to the deposed (frozen) leader and to the new one
// at once, runs once; sent again to a third leader after a failover, it is
// replayed.
func TestOneShotKeyIsGlobalAcrossReplicas(t *testing.T) {
	f := newFleet(t)
	prefix := newPrefix(t)
	pauseA := make(chan struct{})
	a := await(t, campaignAsync(t, newClient(t), prefix, "a", withPause(pauseA)), "a")
	close(pauseA)
	b := await(t, campaignAsync(t, newClient(t), prefix, "b"), "b")
	ea, eb := f.engine(a), f.engine(b)
	shot := reconcile.OneShot{Key: "req-42", Ref: qemu(100), Kind: reconcile.ActionStart}

	var wg sync.WaitGroup
	var resA, resB reconcile.Result
	var errA, errB error
	wg.Go(func() { resA, errA = ea.Apply(t.Context(), shot) })
	wg.Go(func() { resB, errB = eb.Apply(t.Context(), shot) })
	wg.Wait()
	if errB != nil || resB.State != journal.Succeeded {
		t.Fatalf("leader's Apply: %+v, %v", resB, errB)
	}
	if errA == nil && resA.State == journal.Succeeded && !resA.Replayed {
		t.Fatalf("the deposed leader ran the one-shot too: %+v", resA)
	}
	if err := b.Resign(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := await(t, campaignAsync(t, newClient(t), prefix, "c"), "c")
	res, err := f.engine(c).Apply(t.Context(), shot)
	if err != nil || !res.Replayed || res.State != journal.Succeeded {
		t.Fatalf("the same key after failover: %+v, %v; want the recorded success, replayed", res, err)
	}
	if err := f.srv.WaitIdle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d qmstart tasks for one key, want 1", n)
	}
}
