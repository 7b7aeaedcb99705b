package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// lockTimeout is Proxmox's "can't lock file '...' - got timeout": the
// config lock could not be taken within its 10 s, so nothing was done. It
// is classified as both locked and transient; as a task's exit status it
// is also a task failure.
func lockTimeout(vmid int, task proxmox.UPID) error { return &lockTimeoutError{vmid: vmid, task: task} }

type lockTimeoutError struct {
	vmid int
	task proxmox.UPID // "" for a synchronous answer
}

func (e *lockTimeoutError) Error() string {
	msg := fmt.Sprintf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", e.vmid)
	if e.task != "" {
		return fmt.Sprintf("proxmox: task %s failed: %s", e.task, msg)
	}
	return fmt.Sprintf("proxmox: POST /nodes/pve1/qemu/%d/status/start: 500 %s", e.vmid, msg)
}

func (e *lockTimeoutError) Is(target error) bool {
	return target == proxmox.ErrLocked || target == proxmox.ErrTransient || e.task != "" && target == proxmox.ErrTaskFailed
}

// lockingProxmox is the fake cluster behind a client, except that its
// next starts meet a lock timeout: taskLocks of them start a task that
// fails with it (without reaching the fake), then syncLocks of them are
// answered with it at once. It embeds the interface, so it keeps up with
// methods added to it.
type lockingProxmox struct {
	reconcile.Proxmox
	mu                   sync.Mutex
	taskLocks, syncLocks int
	n                    int
	failing              map[proxmox.UPID]bool
	starts               int // starts that reached the fake cluster
}

func (p *lockingProxmox) Start(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error) {
	p.mu.Lock()
	switch {
	case p.taskLocks > 0:
		p.taskLocks--
		p.n++
		upid := proxmox.UPID(fmt.Sprintf("UPID:%s:%08X:00000000:%08X:qmstart:%d:root@pam!guestward:", ref.Node, 0x1000+p.n, 0x6B000000+p.n, ref.VMID))
		if p.failing == nil {
			p.failing = make(map[proxmox.UPID]bool)
		}
		p.failing[upid] = true
		p.mu.Unlock()
		return upid, nil
	case p.syncLocks > 0:
		p.syncLocks--
		p.mu.Unlock()
		return "", lockTimeout(ref.VMID, "")
	}
	p.starts++
	p.mu.Unlock()
	return p.Proxmox.Start(ctx, ref)
}

func (p *lockingProxmox) WaitTask(ctx context.Context, upid proxmox.UPID) (proxmox.TaskStatus, error) {
	p.mu.Lock()
	failing := p.failing[upid]
	p.mu.Unlock()
	if failing {
		info, _ := upid.Parse()
		var vmid int
		fmt.Sscan(info.ID, &vmid)
		return proxmox.TaskStatus{UPID: upid, Status: "stopped"}, lockTimeout(vmid, upid)
	}
	return p.Proxmox.WaitTask(ctx, upid)
}

func (p *lockingProxmox) set(taskLocks, syncLocks int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.taskLocks, p.syncLocks = taskLocks, syncLocks
}

func (p *lockingProxmox) startsSent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// lockFixture is a fixture whose engine talks to the fake cluster through
// a lockingProxmox.
func lockFixture(t *testing.T, opts ...fixtureOpt) (*fixture, *lockingProxmox) {
	f := newFixture(t, nil)
	px := &lockingProxmox{Proxmox: f.client}
	f.eng = f.newEngine(f.j, append([]fixtureOpt{func(c *reconcile.Config) { c.Proxmox = px }}, opts...)...)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	return f, px
}

