package proxmox_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// PendingConfig's one request yields what Config and Pending yield with
// two, pending changes, a pending deletion of a false value and a lock
// included.
func TestFakePendingConfigAgreesWithConfigAndPending(t *testing.T) {
	srv, c := newFake(t)
	done := waiter(t, c)
	ctx := context.Background()
	vm := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{
		"name": "web", "cores": "2", "memory": "2048", "acpi": "0", "cpu": "kvm64", "tags": "a",
	}})
	ct := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{
		"hostname": "ct", "memory": "512", "ostype": "debian", "rootfs": "local-lvm:vm-200-disk-0,size=8G",
	}})
	cfg, err := c.Config(ctx, vm)
	must(t, err)
	// Running: cores and cpu wait for a restart, and so does the deletion
	// of acpi, whose value "0" GET config keeps showing.
	done(c.SetConfig(ctx, vm, proxmox.ConfigChange{Set: map[string]string{"cores": "4", "cpu": "host"}, Delete: []string{"acpi"}, Digest: cfg.Digest}))
	must(t, srv.SetLock(ct, "backup"))

	for _, ref := range []proxmox.Ref{vm, ct} {
		pc, err := c.PendingConfig(ctx, ref)
		must(t, err)
		cfg, err := c.Config(ctx, ref)
		must(t, err)
		items, err := c.Pending(ctx, ref)
		must(t, err)
		if diff := cmp.Diff(cfg, pc.Config); diff != "" {
			t.Errorf("%s: PendingConfig().Config differs from Config() (-Config +PendingConfig):\n%s", ref, diff)
		}
		if diff := cmp.Diff(items, pc.Items); diff != "" {
			t.Errorf("%s: PendingConfig().Items differ from Pending() (-Pending +PendingConfig):\n%s", ref, diff)
		}
	}
	pc, err := c.PendingConfig(ctx, vm)
	must(t, err)
	if pc.Config.Values["acpi"] != "0" || pc.Config.Values["cores"] != "4" || len(pc.Changes()) != 3 {
		t.Errorf("vm: acpi %q cores %q, %d changes pending; want 0, 4, 3", pc.Config.Values["acpi"], pc.Config.Values["cores"], len(pc.Changes()))
	}
	pc, err = c.PendingConfig(ctx, ct)
	must(t, err)
	if pc.Lock() != "backup" {
		t.Errorf("ct: Lock() = %q, want backup", pc.Lock())
	}
}
