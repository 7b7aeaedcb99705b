package reconcile_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// A task that does not end within TaskTimeout leaves its operation in
// flight instead of holding up the pass; the guest is left alone, and
// nothing is sent again, until Recover learns how the task ended.
func TestTaskTimeoutLeavesTheOperationInFlight(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()},
		func(c *reconcile.Config) { c.TaskTimeout = 20 * time.Millisecond })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})

	rep := f.pass()
	g := outcome(rep, qemu(100))
	if g.Outcome != reconcile.GuestInterrupted || len(g.Actions) != 1 ||
		g.Actions[0].Outcome != reconcile.OutcomeInterrupted || !strings.Contains(g.Actions[0].Error, "gave up waiting") {
		t.Fatalf("first pass: %+v", g)
	}
	op := g.Actions[0]
	if e := latest(t, f.j, op.OpID); e.State != journal.TaskRunning || proxmox.UPID(e.UPID) != op.UPID {
		t.Fatalf("journal after giving up: %+v", e)
	}

	// The task still runs: the next pass finds it so, and skips the guest
	// rather than start it a second time.
	rep = f.pass()
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipUnresolved ||
		!strings.Contains(g.Detail, "still running") {
		t.Fatalf("second pass: %+v", g)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d start tasks, want 1", n)
	}

	if err := f.srv.FinishTask(op.UPID); err != nil {
		t.Fatal(err)
	}
	rep = f.pass()
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestInSync {
		t.Fatalf("after the task ended: %+v", g)
	}
	if e := latest(t, f.j, op.OpID); e.State != journal.Succeeded {
		t.Fatalf("journal after the task ended: %+v", e)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d start tasks, want 1", n)
	}
}

// With TaskUser set, Recover adopts only tasks its own user started: a
// start an operator made by hand after the intent is not taken for the
// lost answer's.
func TestTaskUserLimitsWhichTasksAreAdopted(t *testing.T) {
	const engineToken, operatorToken = "guestward@pve!engine", "alice@pve!ops"
	f := newFixture(t, []proxmoxtest.Option{
		proxmoxtest.WithAPIToken(engineToken, "engine-secret"),
		proxmoxtest.WithAPIToken(operatorToken, "operator-secret"),
	})
	operator, err := proxmox.New(f.srv.URL, proxmox.WithHTTPClient(f.srv.Client()),
		proxmox.WithAPIToken(operatorToken, "operator-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(operator.CloseIdleConnections)
	eng := f.newEngine(f.j, func(c *reconcile.Config) { c.TaskUser = engineToken })

	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	at := time.Now()
	intent(t, f.j, "by-operator", qemu(100), reconcile.ActionStart, "", at)
	intent(t, f.j, "by-engine", qemu(101), reconcile.ActionStart, "", at)
	opUPID, err := operator.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	ownUPID, err := f.client.Start(ctxT(t), qemu(101))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := opUPID.Parse(); err != nil || info.User != operatorToken {
		t.Fatalf("the operator's task %s: %+v %v", opUPID, info, err)
	}

	rep, err := eng.Recover(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]reconcile.RecoveredOp{}
	for _, o := range rep.Ops {
		got[o.OpID] = o
	}
	if o := got["by-operator"]; o.To != journal.Failed || o.UPID != "" {
		t.Fatalf("the operator's task was taken for the engine's: %+v", o)
	}
	if o := got["by-engine"]; o.To != journal.Succeeded || o.UPID != ownUPID {
		t.Fatalf("the engine's own task was not adopted: %+v", o)
	}
}

func TestDryRunNeedsNoJournal(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)
	e := f.newEngine(nil, func(c *reconcile.Config) { c.DryRun = true })
	rep, err := e.ReconcileOnce(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestPlanned {
		t.Fatalf("guest 100: %+v", g)
	}
	if n := f.writes(); n != 0 {
		t.Fatalf("dry run sent %d writes", n)
	}
	if _, err := e.Recover(ctxT(t)); !errors.Is(err, reconcile.ErrDryRun) {
		t.Fatalf("Recover without a journal: %v", err)
	}
	if _, err := e.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}); !errors.Is(err, reconcile.ErrDryRun) {
		t.Fatalf("Apply in a dry run: %v", err)
	}
}