func opsOf(t *testing.T, j journal.Journal) []journal.Entry {
	t.Helper()
	ops, err := j.(*journal.MemoryJournal).Ops(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

// A task that could not take the guest's lock did nothing: it is tried
// again, as the same operation, which records each new task.
func TestApplyRetriesATaskThatCouldNotTakeTheLock(t *testing.T) {
	var (
		mu    sync.Mutex
		tasks []reconcile.Event
	)
	f, px := lockFixture(t, func(c *reconcile.Config) {
		c.OnEvent = func(ev reconcile.Event) {
			if ev.Phase == "task" {
				mu.Lock()
				tasks = append(tasks, ev)
				mu.Unlock()
			}
		}
	})
	px.set(2, 0)
	shot := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}
	res, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || !res.Applied() || res.Attempt != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	ops := opsOf(t, f.j)
	if len(ops) != 1 || ops[0].OpID != res.OpID || ops[0].UPID != string(res.UPID) {
		t.Fatalf("journal %+v, result %+v", ops, res)
	}
	if len(tasks) != 3 || tasks[0].UPID == tasks[1].UPID || tasks[1].UPID == tasks[2].UPID || tasks[2].UPID != res.UPID {
		t.Fatalf("tasks %+v", tasks)
	}
	for _, ev := range tasks {
		if ev.OpID != res.OpID {
			t.Fatalf("task of another operation: %+v", ev)
		}
	}
	if applied, err := f.j.AlreadyApplied(ctxT(t), "k"); !applied || err != nil {
		t.Fatalf("key applied: %v %v", applied, err)
	}
	if px.startsSent() != 1 || !f.guest(qemu(100)).Running {
		t.Fatalf("%d starts reached Proxmox", px.startsSent())
	}
}

// The same with the fake cluster's own task failure, and in a pass.
func TestLockTimeoutTaskIsRetriedInAPassAndInAOneShot(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	const timeout = "can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout"
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, TaskError: fmt.Sprintf(timeout, 100)})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/101/status/start", Times: 2, TaskError: fmt.Sprintf(timeout, 101)})

	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	g := outcome(f.pass(), qemu(100))
	if g.Outcome != reconcile.GuestChanged || len(g.Actions) != 1 || g.Actions[0].Attempts != 2 {
		t.Fatalf("pass: %+v", g)
	}
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(101), Kind: reconcile.ActionStart})
	if err != nil || !res.Applied() {
		t.Fatalf("one-shot: %+v %v", res, err)
	}
	if n := f.srv.TaskCount(qemu(101), "qmstart"); n != 3 {
		t.Fatalf("%d start tasks, want 3", n)
	}
	if e := latest(t, f.j, res.OpID); e.UPID != string(res.UPID) || e.State != journal.Succeeded {
		t.Fatalf("journal %+v", e)
	}
}

// A lock timeout that outlasts the retries fails the attempt, but proves
// that nothing was done: the key is not consumed, and the same call runs
// again and can succeed.
func TestApplyLockTimeoutOutlastingTheRetriesKeepsTheKey(t *testing.T) {
	for _, c := range []struct {
		name            string
		taskLocks, sync int
	}{
		{"in the task", 3, 0},
		{"in the answer", 0, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, px := lockFixture(t)
			px.set(c.taskLocks, c.sync)
			shot := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}
			res, err := f.eng.Apply(ctxT(t), shot)
			if err != nil || res.State != journal.Failed || !res.KeyUnused || res.Replayed ||
				!errors.Is(res.Err, proxmox.ErrLocked) || !errors.Is(res.Err, proxmox.ErrTransient) {
				t.Fatalf("first: %+v %v", res, err)
			}
			if px.startsSent() != 0 {
				t.Fatal("a start reached Proxmox")
			}
			if applied, _ := f.j.AlreadyApplied(ctxT(t), "k"); applied {
				t.Fatal("the key counts as applied")
			}
			looked, ok, err := f.eng.Lookup(ctxT(t), "k")
			if err != nil || !ok || !looked.KeyUnused || looked.OpID != res.OpID {
				t.Fatalf("Lookup: %+v %v %v", looked, ok, err)
			}

			again, err := f.eng.Apply(ctxT(t), shot)
			if err != nil || !again.Applied() || again.Replayed || again.Attempt != 2 || again.Key != "k" || again.OpID == res.OpID {
				t.Fatalf("again: %+v %v", again, err)
			}
			if px.startsSent() != 1 || !f.guest(qemu(100)).Running {
				t.Fatalf("%d starts reached Proxmox", px.startsSent())
			}
			third, err := f.newEngine(f.j).Apply(ctxT(t), shot)
			if err != nil || !third.Replayed || third.OpID != again.OpID || third.Attempt != 2 || !third.Applied() || third.Key != "k" {
				t.Fatalf("third: %+v %v", third, err)
			}
			if px.startsSent() != 1 {
				t.Fatal("the replay sent a start")
			}
			if looked, ok, err := f.eng.Lookup(ctxT(t), "k"); err != nil || !ok || looked.OpID != again.OpID || looked.KeyUnused {
				t.Fatalf("Lookup: %+v %v %v", looked, ok, err)
			}
		})
	}
}

