package reconcile_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// resizeFleet: a VM and a container whose disks are declared larger than
// they are, and a VM declared with a smaller disk.
func resizeFleet(f *fixture) {
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true,
		Config: map[string]string{"scsi0": "local-lvm:vm-100-disk-0,discard=on,size=32G", "memory": "2048"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Running: true,
		Config: map[string]string{"rootfs": "local-lvm:vm-200-disk-0,size=8G", "memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101,
		Config: map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32G", "memory": "2048"}})
	f.desire(
		reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:64,discard=on"}},
		reconcile.Desired{Ref: lxc(200), Config: map[string]string{"rootfs": "local-lvm:16"}},
		reconcile.Desired{Ref: qemu(101), Config: map[string]string{"scsi0": "local-lvm:16", "memory": "4096"}},
	)
}

func diskSize(t *testing.T, f *fixture, ref proxmox.Ref, disk string) int64 {
	t.Helper()
	set := normalize.QEMU()
	if ref.Type == proxmox.LXC {
		set = normalize.LXC()
	}
	g := f.guest(ref)
	v, ok := set.Volume(disk, g.Config[disk])
	if !ok {
		t.Fatalf("%s %s: %q is not a disk", ref, disk, g.Config[disk])
	}
	if !v.HoldsData() {
		t.Fatalf("%s %s: %q holds no volume", ref, disk, g.Config[disk])
	}
	return v.Size
}

// End to end on the fake, for both task shapes (PVE 8: a task for QEMU and
// LXC; PVE 7: QEMU synchronous): a larger declared size grows the disk in
// place, the volume stays, no unusedN appears; a smaller one is skipped and
// nothing of that guest changes.
func TestResizeEndToEnd(t *testing.T) {
	for _, version := range []string{"8.4.1", "7.4"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithVersion(version)}, allowIrreversible)
			resizeFleet(f)
			rep := f.pass()
			if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestChanged || len(g.Actions) != 1 || g.Actions[0].Action.Kind != reconcile.ActionResize {
				t.Fatalf("vm 100: %s %s %+v", g.Outcome, g.Detail, g.Actions)
			}
			if g := outcome(rep, lxc(200)); g.Outcome != reconcile.GuestChanged {
				t.Fatalf("ct 200: %s %s %+v", g.Outcome, g.Detail, g.Actions)
			}
			if g := outcome(rep, qemu(101)); g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipShrink {
				t.Fatalf("vm 101: %s (%s) %s", g.Outcome, g.Reason, g.Detail)
			}
			if n := diskSize(t, f, qemu(100), "scsi0"); n != 64<<30 {
				t.Errorf("vm 100 scsi0 is %d bytes", n)
			}
			if n := diskSize(t, f, lxc(200), "rootfs"); n != 16<<30 {
				t.Errorf("ct 200 rootfs is %d bytes", n)
			}
			for _, ref := range []proxmox.Ref{qemu(100), lxc(200), qemu(101)} {
				g := f.guest(ref)
				for k := range g.Config {
					if len(k) > 6 && k[:6] == "unused" {
						t.Errorf("%s: %s=%s: a volume was detached", ref, k, g.Config[k])
					}
				}
			}
			if g := f.guest(qemu(100)); g.Config["scsi0"] == "" || !strings.Contains(g.Config["scsi0"], "vm-100-disk-0") || !strings.Contains(g.Config["scsi0"], "discard=on") {
				t.Errorf("vm 100 scsi0 = %q", g.Config["scsi0"])
			}
			if g := f.guest(qemu(101)); g.Config["memory"] != "2048" {
				t.Errorf("vm 101 was changed although skipped: memory %s", g.Config["memory"])
			}
			if rep2 := f.pass(); outcome(rep2, qemu(100)).Outcome != reconcile.GuestInSync || outcome(rep2, lxc(200)).Outcome != reconcile.GuestInSync {
				t.Errorf("second pass: %+v", rep2.Guests)
			}
		})
	}
}