func TestNegativeJitterAndSettleDelayMeanNone(t *testing.T) {
	f := newFixture(t, nil)
	for name, cfg := range map[string]reconcile.Config{
		"jitter":       {Proxmox: f.client, Journal: f.j, Jitter: -1},
		"settle delay": {Proxmox: f.client, Journal: f.j, SettleDelay: -1},
	} {
		if _, err := reconcile.NewEngine(cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := reconcile.NewEngine(reconcile.Config{Proxmox: f.client, Journal: f.j, TaskTimeout: -1}); !errors.Is(err, reconcile.ErrConfig) {
		t.Errorf("negative TaskTimeout: %v", err)
	}
}

// The report's Duration is measured on the engine's clock, from the start
// of the pass to its end.
func TestReportDuration(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tick := func() time.Time { // every reading is a second later
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	f := newFixture(t, nil, func(c *reconcile.Config) { c.Now = tick })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	rep := f.pass()
	if rep.Start.IsZero() || rep.Duration < time.Second {
		t.Fatalf("start %v, duration %v", rep.Start, rep.Duration)
	}
	if end := tick(); rep.Start.Add(rep.Duration).After(end) {
		t.Fatalf("the pass ended at %v, after %v", rep.Start.Add(rep.Duration), end)
	}
}

// Drain lets the operation in progress finish and starts no other: the
// queued guest is reported not started, and later passes and one-shot
// operations are refused without touching the journal.
func TestDrainFinishesRunningOperationsAndStartsNoOther(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()},
		func(c *reconcile.Config) { c.Concurrency = 1 })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerRunning})

	type result struct {
		rep reconcile.Report
		err error
	}
	passDone := make(chan result, 1)
	go func() {
		rep, err := f.eng.ReconcileOnce(ctxT(t))
		passDone <- result{rep, err}
	}()
	// One guest's start task runs; the other guest waits for the single
	// worker.
	task, err := f.srv.AwaitTask(ctxT(t), func(proxmoxtest.Task) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	first, second := qemu(100), qemu(101)
	if task.ID == "101" {
		first, second = second, first
	}

	// Drain waits for the running operation...
	short, cancel := context.WithTimeout(ctxT(t), 20*time.Millisecond)
	defer cancel()
	if err := f.eng.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain returned %v while an operation ran", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- f.eng.Drain(ctxT(t)) }()
	if err := f.srv.FinishTask(task.UPID); err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	// ...and the pass ends without starting the other guest.
	res := <-passDone
	if res.err != nil {
		t.Fatal(res.err)
	}
	if g := outcome(res.rep, first); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("the guest whose operation ran: %+v", g)
	}
	g := outcome(res.rep, second)
	if g.Outcome != reconcile.GuestNotStarted || len(g.Actions) != 1 || g.Actions[0].Outcome != reconcile.OutcomeNotStarted {
		t.Fatalf("the queued guest: %+v", g)
	}
	if sent, _ := res.rep.Actions(); sent != 1 {
		t.Fatalf("%d actions counted as sent, want 1", sent)
	}
	if n := f.srv.TaskCount(second, ""); n != 0 {
		t.Fatalf("%d tasks for the queued guest", n)
	}
	if inflight, err := f.j.InFlight(ctxT(t)); err != nil || len(inflight) != 0 {
		t.Fatalf("in flight after the drain: %v %v", inflight, err)
	}

	if _, err := f.eng.ReconcileOnce(ctxT(t)); !errors.Is(err, reconcile.ErrDraining) {
		t.Fatalf("a pass after Drain: %v", err)
	}
	if _, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: second, Kind: reconcile.ActionStart}); !errors.Is(err, reconcile.ErrDraining) {
		t.Fatalf("Apply after Drain: %v", err)
	}
	if applied, _ := f.j.AlreadyApplied(ctxT(t), "k"); applied {
		t.Fatal("the refused key is marked applied")
	}
	if err := f.eng.Drain(ctxT(t)); err != nil {
		t.Fatalf("a second Drain: %v", err)
	}
}