// A synchronous LXC change that could not take the lock, answered by the
// fake cluster: the same.
func TestApplyLXCChangeLockTimeoutKeepsTheKey(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	// Every try times out (the client's own retries included), until the
	// lock is released.
	held := f.srv.Inject(proxmoxtest.Fault{Method: "PUT", Path: "/nodes/*/lxc/200/config", Status: 500,
		Message: "can't lock file '/run/lock/lxc/pve-config-200.lock' - got timeout"})
	shot := reconcile.OneShot{Key: "mem", Ref: lxc(200), Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}}
	res, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || res.State != journal.Failed || !res.KeyUnused || !errors.Is(res.Err, proxmox.ErrTransient) {
		t.Fatalf("first: %+v %v", res, err)
	}
	if f.guest(lxc(200)).Config["memory"] != "512" {
		t.Fatal("changed")
	}
	held.Remove()
	again, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || !again.Applied() || again.Attempt != 2 {
		t.Fatalf("again: %+v %v", again, err)
	}
	if f.guest(lxc(200)).Config["memory"] != "1024" {
		t.Fatal("not changed")
	}
}

// Failures that prove nothing was done leave the key unused; those that
// may have come after part of the work consume it.
func TestApplyWhichFailuresKeepTheKey(t *testing.T) {
	for _, c := range []struct {
		name   string
		ref    proxmox.Ref
		shot   reconcile.OneShot
		fault  proxmoxtest.Fault
		unused bool
	}{
		{"locked guest", qemu(100), reconcile.OneShot{Kind: reconcile.ActionStart},
			proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", TaskError: "VM is locked (backup)"}, true},
		{"stale digest", qemu(100), reconcile.OneShot{Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}, Digest: "0000000000000000000000000000000000000000"},
			proxmoxtest.Fault{}, true},
		{"missing privilege", qemu(100), reconcile.OneShot{Kind: reconcile.ActionStart},
			proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Status: 403, Message: "Permission check failed (/vms/100, VM.PowerMgmt)"}, true},
		{"a parameter refused", qemu(100), reconcile.OneShot{Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}},
			proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/config", Status: 400, Message: "Parameter verification failed."}, true},
		{"not running", qemu(100), reconcile.OneShot{Kind: reconcile.ActionReboot},
			proxmoxtest.Fault{}, true},
		{"an LXC change refused after hot-plugging part of it", lxc(200), reconcile.OneShot{Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}},
			proxmoxtest.Fault{Method: "PUT", Path: "/nodes/*/lxc/200/config", Status: 400, Message: "Parameter verification failed."}, false},
		{"a task that failed in the middle", qemu(100), reconcile.OneShot{Kind: reconcile.ActionStart},
			proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", TaskError: "start failed: QEMU exited with code 1"}, false},
		{"an unknown server error", qemu(100), reconcile.OneShot{Kind: reconcile.ActionStart},
			proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Status: 500, Message: "something odd"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
			f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Running: true, Config: map[string]string{"memory": "512"}})
			if c.fault.Path != "" {
				c.fault.Times = 1
				f.srv.Inject(c.fault)
			}
			s := c.shot
			s.Key, s.Ref = "k", c.ref
			res, err := f.eng.Apply(ctxT(t), s)
			if err != nil || res.State != journal.Failed || res.KeyUnused != c.unused {
				t.Fatalf("%+v %v; want failed with KeyUnused %v", res, err, c.unused)
			}
			again, err := f.eng.Apply(ctxT(t), s)
			if err != nil || again.Replayed == c.unused || (again.OpID == res.OpID) == c.unused {
				t.Fatalf("again: %+v %v", again, err)
			}
		})
	}
}

// A key used by an attempt that did nothing still names its request.
func TestApplyKeyConflictAcrossAnAttemptThatDidNothing(t *testing.T) {
	f, px := lockFixture(t)
	px.set(0, 3)
	shot := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}
	if res, err := f.eng.Apply(ctxT(t), shot); err != nil || !res.KeyUnused {
		t.Fatalf("%+v %v", res, err)
	}
	writes := f.writes()
	for _, s := range []reconcile.OneShot{
		{Key: "k", Ref: qemu(100), Kind: reconcile.ActionReboot},
		{Key: "k", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}},
		{Key: "k", Ref: proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 100}, Kind: reconcile.ActionStart},
	} {
		if res, err := f.eng.Apply(ctxT(t), s); !errors.Is(err, reconcile.ErrKeyConflict) {
			t.Errorf("%s %s: %+v %v", s.Kind, s.Ref, res, err)
		}
	}
	if f.writes() != writes || px.startsSent() != 0 {
		t.Fatal("a refused request was sent")
	}
}

