package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// intent journals an operation's intent the way the engine does, as a
// crash would leave it.
func intent(t *testing.T, j journal.Journal, opID string, ref proxmox.Ref, kind reconcile.ActionKind, key string, at time.Time) {
	t.Helper()
	err := j.Append(ctxT(t), journal.Entry{
		OpID: opID, VMID: ref.VMID, Kind: string(kind), IdempKey: key, State: journal.Started, At: at,
		Params: map[string]string{"node": ref.Node, "type": string(ref.Type)},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func latest(t *testing.T, j journal.Journal, opID string) journal.Entry {
	t.Helper()
	e, ok, err := j.Latest(ctxT(t), opID)
	if err != nil || !ok {
		t.Fatalf("Latest(%s): %v %v", opID, ok, err)
	}
	return e
}

func TestRecoverIntentWithoutTaskIsNotStarted(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	intent(t, f.j, "op-1", qemu(100), reconcile.ActionStart, "", time.Now())
	rep, err := f.eng.Recover(ctxT(t))
	if err != nil || len(rep.Ops) != 1 || rep.Ops[0].To != journal.Failed || !strings.Contains(rep.Ops[0].How, "never reached") {
		t.Fatalf("%+v %v", rep, err)
	}
	if e := latest(t, f.j, "op-1"); e.State != journal.Failed || !strings.Contains(e.Error, "not started") {
		t.Fatalf("journal: %+v", e)
	}
	if n := f.srv.TaskCount(qemu(100), ""); n != 0 {
		t.Fatalf("Recover started %d tasks", n)
	}
}

func TestRecoverAdoptsTheTaskTheRequestStarted(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	at := time.Now()
	intent(t, f.j, "op-1", qemu(100), reconcile.ActionStart, "key-1", at)
	// The request reached Proxmox; its answer was lost in the crash.
	upid, err := f.client.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.eng.Recover(ctxT(t))
	if err != nil || len(rep.Ops) != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	if op := rep.Ops[0]; op.To != journal.Succeeded || op.UPID != upid || op.How != "task adopted" {
		t.Fatalf("%+v, want adopted %s", op, upid)
	}
	if applied, _ := f.j.AlreadyApplied(ctxT(t), "key-1"); !applied {
		t.Fatal("the adopted one-shot is not applied")
	}
	// Applying the key again runs nothing.
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "key-1", Ref: qemu(100), Kind: reconcile.ActionStart})
	if err != nil || !res.Replayed || f.srv.TaskCount(qemu(100), "qmstart") != 1 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRecoverAwaitsATaskStillRunning(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	intent(t, f.j, "op-1", qemu(100), reconcile.ActionStart, "", time.Now())
	upid, err := f.client.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.j.Append(ctxT(t), journal.Entry{OpID: "op-1", State: journal.TaskRunning, UPID: string(upid)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var rep reconcile.RecoveryReport
	go func() {
		var err error
		rep, err = f.eng.Recover(ctxT(t))
		done <- err
	}()
	// Recover must wait for the task: it cannot have finished yet.
	select {
	case err := <-done:
		t.Fatalf("Recover returned while the task ran: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := f.srv.FinishTask(upid); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rep.Ops[0].To != journal.Succeeded || rep.Ops[0].How != "task finished" {
		t.Fatalf("%+v", rep.Ops[0])
	}
}

func TestRecoverLXCConfigChangeByItsEffect(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	at := time.Now()
	for _, op := range []string{"applied", "lost"} {
		err := f.j.Append(ctxT(t), journal.Entry{
			OpID: op, VMID: 200, Kind: string(reconcile.ActionSetConfig), State: journal.Started, At: at,
			Params: map[string]string{"node": "pve1", "type": "lxc", "set:memory": map[string]string{"applied": "1024", "lost": "4096"}[op]},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The first change reached Proxmox before the crash; the second did not.
	if _, err := f.client.SetConfig(ctxT(t), lxc(200), proxmox.ConfigChange{Set: map[string]string{"memory": "1024"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := f.eng.Recover(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]journal.State{}
	for _, op := range rep.Ops {
		got[op.OpID] = op.To
	}
	if got["applied"] != journal.Succeeded || got["lost"] != journal.Failed {
		t.Fatalf("%+v", rep.Ops)
	}
}

// An operation Recover cannot resolve blocks its own guest, not the rest:
// a pass skips that guest and acts on the others, and Apply refuses it.
func TestUnresolvedOperationsBlockOnlyTheirGuest(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	other := proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 101}
	f.add(proxmoxtest.GuestSpec{Node: "pve2", Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: other, Power: reconcile.PowerRunning})
	intent(t, f.j, "op-1", qemu(100), reconcile.ActionStart, "", time.Now())
	// pve1 cannot be asked about its tasks.
	h := f.srv.Inject(proxmoxtest.Fault{Path: "/nodes/pve1/tasks", Status: 403, Message: "Permission check failed"})
	if _, err := f.eng.Recover(ctxT(t)); !errors.Is(err, reconcile.ErrUnresolved) {
		t.Fatalf("Recover: %v", err)
	}
	rep, err := f.eng.ReconcileOnce(ctxT(t))
	if err != nil {
		t.Fatalf("pass with an unresolved operation: %v", err)
	}
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipUnresolved ||
		!strings.Contains(g.Detail, "op-1") || len(g.Actions) != 0 {
		t.Fatalf("guest with the unresolved operation: %+v", g)
	}
	if g := outcome(rep, other); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("the other guest: %+v", g)
	}
	if n := f.srv.TaskCount(qemu(100), ""); n != 0 {
		t.Fatalf("%d tasks on the blocked guest", n)
	}
	if !f.guest(other).Running {
		t.Fatal("the other guest was not started")
	}
	_, err = f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "x", Ref: qemu(100), Kind: reconcile.ActionStart})
	if !errors.Is(err, reconcile.ErrUnresolved) {
		t.Fatalf("Apply on the blocked guest: %v", err)
	}
	if res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "y", Ref: other, Kind: reconcile.ActionStop}); err != nil || res.State != journal.Succeeded {
		t.Fatalf("Apply on the other guest: %+v %v", res, err)
	}
	if n := f.srv.TaskCount(qemu(100), ""); n != 0 {
		t.Fatalf("%d tasks on the blocked guest", n)
	}
	// The key refused on the blocked guest stays unused.
	if applied, _ := f.j.AlreadyApplied(ctxT(t), "x"); applied {
		t.Fatal("the refused key is marked applied")
	}
	h.Remove()
	rep = f.pass()
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("after the node answers again: %+v", g)
	}
	if e := latest(t, f.j, "op-1"); e.State != journal.Failed {
		t.Fatalf("op-1: %+v", e)
	}
}

func TestRecoverClosesUnreadableRecords(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.j.Append(ctxT(t), journal.Entry{OpID: "junk", VMID: 100, Kind: "start", State: journal.Started,
		Params: map[string]string{"node": "pve1", "type": "vmware"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := f.eng.Recover(ctxT(t))
	if err != nil || rep.Ops[0].To != journal.Failed || rep.Ops[0].How != "unreadable record" {
		t.Fatalf("%+v %v", rep, err)
	}
}

// A crash after the engine sent again a task that did nothing (a lock
// timeout), before it recorded the new task: Recover finds the new task and
// waits for it, instead of taking the operation as done with nothing done,
// which would leave the key usable and run the request a second time.
func TestRecoverAdoptsTheRetryOfATaskThatDidNothing(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, LockTimeout: true})
	path := filepath.Join(t.TempDir(), "ops.journal")
	j1 := openFileJournal(t, path)
	calls := 0
	fp := new(failpoint.Set)
	fp.Enable("op/after-call", func() error {
		if calls++; calls == 2 {
			return errCrash // the retry was sent, its task not recorded
		}
		return nil
	})
	e1 := f.newEngine(j1)
	shot := reconcile.OneShot{Key: "start-100", Ref: qemu(100), Kind: reconcile.ActionStart}
	if _, err := e1.Apply(checkpoint.With(ctxT(t), fp), shot); !errors.Is(err, checkpoint.ErrInterrupted) {
		t.Fatalf("first life: %v", err)
	}
	if err := f.srv.WaitIdle(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 2 {
		t.Fatalf("%d start tasks after the first life, want 2 (one that did nothing, its retry)", n)
	}
	j1.Close()

	j2 := openFileJournal(t, path)
	defer j2.Close()
	e2 := f.newEngine(j2)
	rec, err := e2.Recover(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Ops) != 1 || rec.Ops[0].To != journal.Succeeded || rec.Ops[0].Key != "start-100" {
		t.Fatalf("Recover: %+v", rec.Ops)
	}
	res, err := e2.Apply(ctxT(t), shot)
	if err != nil || !res.Replayed || !res.Applied() {
		t.Fatalf("the same key after recovery: %+v %v", res, err)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 2 {
		t.Errorf("%d start tasks, want 2: the request ran again", n)
	}
}

// Recover reports each operation it resolves with a last event of its own,
// so that displays and metrics see operations a crash interrupted.
func TestRecoverReportsResolvedOperations(t *testing.T) {
	var (
		mu     sync.Mutex
		events []reconcile.Event
	)
	onEvent := func(c *reconcile.Config) {
		c.OnEvent = func(ev reconcile.Event) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, ev)
		}
	}
	f := newFixture(t, nil, onEvent)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	at := time.Now()
	// op-1 reached Proxmox and its answer was lost; op-2 never did.
	intent(t, f.j, "op-1", qemu(100), reconcile.ActionStart, "", at)
	upid, err := f.client.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	intent(t, f.j, "op-2", qemu(101), reconcile.ActionStart, "", at)
	if _, err := f.eng.Recover(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 {
		t.Fatalf("%d events, want 2: %+v", len(events), events)
	}
	byOp := map[string]reconcile.Event{}
	for _, ev := range events {
		if !ev.Recovered || ev.Kind != reconcile.ActionStart || ev.At.IsZero() || ev.Duration != 0 || ev.TaskWait != 0 {
			t.Errorf("event %+v: want a recovered start, with a time and no duration", ev)
		}
		byOp[ev.OpID] = ev
	}
	if ev := byOp["op-1"]; ev.Phase != "done" || ev.Outcome != reconcile.OutcomeSucceeded || ev.UPID != upid || ev.Ref != qemu(100) || ev.Detail != "task adopted" {
		t.Errorf("op-1: %+v, want done, succeeded, task %s adopted", ev, upid)
	}
	if ev := byOp["op-2"]; ev.Phase != "failed" || ev.Outcome != reconcile.OutcomeFailed || ev.UPID != "" || ev.Ref != qemu(101) || !strings.Contains(ev.Detail, "not started") {
		t.Errorf("op-2: %+v, want failed, not started", ev)
	}
	// A second Recover finds nothing in flight and reports nothing.
	mu.Unlock()
	_, err = f.eng.Recover(ctxT(t))
	mu.Lock()
	if err != nil || len(events) != 2 {
		t.Fatalf("second Recover: %v, %d events", err, len(events))
	}
}

// An operation this engine started and a crash interrupted ends twice in
// its events: interrupted, then as Recover finds it, marked recovered.
func TestRecoveredEventFollowsTheInterruption(t *testing.T) {
	var (
		mu     sync.Mutex
		events []reconcile.Event
	)
	f := newFixture(t, nil, func(c *reconcile.Config) {
		c.OnEvent = func(ev reconcile.Event) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, ev)
		}
	})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	if res, err := f.eng.Apply(crashAt(t, checkpoint.AfterTaskRecord), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}); err == nil {
		t.Fatalf("Apply: %+v, want the simulated crash", res)
	}
	if _, err := f.eng.Recover(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var got []string
	for _, ev := range events {
		got = append(got, fmt.Sprintf("%s/%s/%v", ev.Phase, ev.Outcome, ev.Recovered))
	}
	want := []string{"start//false", "task//false", "failed/interrupted/false", "done/succeeded/true"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// countingJournal counts full reads of the journal's operations.
type countingJournal struct {
	*journal.MemoryJournal
	ops atomic.Int64
}

func (c *countingJournal) Ops(ctx context.Context) ([]journal.Entry, error) {
	c.ops.Add(1)
	return c.MemoryJournal.Ops(ctx)
}

// Recover reads the journal's operations once for all the operations it
// resolves, not once for each, while every task it finds stays told apart.
func TestRecoverReadsTheOperationsOnce(t *testing.T) {
	f := newFixture(t, nil)
	j := &countingJournal{MemoryJournal: journal.NewMemory()}
	eng := f.newEngine(j)
	const n = 10
	at := time.Now()
	upids := map[string]proxmox.UPID{}
	for i := range n {
		vmid := 100 + i
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: vmid, Config: map[string]string{"memory": "512"}})
		op := fmt.Sprintf("op-%d", i)
		intent(t, j, op, qemu(vmid), reconcile.ActionStart, "", at)
		if i%2 == 0 {
			// Half reached Proxmox, their answers lost.
			upid, err := f.client.Start(ctxT(t), qemu(vmid))
			if err != nil {
				t.Fatal(err)
			}
			upids[op] = upid
		}
	}
	rep, err := eng.Recover(ctxT(t))
	if err != nil || len(rep.Ops) != n {
		t.Fatalf("%+v %v", rep, err)
	}
	for _, op := range rep.Ops {
		if want, sent := upids[op.OpID]; sent && (op.To != journal.Succeeded || op.UPID != want) ||
			!sent && (op.To != journal.Failed || op.UPID != "") {
			t.Errorf("%+v: want task %q adopted", op, want)
		}
	}
	if got := j.ops.Load(); got != 1 {
		t.Errorf("%d reads of every operation for %d in flight, want 1", got, n)
	}
}

// Two operations of one guest in flight, one task in Proxmox: the task is
// adopted once, and the other operation never reached Proxmox.
func TestRecoverAdoptsATaskOnce(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	at := time.Now()
	intent(t, f.j, "op-1", qemu(100), reconcile.ActionStart, "", at)
	intent(t, f.j, "op-2", qemu(100), reconcile.ActionStart, "", at)
	upid, err := f.client.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.eng.Recover(ctxT(t))
	if err != nil || len(rep.Ops) != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	adopted := 0
	for _, op := range rep.Ops {
		if op.UPID == upid {
			adopted++
		}
	}
	if adopted != 1 {
		t.Fatalf("task %s adopted by %d operations: %+v", upid, adopted, rep.Ops)
	}
}

// gatedJournal holds back task records until released, and tells when the
// operations are first read.
type gatedJournal struct {
	countingJournal
	read    chan struct{} // closed after the first read of every operation
	held    chan struct{} // closed when a task record starts waiting
	release chan struct{} // task records wait for it
	once    sync.Once
	holding sync.Once
}

func (g *gatedJournal) Ops(ctx context.Context) ([]journal.Entry, error) {
	ops, err := g.countingJournal.Ops(ctx)
	g.once.Do(func() { close(g.read) })
	return ops, err
}

func (g *gatedJournal) Append(ctx context.Context, e journal.Entry) error {
	if e.State == journal.TaskRunning {
		g.holding.Do(func() { close(g.held) })
		<-g.release
	}
	return g.countingJournal.Append(ctx, e)
}

// A task an operation of this engine journals after Recover has read the
// claims, while Recover waits for that operation's lane, is still known
// as that operation's: an older operation of the same guest never adopts
// it.
func TestRecoverSeesTasksJournaledMeanwhile(t *testing.T) {
	f := newFixture(t, nil)
	j := &gatedJournal{countingJournal: countingJournal{MemoryJournal: journal.NewMemory()},
		read: make(chan struct{}), held: make(chan struct{}), release: make(chan struct{})}
	eng := f.newEngine(j)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	if _, err := eng.Recover(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Left in flight behind the engine's back: one on each guest, neither
	// of which reached Proxmox.
	at := time.Now().Add(-time.Second)
	intent(t, j, "op-a", qemu(101), reconcile.ActionStart, "", at)
	intent(t, j, "op-b", qemu(100), reconcile.ActionStart, "", at)

	applied := make(chan error, 1)
	go func() {
		_, err := eng.Apply(ctxT(t), reconcile.OneShot{Key: "c", Ref: qemu(100), Kind: reconcile.ActionStart})
		applied <- err
	}()
	// The one-shot's task has started; its record waits for release, in
	// the guest's lane. Recover reads the claims for op-a, then waits for
	// that lane.
	select {
	case <-j.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the one-shot never reached its task record")
	}
	recovered := make(chan reconcile.RecoveryReport, 1)
	go func() {
		rep, _ := eng.Recover(ctxT(t))
		recovered <- rep
	}()
	select {
	case <-j.read:
	case <-time.After(10 * time.Second):
		t.Fatal("Recover never read the claims")
	}
	close(j.release)
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	rep := <-recovered
	found := false
	for _, op := range rep.Ops {
		if op.OpID == "op-b" {
			found = true
			if op.To != journal.Failed || op.UPID != "" {
				t.Errorf("op-b: %+v: it took the one-shot's task", op)
			}
		}
	}
	if !found {
		t.Fatalf("Recover did not resolve op-b: %+v", rep.Ops)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Errorf("%d start tasks, want 1", n)
	}
}