// The recovery a pass runs first does not wait for the task of an
// operation left in flight: with the default TaskTimeout of ten minutes,
// waiting would hold up every other guest. The guest is skipped until the
// task has ended; the others are acted on meanwhile.
func TestPassDoesNotWaitForAnEarlierOperationsTask(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	// A container's configuration change is synchronous: no task to wait for.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: lxc(200), Config: map[string]string{"memory": "1024"}})

	// The first pass stops once the start's task is journaled, as a crash
	// there would stop it.
	rep, err := f.eng.ReconcileOnce(crashAt(t, checkpoint.AfterTaskRecord))
	if err != nil {
		t.Fatal(err)
	}
	g := outcome(rep, qemu(100))
	if g.Outcome != reconcile.GuestInterrupted || len(g.Actions) != 1 || g.Actions[0].UPID == "" {
		t.Fatalf("first pass, the interrupted start: %+v", g)
	}
	upid := g.Actions[0].UPID
	if g := outcome(rep, lxc(200)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("first pass, the container: %+v", g)
	}
	// Someone changes the container back: the next pass has work there.
	if err := f.srv.UpdateConfig(lxc(200), map[string]string{"memory": "512"}, nil); err != nil {
		t.Fatal(err)
	}

	// ctxT's 30 seconds are far below TaskTimeout: a pass that waited
	// for the running start would fail here.
	rep = f.pass()
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipUnresolved ||
		!strings.Contains(g.Detail, "still running") {
		t.Fatalf("the guest with the running task: %+v", g)
	}
	if g := outcome(rep, lxc(200)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("the container, meanwhile: %+v", g)
	}

	if err := f.srv.FinishTask(upid); err != nil {
		t.Fatal(err)
	}
	rep = f.pass()
	if !rep.Converged() {
		t.Fatalf("after the task ended: %+v", rep.Guests)
	}
	if n := f.srv.TaskCount(qemu(100), ""); n != 1 {
		t.Fatalf("%d tasks for guest 100, want 1", n)
	}
}

// Drain called after a one-shot operation passed its first checks but
// before it started: the operation does not start, Apply says so, and the
// key stays unused.
func TestDrainBetweenApplysChecksAndItsStart(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	var eng *reconcile.Engine
	eng = f.newEngine(f.j, func(c *reconcile.Config) {
		// The policy runs in the guest's lane, just before the operation
		// would start.
		c.Policy = func(ctx context.Context, _ reconcile.Action, _ reconcile.Observed) error {
			return eng.Drain(ctx)
		}
	})
	res, err := eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart})
	if !errors.Is(err, reconcile.ErrDraining) || res.OpID != "" {
		t.Fatalf("Apply: %+v %v", res, err)
	}
	if applied, _ := f.j.AlreadyApplied(ctxT(t), "k"); applied {
		t.Fatal("the key that did not run is marked applied")
	}
	if inflight, err := f.j.InFlight(ctxT(t)); err != nil || len(inflight) != 0 {
		t.Fatalf("journaled: %v %v", inflight, err)
	}
	if f.writes() != 0 {
		t.Fatal("sent after Drain")
	}
}

// A journal that cannot list its operations would let recovery take a
// finished operation's task for a lost request's; NewEngine refuses it.
func TestEngineRefusesJournalWithoutOpLister(t *testing.T) {
	f := newFixture(t, nil)
	type bare struct{ journal.Journal } // hides every method but the interface's
	_, err := reconcile.NewEngine(reconcile.Config{Proxmox: f.client, Journal: bare{f.j}})
	if !errors.Is(err, reconcile.ErrConfig) || !strings.Contains(err.Error(), "OpLister") {
		t.Fatalf("NewEngine with a journal without Ops = %v, want ErrConfig naming journal.OpLister", err)
	}
}