// A crash in the middle of a later attempt keeps at most once: after a
// restart, the attempt is resolved, and the key is replayed or, if the
// attempt proved to have done nothing, run again; never both.
func TestApplyCrashDuringALaterAttempt(t *testing.T) {
	for _, point := range []string{checkpoint.AfterIntent, checkpoint.AfterCall, checkpoint.AfterTaskRecord} {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t, nil)
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Lock: "backup", Config: map[string]string{"memory": "512"}})
			shot := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}
			first, err := f.eng.Apply(ctxT(t), shot)
			if err != nil || !first.KeyUnused || !errors.Is(first.Err, proxmox.ErrLocked) {
				t.Fatalf("first: %+v %v", first, err)
			}
			if err := f.srv.SetLock(qemu(100), ""); err != nil {
				t.Fatal(err)
			}
			crashing := f.newEngine(f.j)
			second, err := crashing.Apply(crashAt(t, point), shot)
			if !errors.Is(err, errCrash) || second.Attempt != 2 || second.State.Terminal() {
				t.Fatalf("second: %+v %v", second, err)
			}
			if err := f.srv.WaitIdle(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			// The process restarts on the same journal.
			restarted := f.newEngine(f.j.(*journal.MemoryJournal).Reopen())
			if _, err := restarted.Recover(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			posts := f.writes()
			third, err := restarted.Apply(ctxT(t), shot)
			if err != nil {
				t.Fatalf("third: %+v %v", third, err)
			}
			switch {
			case third.Replayed:
				if third.OpID != second.OpID || f.writes() != posts {
					t.Fatalf("replay of another op, or sent: %+v", third)
				}
			case third.Applied():
				if third.Attempt != 3 || second.UPID != "" {
					t.Fatalf("ran again after an attempt that may have acted: %+v (second %+v)", third, second)
				}
			default:
				t.Fatalf("third: %+v", third)
			}
			succeeded := 0
			for _, task := range f.srv.Tasks() {
				if task.Type == "qmstart" && task.ExitStatus == "OK" {
					succeeded++
				}
			}
			if succeeded > 1 {
				t.Fatalf("%d start tasks succeeded", succeeded)
			}
			if point != checkpoint.AfterIntent && (!third.Applied() || !third.Replayed) {
				t.Fatalf("the start that ran is not what the key replays: %+v", third)
			}
		})
	}
}

// Two engines sharing a journal race for the same later attempt: the
// journal's key claim decides, and the loser returns the winner's outcome.
func TestApplyTwoEnginesRaceForALaterAttempt(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Lock: "backup", Config: map[string]string{"memory": "512"}})
	shot := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}
	if first, err := f.eng.Apply(ctxT(t), shot); err != nil || !first.KeyUnused {
		t.Fatalf("first: %+v %v", first, err)
	}
	if err := f.srv.SetLock(qemu(100), ""); err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	slow := f.newEngine(f.j)
	fp := new(failpoint.Set)
	fp.Enable(checkpoint.BeforeIntent, func() error {
		close(arrived)
		<-release
		return nil
	})
	type answer struct {
		res reconcile.Result
		err error
	}
	slowDone := make(chan answer, 1)
	go func() {
		res, err := slow.Apply(checkpoint.With(ctxT(t), fp), shot)
		slowDone <- answer{res, err}
	}()
	<-arrived // slow has looked at the key and is about to claim attempt 2
	fast := f.newEngine(f.j)
	won, err := fast.Apply(ctxT(t), shot)
	if err != nil || !won.Applied() || won.Attempt != 2 || won.Replayed {
		t.Fatalf("fast: %+v %v", won, err)
	}
	close(release)
	lost := <-slowDone
	if lost.err != nil || !lost.res.Replayed || lost.res.OpID != won.OpID || !lost.res.Applied() {
		t.Fatalf("slow: %+v %v", lost.res, lost.err)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 2 {
		t.Fatalf("%d start tasks, want 2 (the locked one and the winner's)", n)
	}
	if ops := opsOf(t, f.j); len(ops) != 2 {
		t.Fatalf("%d operations journaled: %+v", len(ops), ops)
	}
}
