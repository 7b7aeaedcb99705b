package reconcile_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// Found by the fault storm (internal/gauntlet): when the answer to a start
// was lost, the engine looked for the task the start would have made among
// the guest's tasks of the last ClockSkew, and took the oldest, which was
// the task of an earlier start that had long finished. A start that never
// reached Proxmox was recorded as succeeded on the strength of another
// operation's task: the guest stayed stopped, and a one-shot's key was
// spent without the operation ever running. A task that a journaled
// operation owns must never be adopted by another.
func TestRegression_LostAnswerAdoptsAnEarlierOperationsTask(t *testing.T) {
	dropStart := proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1}

	// setup starts the guest, then stops it: each leaves a task that its
	// operation owns.
	setup := func(t *testing.T) *fixture {
		f := newFixture(t, nil)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
		for _, p := range []reconcile.Power{reconcile.PowerRunning, reconcile.PowerStopped} {
			f.desire(reconcile.Desired{Ref: qemu(100), Power: p})
			if g := outcome(f.pass(), qemu(100)); g.Outcome != reconcile.GuestChanged {
				t.Fatalf("%s: %s %s", p, g.Outcome, g.Detail)
			}
		}
		return f
	}
	// checkClaims fails unless every start task belongs to exactly one
	// operation of the journal.
	checkClaims := func(t *testing.T, f *fixture, wantStarts int) {
		t.Helper()
		if err := f.srv.WaitIdle(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		ops, err := f.j.(*journal.MemoryJournal).Ops(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		owner := map[string]string{}
		for _, op := range ops {
			if op.UPID == "" {
				continue
			}
			if prev, dup := owner[op.UPID]; dup {
				t.Errorf("task %s is claimed by %s and %s", op.UPID, prev, op.OpID)
			}
			owner[op.UPID] = op.OpID
		}
		starts := 0
		for _, task := range f.srv.Tasks() {
			if task.Type != "qmstart" {
				continue
			}
			starts++
			if owner[string(task.UPID)] == "" {
				t.Errorf("start task %s belongs to no operation", task.UPID)
			}
		}
		if starts != wantStarts {
			t.Errorf("%d start tasks, want %d", starts, wantStarts)
		}
	}

	t.Run("pass, dropped before handling", func(t *testing.T) {
		f := setup(t)
		fault := dropStart
		fault.Drop = proxmoxtest.DropBeforeHandling
		f.srv.Inject(fault)
		f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
		g := outcome(f.pass(), qemu(100))
		if g.Outcome != reconcile.GuestChanged || g.Actions[0].Attempts != 2 {
			t.Fatalf("%s (%s), attempts %d: the lost start was not sent again", g.Outcome, g.Detail, g.Actions[0].Attempts)
		}
		if !f.guest(qemu(100)).Running {
			t.Fatal("recorded as started, but the guest is stopped")
		}
		checkClaims(t, f, 2)
	})

	t.Run("pass, dropped after handling", func(t *testing.T) {
		f := setup(t)
		fault := dropStart
		fault.Drop = proxmoxtest.DropAfterHandling
		f.srv.Inject(fault)
		f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
		g := outcome(f.pass(), qemu(100))
		if g.Outcome != reconcile.GuestChanged || g.Actions[0].Attempts != 1 {
			t.Fatalf("%s (%s), attempts %d", g.Outcome, g.Detail, g.Actions[0].Attempts)
		}
		checkClaims(t, f, 2) // the task the lost answer named, adopted; nothing resent
	})

	t.Run("one-shot, dropped before handling", func(t *testing.T) {
		f := setup(t)
		fault := dropStart
		fault.Drop = proxmoxtest.DropBeforeHandling
		f.srv.Inject(fault)
		res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "start-again", Ref: qemu(100), Kind: reconcile.ActionStart})
		if err != nil || !res.Applied() {
			t.Fatalf("%+v %v", res, err)
		}
		if !f.guest(qemu(100)).Running {
			t.Fatal("the key is spent, but the guest was never started")
		}
		checkClaims(t, f, 2)
	})

	t.Run("recovery of an intent", func(t *testing.T) {
		f := setup(t)
		// A crash right after the intent: the request never left.
		intent(t, f.j, "op-crashed", qemu(100), reconcile.ActionStart, "key-crashed", time.Now())
		rep, err := f.eng.Recover(ctxT(t))
		if err != nil || len(rep.Ops) != 1 {
			t.Fatalf("%+v %v", rep, err)
		}
		if op := rep.Ops[0]; op.To != journal.Failed || op.UPID != "" {
			t.Fatalf("%+v: an earlier operation's task was adopted", op)
		}
		if applied, _ := f.j.AlreadyApplied(ctxT(t), "key-crashed"); applied {
			t.Fatal("the key counts as applied, but its operation never ran")
		}
		checkClaims(t, f, 1)
	})
}

