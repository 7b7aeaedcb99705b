package reconcile_test

import (
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// haFleet: an HA-managed VM declared running and an HA-managed container
// declared stopped. Their power requests go through Proxmox's HA stack:
// an hastart or hastop task of the engine's user hands them over, and the
// HA manager acts in a task of its own (root@pam).
func haFleet(f *fixture) {
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, HA: true, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, HA: true, Running: true, Config: map[string]string{"memory": "512"}})
	f.desire(
		reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: lxc(200), Power: reconcile.PowerStopped},
	)
}

func TestHAManagedGuestsReachTheirState(t *testing.T) {
	f := newFixture(t, nil)
	haFleet(f)
	rep := f.pass()
	for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
		if g := outcome(rep, ref); g.Outcome != reconcile.GuestChanged {
			t.Fatalf("%s: %s %s %+v", ref, g.Outcome, g.Detail, g.Actions)
		}
	}
	// The report came once the guests were in their state, not when the
	// request was handed over.
	if !f.guest(qemu(100)).Running || f.guest(lxc(200)).Running {
		t.Fatalf("reported changed before the HA manager acted: vm 100 running %v, ct 200 running %v",
			f.guest(qemu(100)).Running, f.guest(lxc(200)).Running)
	}
	if n := f.srv.TaskCount(qemu(100), "hastart"); n != 1 {
		t.Errorf("%d hastart tasks, want 1", n)
	}
	if n := f.srv.TaskCount(lxc(200), "hastop"); n != 1 {
		t.Errorf("%d hastop tasks, want 1", n)
	}
	if rep2 := f.pass(); !rep2.Converged() || outcome(rep2, qemu(100)).Outcome != reconcile.GuestInSync {
		t.Errorf("second pass: %+v", rep2.Guests)
	}
}

// An HA request whose guest never reaches the state (the HA manager does not
// act) is not a success: it fails after TaskTimeout, and the guest is
// planned again next time.
func TestHARequestNotCarriedOutFails(t *testing.T) {
	f := newFixture(t, nil)
	haFleet(f)
	release := f.srv.HoldHA()
	defer release()
	e := f.newEngine(f.j, func(c *reconcile.Config) { c.TaskTimeout = 300 * time.Millisecond })
	rep, err := e.ReconcileOnce(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	g := outcome(rep, qemu(100))
	if g.Outcome != reconcile.GuestFailed || len(g.Actions) != 1 || g.Actions[0].Outcome != reconcile.OutcomeFailed {
		t.Fatalf("vm 100 while the HA manager is held: %s %s %+v", g.Outcome, g.Detail, g.Actions)
	}
	if f.guest(qemu(100)).Running {
		t.Fatal("vm 100 runs although the HA manager was held")
	}
}

// A lost answer to an HA request is resolved by finding its hastart/hastop
// task, never by sending the request again.
func TestHALostAnswerIsFound(t *testing.T) {
	f := newFixture(t, nil)
	haFleet(f)
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, Drop: proxmoxtest.DropAfterHandling})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/lxc/200/status/stop", Times: 1, Drop: proxmoxtest.DropAfterHandling})
	rep := f.pass()
	for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
		if g := outcome(rep, ref); g.Outcome != reconcile.GuestChanged {
			t.Fatalf("%s: %s %s %+v", ref, g.Outcome, g.Detail, g.Actions)
		}
	}
	if err := f.srv.WaitIdle(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TaskCount(qemu(100), "hastart"); n != 1 {
		t.Errorf("%d hastart tasks, want 1", n)
	}
	if n := f.srv.TaskCount(lxc(200), "hastop"); n != 1 {
		t.Errorf("%d hastop tasks, want 1", n)
	}
}

// Stopping the engine between any two journal steps of an HA request, then
// restarting on the same journal, resolves it, never hands the request over
// twice, and converges.
func TestHACrashBetweenJournalSteps(t *testing.T) {
	for _, point := range checkpoints {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t, nil)
			haFleet(f)
			rep := crashAndRestart(t, f, point)
			if !rep.Converged() {
				t.Errorf("after recovery: %+v", rep.Guests)
			}
			if !f.guest(qemu(100)).Running || f.guest(lxc(200)).Running {
				t.Error("not converged on the cluster")
			}
			if n := f.srv.TaskCount(qemu(100), "hastart"); n != 1 {
				t.Errorf("%d hastart tasks, want 1", n)
			}
			if n := f.srv.TaskCount(lxc(200), "hastop"); n != 1 {
				t.Errorf("%d hastop tasks, want 1", n)
			}
		})
	}
}
