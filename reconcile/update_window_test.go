package reconcile_test

import (
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// A QEMU config change is answered with a task before it is applied. In
// that window another writer changes the same option. Before qemu-server
// 9.1.19 the task holds the config lock, so the other writer waits and its
// change lands after ours: our pass succeeds and the later write wins.
// From 9.1.19 the task takes the lock itself and checks the digest again:
// it fails with nothing applied, the engine reports a conflict, and the
// next pass converges on top of the other writer's config. Either way no
// stale change is applied over the other writer's.
func TestUpdateWindowNeverAppliesAStaleChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []proxmoxtest.Option
		fork bool // qemu-server 9.1.19 or later
	}{
		{"qemu-server 9.1.18", []proxmoxtest.Option{proxmoxtest.WithVersion("9.2.4")}, false},
		{"qemu-server 9.1.19", []proxmoxtest.Option{proxmoxtest.WithVersion("9.2.5")}, true},
	} {
		t.Run(tc.name+"/other writer", func(t *testing.T) {
			f := newFixture(t, tc.opts)
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048", "cores": "1"}})
			f.desire(reconcile.Desired{Ref: qemu(100), Config: map[string]string{"memory": "4096"}})
			// After runs once the task has started and before the answer
			// is sent: inside the window.
			f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/config", Times: 1, After: func() {
				if err := f.srv.UpdateConfig(qemu(100), map[string]string{"memory": "3072"}, nil); err != nil {
					t.Error(err)
				}
			}})
			g := outcome(f.pass(), qemu(100))
			st := f.guest(qemu(100))
			if !tc.fork {
				if g.Outcome != reconcile.GuestChanged || st.Config["memory"] != "3072" {
					t.Fatalf("outcome %s (%s), memory %s: want our change, then the waiting writer's", g.Outcome, g.Detail, st.Config["memory"])
				}
				return
			}
			if g.Outcome != reconcile.GuestConflict || st.Config["memory"] != "3072" {
				t.Fatalf("outcome %s (%s), memory %s: want a conflict and the other writer's value", g.Outcome, g.Detail, st.Config["memory"])
			}
			if g := outcome(f.pass(), qemu(100)); g.Outcome != reconcile.GuestChanged {
				t.Fatalf("next pass: %s (%s)", g.Outcome, g.Detail)
			}
			if st := f.guest(qemu(100)); st.Config["memory"] != "4096" {
				t.Fatalf("after the next pass: memory %s", st.Config["memory"])
			}
		})
		t.Run(tc.name+"/backup lock", func(t *testing.T) {
			f := newFixture(t, tc.opts)
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048"}})
			f.desire(reconcile.Desired{Ref: qemu(100), Config: map[string]string{"memory": "4096"}})
			f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/config", Times: 1, After: func() {
				if err := f.srv.SetLock(qemu(100), "backup"); err != nil {
					t.Error(err)
				}
			}})
			g := outcome(f.pass(), qemu(100))
			st := f.guest(qemu(100))
			if !tc.fork {
				// The backup waited for our task, which applied the change.
				if g.Outcome != reconcile.GuestChanged || st.Config["memory"] != "4096" || st.Lock != "backup" {
					t.Fatalf("outcome %s (%s), memory %s, lock %q", g.Outcome, g.Detail, st.Config["memory"], st.Lock)
				}
				return
			}
			if g.Outcome != reconcile.GuestConflict || st.Config["memory"] != "2048" {
				t.Fatalf("outcome %s (%s), memory %s: want a conflict and nothing applied", g.Outcome, g.Detail, st.Config["memory"])
			}
			if g := outcome(f.pass(), qemu(100)); g.Reason != reconcile.SkipLocked {
				t.Fatalf("while locked: %s %s", g.Outcome, g.Reason)
			}
			if err := f.srv.SetLock(qemu(100), ""); err != nil {
				t.Fatal(err)
			}
			if g := outcome(f.pass(), qemu(100)); g.Outcome != reconcile.GuestChanged || f.guest(qemu(100)).Config["memory"] != "4096" {
				t.Fatalf("after unlock: %s (%s)", g.Outcome, g.Detail)
			}
		})
	}
}