// Found by the gauntlet: Recover read the operations in flight, then took
// each guest's lane to resolve them; an operation that the engine itself
// was running (a one-shot waiting for its task) was in that list, and by
// the time Recover had the lane it had succeeded. Recover then tried to
// record the outcome a second time, the journal refused (the operation was
// terminal), and Recover reported the operation unresolved, with
// ErrUnresolved, which makes passes and one-shots refuse to run. Recover
// must look at the operation again once it holds the lane.
func TestRegression_RecoverDuringARunningOperationReportsItUnresolved(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	if _, err := f.eng.Recover(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	applied := make(chan error, 1)
	go func() {
		res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart})
		if err == nil && !res.Applied() {
			err = errors.New("not applied: " + res.Error)
		}
		applied <- err
	}()
	task, err := f.srv.AwaitTask(ctxT(t), func(proxmoxtest.Task) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	// The one-shot has journaled its task and waits for it.
	waitUntil(t, func() bool {
		inflight, err := f.j.InFlight(ctxT(t))
		return err == nil && len(inflight) == 1 && inflight[0].UPID == string(task.UPID)
	})
	recovered := make(chan error, 1)
	var rep reconcile.RecoveryReport
	go func() {
		var err error
		rep, err = f.eng.Recover(ctxT(t))
		recovered <- err
	}()
	// Recover has read the journal and waits for the guest's lane.
	waitUntil(t, func() bool { return f.eng.Queue().Stats().Waiting == 1 })
	if err := f.srv.FinishTask(task.UPID); err != nil {
		t.Fatal(err)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if err := <-recovered; err != nil {
		t.Fatalf("Recover: %v (%+v)", err, rep)
	}
	if len(rep.Ops) != 0 {
		t.Fatalf("Recover resolved an operation that ended on its own: %+v", rep.Ops)
	}
}

// waitUntil waits for cond, failing the test after a generous deadline.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// Found by the gauntlet: an operation whose answer was lost while Proxmox
// could not be asked about its tasks ended interrupted, in flight in the
// journal, and the engine ran Recover only once, at its start. In a
// long-running engine the operation stayed in flight for good: every later
// Apply with its key failed with ErrUnresolved, and passes went on acting
// on the guest beside an unresolved operation. Now the engine resolves such
// an operation before its next pass or one-shot.
func TestRegression_InterruptedOperationStaysInFlightUntilRestart(t *testing.T) {
	interrupt := func(f *fixture) *proxmoxtest.FaultHandle {
		// The start happens, its answer is lost, and the node's task
		// list cannot be read to find out.
		f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, Drop: proxmoxtest.DropAfterHandling})
		return f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/*/tasks", Status: 503})
	}

	t.Run("one-shot", func(t *testing.T) {
		f := newFixture(t, nil)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
		shot := reconcile.OneShot{Key: "hub-7", Ref: qemu(100), Kind: reconcile.ActionStart}
		h := interrupt(f)
		if _, err := f.eng.Apply(ctxT(t), shot); err == nil {
			t.Fatal("the first call was not interrupted")
		}
		h.Remove()
		res, err := f.eng.Apply(ctxT(t), shot)
		if err != nil || !res.Applied() || !res.Replayed {
			t.Fatalf("the hub's retry: %+v %v", res, err)
		}
		if inflight, err := f.j.InFlight(ctxT(t)); err != nil || len(inflight) != 0 {
			t.Fatalf("still in flight: %+v %v", inflight, err)
		}
		if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
			t.Fatalf("%d start tasks, want 1", n)
		}
	})

	t.Run("pass", func(t *testing.T) {
		f := newFixture(t, nil)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
		f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
		h := interrupt(f)
		if g := outcome(f.pass(), qemu(100)); g.Outcome != reconcile.GuestInterrupted {
			t.Fatalf("first pass: %s %s", g.Outcome, g.Detail)
		}
		h.Remove()
		f.pass()
		inflight, err := f.j.InFlight(ctxT(t))
		if err != nil || len(inflight) != 0 {
			t.Fatalf("still in flight after the next pass: %+v %v", inflight, err)
		}
		if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
			t.Fatalf("%d start tasks, want 1", n)
		}
	})
}

// Found by the fault storm: when the status of an operation's task could
// not be read (a 500 from the node, say), the engine recorded the
// operation as failed, although the task went on and succeeded. The
// journal then told an untruth, and a one-shot's requester, told its
// operation failed, would ask for it again under a new key: a reboot would
// run twice. An error that does not say how the task ended leaves the
// operation in flight, for Recover to find out.
func TestRegression_UnreadableTaskStatusRecordedAsFailure(t *testing.T) {
	statusFails := proxmoxtest.Fault{Method: "GET", Path: "/nodes/*/tasks/*/status", Times: 1, Status: 500}

	t.Run("one-shot", func(t *testing.T) {
		f := newFixture(t, nil)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"memory": "512"}})
		shot := reconcile.OneShot{Key: "reboot-1", Ref: qemu(100), Kind: reconcile.ActionReboot}
		f.srv.Inject(statusFails)
		res, err := f.eng.Apply(ctxT(t), shot)
		if err == nil || res.State == journal.Failed {
			t.Fatalf("the reboot is reported as %s (%v) though its task was never read", res.State, err)
		}
		if err := f.srv.WaitIdle(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		res, err = f.eng.Apply(ctxT(t), shot)
		if err != nil || !res.Applied() || !res.Replayed {
			t.Fatalf("asked again: %+v %v", res, err)
		}
		if n := f.srv.TaskCount(qemu(100), "qmreboot"); n != 1 {
			t.Fatalf("%d reboot tasks, want 1", n)
		}
	})

	t.Run("pass", func(t *testing.T) {
		f := newFixture(t, nil)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
		f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
		f.srv.Inject(statusFails)
		g := outcome(f.pass(), qemu(100))
		if g.Outcome != reconcile.GuestInterrupted {
			t.Fatalf("%s %s", g.Outcome, g.Detail)
		}
		if err := f.srv.WaitIdle(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		f.pass()
		if e := latest(t, f.j, g.Actions[0].OpID); e.State != journal.Succeeded {
			t.Fatalf("the start is recorded as %s (%s), but its task succeeded", e.State, e.Error)
		}
	})
}

// Found by the bad-input battery: encoding/json lets two things through
// silently that a desired-state file must not hold. A member given twice
// in one object kept its last value, so that a second "guests" emptied the
// whole state, and a repeated option or vmid changed what was declared
// without a word; bytes that are not UTF-8 became U+FFFD, so that a value
// other than the one written would have been sent to Proxmox. Each is now
// an error that says where.
func TestRegression_DesiredFileDuplicateKeysAndBadUTF8AcceptedSilently(t *testing.T) {
	guest := `{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": 1024}}`
	for _, c := range []struct{ name, file, want string }{
		{"second guests list", `{"guests": [` + guest + `], "guests": []}`, `duplicate key "guests" in the top-level object at byte `},
		{"repeated option", `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": 1024, "memory": 64}}]}`, `duplicate key "memory" in guests[0].config at byte `},
		{"repeated vmid", `{"guests": [` + guest + `, {"node": "pve1", "type": "qemu", "vmid": 101, "vmid": 100}]}`, `duplicate key "vmid" in guests[1] at byte `},
		{"latin-1 byte", "{\"guests\": [{\"node\": \"pve1\", \"type\": \"qemu\", \"vmid\": 100, \"config\": {\"description\": \"caf\xe9\"}}]}", "invalid UTF-8 at byte 88"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds, err := reconcile.ParseDesiredJSON([]byte(c.file))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", ds, err, c.want)
			}
		})
	}
	// The same key in different objects is, of course, fine.
	ds, err := reconcile.ParseDesiredJSON([]byte(`{"guests": [` + guest + `, {"node": "pve1", "type": "qemu", "vmid": 101, "config": {"memory": 1024}}]}`))
	if err != nil || len(ds) != 2 {
		t.Fatalf("%+v %v", ds, err)
	}
}

// Found by the gauntlet: when the answer to an LXC configuration change
// (synchronous, no task) was lost, the engine looked at the configuration,
// and if it did not hold the change, took that as proof that the request
// never arrived and sent it again. But another writer may have changed
// the option after the change was made: then the change was made twice,
// and the other writer's later value was overwritten, a lost update. For
// a one-shot without a digest nothing stopped it; recovery likewise
// recorded such an operation as "not started" although it ran. Now the
// engine knows the digest the change was sent against (its own, or one it
// reads first) and sends again only if the configuration is still at that
// digest; otherwise the outcome is unknown, and it is recorded as failed.
func TestRegression_LostLXCAnswerResentOverAnotherWritersChange(t *testing.T) {
	setup := func(t *testing.T) *fixture {
		f := newFixture(t, nil)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512", "description": "orig"}})
		return f
	}
	shot := reconcile.OneShot{Key: "ct-desc", Ref: lxc(200), Kind: reconcile.ActionSetConfig, Set: map[string]string{"description": "one-shot"}}
	puts := func(f *fixture) int {
		n := 0
		for _, r := range f.srv.Requests() {
			if r.Method == "PUT" {
				n++
			}
		}
		return n
	}

	t.Run("made, then overwritten", func(t *testing.T) {
		f := setup(t)
		f.srv.Inject(proxmoxtest.Fault{Method: "PUT", Path: "/nodes/*/lxc/200/config", Times: 1, Drop: proxmoxtest.DropAfterHandling,
			After: func() {
				if err := f.srv.UpdateConfig(lxc(200), map[string]string{"description": "by hand"}, nil); err != nil {
					t.Error(err)
				}
			}})
		res, err := f.eng.Apply(ctxT(t), shot)
		if err != nil || res.State != journal.Failed || !strings.Contains(res.Error, "outcome unknown") {
			t.Fatalf("%+v %v", res, err)
		}
		if n := puts(f); n != 1 {
			t.Fatalf("the change was sent %d times", n)
		}
		if d := f.guest(lxc(200)).Config["description"]; !strings.HasPrefix(d, "by hand") {
			t.Fatalf("the other writer's later change was overwritten: %q", d)
		}
	})

	t.Run("never arrived", func(t *testing.T) {
		f := setup(t)
		f.srv.Inject(proxmoxtest.Fault{Method: "PUT", Path: "/nodes/*/lxc/200/config", Times: 1, Drop: proxmoxtest.DropBeforeHandling})
		res, err := f.eng.Apply(ctxT(t), shot)
		if err != nil || !res.Applied() {
			t.Fatalf("%+v %v", res, err)
		}
		if n := puts(f); n != 2 {
			t.Fatalf("%d PUTs: the lost change must be sent again, once", n)
		}
	})

	t.Run("recovery", func(t *testing.T) {
		f := setup(t)
		cfg, err := f.client.Config(ctxT(t), lxc(200))
		if err != nil {
			t.Fatal(err)
		}
		// A crash after the change was made; then another writer.
		if err := f.j.Append(ctxT(t), journal.Entry{
			OpID: "op-crashed", VMID: 200, Kind: string(reconcile.ActionSetConfig), IdempKey: "ct-desc", State: journal.Started, At: time.Now(),
			Params: map[string]string{"node": "pve1", "type": "lxc", "set:description": "one-shot", "observed_digest": cfg.Digest},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.client.SetConfig(ctxT(t), lxc(200), proxmox.ConfigChange{Set: map[string]string{"description": "one-shot"}}); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.UpdateConfig(lxc(200), map[string]string{"description": "by hand"}, nil); err != nil {
			t.Fatal(err)
		}
		rep, err := f.eng.Recover(ctxT(t))
		if err != nil || len(rep.Ops) != 1 {
			t.Fatalf("%+v %v", rep, err)
		}
		if op := rep.Ops[0]; op.To != journal.Failed || !strings.Contains(op.How, "outcome unknown") {
			t.Fatalf("%+v: recorded as never started, though it ran", op)
		}
	})
}

// Found by the fault storm: Recover waited for a recorded task with
// WaitTask, which rides out a node it cannot reach for as long as the node
// stays unreachable. With an operation in flight on a node that was down,
// Recover (at startup, or before a pass once an operation was left in
// flight) hung, holding up every pass and one-shot until the node came
// back. Recover now asks once how the task is doing, and leaves the
// operation unresolved if the node cannot be reached.
func TestRegression_RecoverHangsOnAnUnreachableNode(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()})
	f.add(proxmoxtest.GuestSpec{Node: "pve2", Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	ref := proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 100}
	intent(t, f.j, "op-1", ref, reconcile.ActionStart, "", time.Now())
	upid, err := f.client.Start(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.j.Append(ctxT(t), journal.Entry{OpID: "op-1", State: journal.TaskRunning, UPID: string(upid)}); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.SetNodeOnline("pve2", false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := f.eng.Recover(ctx)
	if !errors.Is(err, reconcile.ErrUnresolved) || ctx.Err() != nil {
		t.Fatalf("Recover with the node unreachable: %v (%+v)", err, rep)
	}
	// The node comes back, the task ends: the next Recover resolves it.
	if err := f.srv.SetNodeOnline("pve2", true); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.FinishTask(upid); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.eng.Recover(ctxT(t)); err != nil || rep.Ops[0].To != journal.Succeeded {
		t.Fatalf("%+v %v", rep, err)
	}
}
