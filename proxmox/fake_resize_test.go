package proxmox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

func diskVM() proxmoxtest.GuestSpec {
	return proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{
		"name": "web", "scsi0": "local-lvm:vm-100-disk-0,size=32G", "ide2": "local:iso/x.iso,media=cdrom",
	}}
}

func diskCT() proxmoxtest.GuestSpec {
	return proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{
		"hostname": "db", "memory": "512", "ostype": "debian",
		"rootfs": "local-lvm:vm-200-disk-0,size=8G", "mp0": "local-lvm:vm-200-disk-1,mp=/data,size=100G",
	}}
}

func TestFakeResizeQEMU(t *testing.T) {
	srv, c := newFake(t)
	ctx := context.Background()
	vm := addGuest(t, srv, diskVM())
	cfg, err := c.Config(ctx, vm)
	must(t, err)

	upid, err := c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 48 << 30, Digest: cfg.Digest})
	st := waiter(t, c)(upid, err)
	if st.Type != "resize" {
		t.Fatalf("task type %q", st.Type)
	}
	after, err := c.Config(ctx, vm)
	must(t, err)
	if after.Values["scsi0"] != "local-lvm:vm-100-disk-0,size=48G" || after.Values["ide2"] != cfg.Values["ide2"] || after.Digest == cfg.Digest {
		t.Fatalf("after resize: %v %s", after.Values, after.Digest)
	}

	// A size that is no whole number of KiB reaches Proxmox exactly.
	waiter(t, c)(c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 48<<30 + 1}))
	after, err = c.Config(ctx, vm)
	must(t, err)
	if after.Values["scsi0"] != "local-lvm:vm-100-disk-0,size=51539607553" {
		t.Fatalf("scsi0 = %q", after.Values["scsi0"])
	}

	// Refusals come from the task, and classify there.
	for _, tc := range []struct {
		r    proxmox.DiskResize
		want []error
	}{
		{proxmox.DiskResize{Disk: "scsi0", Size: 40 << 30}, []error{proxmox.ErrTaskFailed, proxmox.ErrShrink}},
		{proxmox.DiskResize{Disk: "scsi0", Size: 64 << 30, Digest: cfg.Digest}, []error{proxmox.ErrTaskFailed, proxmox.ErrDigestMismatch}},
		{proxmox.DiskResize{Disk: "ide2", Size: 64 << 30}, []error{proxmox.ErrTaskFailed}},
	} {
		upid, err := c.Resize(ctx, vm, tc.r)
		must(t, err)
		_, err = c.WaitTask(ctx, upid)
		isErr(t, err, tc.want...)
		if errors.Is(err, proxmox.ErrTransient) {
			t.Errorf("%+v: terminal refusal is transient: %v", tc.r, err)
		}
	}
	must(t, srv.SetLock(vm, "backup"))
	upid, err = c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 64 << 30})
	must(t, err)
	_, err = c.WaitTask(ctx, upid)
	isErr(t, err, proxmox.ErrTaskFailed, proxmox.ErrLocked)
	must(t, srv.SetLock(vm, ""))

	// The current size is a successful no-op.
	waiter(t, c)(c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 48<<30 + 1}))
}

func TestFakeResizeQEMUOnPVE7(t *testing.T) {
	srv, c := newFake(t, proxmoxtest.WithVersion(proxmoxtest.PVE74))
	ctx := context.Background()
	vm := addGuest(t, srv, diskVM())
	upid, err := c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 40 << 30})
	if err != nil || upid != "" {
		t.Fatalf("Resize = %q, %v; PVE 7 resizes synchronously", upid, err)
	}
	cfg, err := c.Config(ctx, vm)
	must(t, err)
	if cfg.Values["scsi0"] != "local-lvm:vm-100-disk-0,size=40G" {
		t.Fatalf("scsi0 = %q", cfg.Values["scsi0"])
	}
	_, err = c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 20 << 30})
	isErr(t, err, proxmox.ErrShrink)
	var ae *proxmox.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 500 {
		t.Fatalf("want the synchronous APIError, got %v", err)
	}
}

func TestFakeResizeLXC(t *testing.T) {
	srv, c := newFake(t)
	ctx := context.Background()
	ct := addGuest(t, srv, diskCT())
	waiter(t, c)(c.Resize(ctx, ct, proxmox.DiskResize{Disk: "mp0", Size: 200 << 30}))
	cfg, err := c.Config(ctx, ct)
	must(t, err)
	if cfg.Values["mp0"] != "local-lvm:vm-200-disk-1,mp=/data,size=200G" || cfg.Values["rootfs"] != "local-lvm:vm-200-disk-0,size=8G" {
		t.Fatalf("after resize: %v", cfg.Values)
	}
	_, err = c.Resize(ctx, ct, proxmox.DiskResize{Disk: "mp0", Size: 200 << 30})
	isErr(t, err, proxmox.ErrAlreadySized)
	_, err = c.Resize(ctx, ct, proxmox.DiskResize{Disk: "rootfs", Size: 4 << 30})
	isErr(t, err, proxmox.ErrShrink)
	_, err = c.Resize(ctx, ct, proxmox.DiskResize{Disk: "rootfs", Size: 16 << 30, Digest: "0000000000000000000000000000000000000000"})
	isErr(t, err, proxmox.ErrDigestMismatch)
}