// A resize whose answer is lost is found (its task, or its effect on a
// node that resizes synchronously) and not sent again.
func TestResizeLostAnswer(t *testing.T) {
	for _, tc := range []struct {
		version string
		ref     proxmox.Ref
		path    string
	}{
		{"8.4.1", qemu(100), "/nodes/*/qemu/100/resize"},
		{"7.4", qemu(100), "/nodes/*/qemu/100/resize"},
		{"8.4.1", lxc(200), "/nodes/*/lxc/200/resize"},
	} {
		t.Run(tc.version+"/"+string(tc.ref.Type), func(t *testing.T) {
			f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithVersion(tc.version)}, allowIrreversible)
			resizeFleet(f)
			f.srv.Inject(proxmoxtest.Fault{Method: "PUT", Path: tc.path, Times: 1, Drop: proxmoxtest.DropAfterHandling})
			rep := f.pass()
			if g := outcome(rep, tc.ref); g.Outcome != reconcile.GuestChanged {
				t.Fatalf("%s: %s %s %+v", tc.ref, g.Outcome, g.Detail, g.Actions)
			}
			if err := f.srv.WaitIdle(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if n := f.srv.TaskCount(tc.ref, "resize"); tc.version != "7.4" && n != 1 {
				t.Errorf("%d resize tasks, want 1", n)
			}
			resizes := 0
			for _, r := range f.srv.Requests() {
				if r.Method == "PUT" && strings.Contains(r.Path, "/resize") && strings.Contains(r.Path, "/"+strconv.Itoa(tc.ref.VMID)+"/") {
					resizes++
				}
			}
			if resizes != 1 {
				t.Errorf("%d resize requests, want 1", resizes)
			}
		})
	}
}

// Stopping the engine between any two journal steps of a resize, then
// restarting on the same journal, resolves it, never resizes twice, and
// converges.
func TestResizeCrashBetweenJournalSteps(t *testing.T) {
	for _, version := range []string{"8.4.1", "7.4"} {
		for _, point := range checkpoints {
			t.Run(version+"/"+point, func(t *testing.T) {
				f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithVersion(version)}, allowIrreversible)
				resizeFleet(f)
				rep := crashAndRestart(t, f, point)
				for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
					if g := outcome(rep, ref); g.Outcome != reconcile.GuestChanged && g.Outcome != reconcile.GuestInSync {
						t.Errorf("after recovery %s: %s %s", ref, g.Outcome, g.Detail)
					}
				}
				if n := diskSize(t, f, qemu(100), "scsi0"); n != 64<<30 {
					t.Errorf("vm 100 scsi0 is %d bytes", n)
				}
				if n := diskSize(t, f, lxc(200), "rootfs"); n != 16<<30 {
					t.Errorf("ct 200 rootfs is %d bytes", n)
				}
				// A resize that ran is never sent again: one effective
				// request per disk (a resend after "never started" is
				// the only second request, and only before any ran).
				if n := f.srv.TaskCount(lxc(200), "resize"); n != 1 {
					t.Errorf("ct 200: %d resize tasks, want 1", n)
				}
				if version != "7.4" {
					if n := f.srv.TaskCount(qemu(100), "resize"); n != 1 {
						t.Errorf("vm 100: %d resize tasks, want 1", n)
					}
				}
			})
		}
	}
}

// alreadySized answers every resize as pve-container does for a disk that
// already has the size asked for.
type alreadySized struct{ reconcile.Proxmox }

func (alreadySized) Resize(context.Context, proxmox.Ref, proxmox.DiskResize) (proxmox.UPID, error) {
	err := &proxmox.APIError{StatusCode: 500, Method: "PUT", Path: "/nodes/pve1/lxc/200/resize",
		Message: "disk is already at specified size"}
	if !errors.Is(err, proxmox.ErrAlreadySized) {
		panic("the client does not classify pve-container's answer")
	}
	return "", err
}

// A resize to the size the disk already has reached what it asked for.
func TestResizeAlreadyAtSizeSucceeds(t *testing.T) {
	f := newFixture(t, nil, allowIrreversible)
	resizeFleet(f)
	e := f.newEngine(f.j, func(c *reconcile.Config) { c.Proxmox = alreadySized{c.Proxmox} })
	rep, err := e.ReconcileOnce(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	g := outcome(rep, lxc(200))
	if g.Outcome != reconcile.GuestChanged || len(g.Actions) != 1 || g.Actions[0].Outcome != reconcile.OutcomeSucceeded {
		t.Fatalf("ct 200: %s %s %+v", g.Outcome, g.Detail, g.Actions)
	}
}