// TestFakeLockTimeout: a config lock timeout matches ErrLocked and
// ErrTransient whether the handler or the task reports it.
func TestFakeLockTimeout(t *testing.T) {
	srv, c := newFake(t)
	ctx := context.Background()
	vm := addGuest(t, srv, diskVM())
	ct := addGuest(t, srv, diskCT())

	// In the task: QEMU's start worker takes the lock.
	srv.Inject(proxmoxtest.Fault{Guest: vm, LockTimeout: true, Times: 1})
	upid, err := c.Start(ctx, vm)
	must(t, err)
	_, err = c.WaitTask(ctx, upid)
	isErr(t, err, proxmox.ErrTaskFailed, proxmox.ErrLocked, proxmox.ErrTransient)
	var te *proxmox.TaskError
	if !errors.As(err, &te) || te.ExitStatus != "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout" {
		t.Fatalf("task error %v", err)
	}
	st, err := c.Status(ctx, vm)
	must(t, err)
	if st.Running() {
		t.Fatal("a start that did not get the lock started the VM")
	}
	// The same call succeeds once the holder is done.
	waiter(t, c)(c.Start(ctx, vm))

	// Synchronously: LXC's config update runs under the lock. The client
	// sends it again on its own, since nothing was done.
	h := srv.Inject(proxmoxtest.Fault{Guest: ct, Method: "PUT", LockTimeout: true, Times: 1})
	if _, err := c.SetConfig(ctx, ct, proxmox.ConfigChange{Set: map[string]string{"cores": "2"}}); err != nil {
		t.Fatalf("SetConfig after one lock timeout: %v", err)
	}
	if h.Hits() != 1 {
		t.Fatalf("hits %d", h.Hits())
	}
	// Every attempt times out: the error says so.
	srv.Inject(proxmoxtest.Fault{Guest: ct, Method: "PUT", LockTimeout: true})
	_, err = c.SetConfig(ctx, ct, proxmox.ConfigChange{Set: map[string]string{"cores": "3"}})
	isErr(t, err, proxmox.ErrLocked, proxmox.ErrTransient)
	if errors.Is(err, proxmox.ErrOutcomeUnknown) {
		t.Fatalf("a lock timeout did nothing: %v", err)
	}
}

// TestFakeTaskUser: the UPIDs of the tasks a client starts carry exactly
// its TaskUser, for a token and for a ticket.
func TestFakeTaskUser(t *testing.T) {
	srv, tc := newFake(t, proxmoxtest.WithUser("ops@pve", proxmox.TestPassword), proxmoxtest.WithManualTasks())
	pc := fakeClient(t, srv, proxmox.WithPassword("ops@pve", proxmox.TestPassword))
	ctx := context.Background()
	vm := addGuest(t, srv, diskVM())
	for _, c := range []*proxmox.Client{tc, pc} {
		upid, err := c.Start(ctx, vm)
		must(t, err)
		info, err := upid.Parse()
		must(t, err)
		if info.User != c.TaskUser() {
			t.Errorf("UPID user %q, TaskUser %q", info.User, c.TaskUser())
		}
		tasks, err := c.Tasks(ctx, vm.Node, proxmox.TaskFilter{VMID: vm.VMID})
		must(t, err)
		for _, tk := range tasks {
			if tk.UPID == upid {
				full := tk.User
				if tk.TokenID != "" {
					full += "!" + tk.TokenID
				}
				if full != c.TaskUser() {
					t.Errorf("listed task user %q token %q, TaskUser %q", tk.User, tk.TokenID, c.TaskUser())
				}
			}
		}
		must(t, srv.FinishTask(proxmox.UPID(upid)))
	}
	if tc.TaskUser() != proxmox.TestTokenID || pc.TaskUser() != "ops@pve" {
		t.Fatalf("TaskUser %q %q", tc.TaskUser(), pc.TaskUser())
	}
}

// TestFakeHA: an HA-managed guest's start only hands the request over;
// the HA manager's own task, as root@pam, starts the guest later.
func TestFakeHA(t *testing.T) {
	srv, c := newFake(t, proxmoxtest.WithManualTasks())
	ctx := context.Background()
	spec := diskVM()
	spec.HA = true
	vm := addGuest(t, srv, spec)
	release := srv.HoldHA()

	upid, err := c.Start(ctx, vm)
	must(t, err)
	info, _ := upid.Parse()
	if info.Type != "hastart" || info.User != c.TaskUser() {
		t.Fatalf("request task %+v", info)
	}
	must(t, srv.FinishTask(upid))
	if _, err := c.WaitTask(ctx, upid); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, vm)
	must(t, err)
	if st.Running() || !st.HAManaged || st.HAState != "stopped" {
		t.Fatalf("while the HA manager is held: %+v", st)
	}
	release()
	st, err = c.Status(ctx, vm)
	must(t, err)
	if st.Running() || st.HAState != "started" {
		t.Fatalf("after hand-over: %+v", st)
	}
	tasks, err := c.Tasks(ctx, vm.Node, proxmox.TaskFilter{VMID: vm.VMID, Type: "qmstart"})
	must(t, err)
	if len(tasks) != 1 || !tasks[0].Running || tasks[0].User != "root@pam" {
		t.Fatalf("HA manager tasks %+v", tasks)
	}
	must(t, srv.FinishTask(tasks[0].UPID))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.WaitTask(wctx, tasks[0].UPID); err != nil {
		t.Fatal(err)
	}
	st, err = c.Status(ctx, vm)
	must(t, err)
	if !st.Running() {
		t.Fatalf("after the HA manager's task: %+v", st)
	}
	guests, err := c.Guests(ctx)
	must(t, err)
	if len(guests) != 1 || guests[0].HAState != "started" {
		t.Fatalf("guests %+v", guests)
	}
}
