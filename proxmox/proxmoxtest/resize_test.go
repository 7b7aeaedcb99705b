package proxmoxtest

import (
	"maps"
	"strings"
	"testing"

	"github.com/guestward/guestward/proxmox"
)

// resizeVM is vm100 with drives of every kind resize_vm must tell apart.
func resizeVM() GuestSpec {
	spec := vm100("")
	spec.Config["scsi1"] = "local-lvm:vm-100-disk-1,size=10G"
	spec.Config["scsi2"] = "local-lvm:vm-100-disk-3"          // no size: unreadable
	spec.Config["ide2"] = "local:iso/debian.iso,media=cdrom"  // a cdrom with media
	spec.Config["sata0"] = "none,media=cdrom"                 // an empty drive
	spec.Config["virtio0"] = "/dev/disk/by-id/ata-X,backup=0" // a host device
	spec.Config["efidisk0"] = "local-lvm:vm-100-disk-2,efitype=4m,size=4M"
	return spec
}

func resize(t *testing.T, s *Server, r proxmox.Ref, kv ...string) reply {
	t.Helper()
	return do(t, s, "PUT", guestPath(r)+"/resize", form(kv...))
}

// sameExcept fails unless after equals before except for key.
func sameExcept(t *testing.T, before, after map[string]string, key string) {
	t.Helper()
	b, a := maps.Clone(before), maps.Clone(after)
	delete(b, key)
	delete(a, key)
	if !maps.Equal(a, b) {
		t.Fatalf("resize changed more than %s:\nbefore %v\nafter  %v", key, before, after)
	}
}

func TestQEMUResizeIsATask(t *testing.T) {
	s := Start(t, WithManualTasks()) // PVE 8.4: qemu-server 8.0.2 and later
	r := mustAdd(t, s, resizeVM())
	before := mustGuest(t, s, r)

	rp := resize(t, s, r, "disk", "scsi0", "size", "64G", "digest", before.Digest)
	tk := taskOf(t, s, rp)
	id, _ := s.APIToken()
	if tk.Type != "resize" || tk.ID != "100" || tk.User != id || !tk.Running {
		t.Fatalf("task %+v", tk)
	}
	if mustGuest(t, s, r).Config["scsi0"] != before.Config["scsi0"] {
		t.Fatal("the disk grew before its task ran")
	}
	if tk = finish(t, s, rp); tk.ExitStatus != "OK" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
	after := mustGuest(t, s, r)
	if got := after.Config["scsi0"]; got != "local-lvm:vm-100-disk-0,size=64G" {
		t.Fatalf("scsi0 = %q", got)
	}
	sameExcept(t, before.Config, after.Config, "scsi0")
	if after.Digest == before.Digest {
		t.Fatal("digest unchanged after a write")
	}
	list := do(t, s, "GET", "/nodes/pve/tasks?typefilter=resize&vmid=100", nil).dataList(t)
	if len(list) != 1 || list[0]["upid"] != string(tk.UPID) {
		t.Fatalf("task list %v", list)
	}

	// Relative and fractional sizes, printed as format_size prints them.
	for _, tc := range []struct{ size, want string }{
		{"+1G", "local-lvm:vm-100-disk-0,size=65G"},
		{"66.5G", "local-lvm:vm-100-disk-0,size=68096M"},
		{"71403831297", "local-lvm:vm-100-disk-0,size=71403831297"},
	} {
		if tk := finish(t, s, resize(t, s, r, "disk", "scsi0", "size", tc.size)); tk.ExitStatus != "OK" {
			t.Fatalf("%s: exit %q", tc.size, tk.ExitStatus)
		}
		if got := mustGuest(t, s, r).Config["scsi0"]; got != tc.want {
			t.Fatalf("%s: scsi0 = %q, want %q", tc.size, got, tc.want)
		}
	}

	// The current size is a successful no-op: nothing is written.
	cur := mustGuest(t, s, r)
	if tk := finish(t, s, resize(t, s, r, "disk", "scsi1", "size", "10G")); tk.ExitStatus != "OK" {
		t.Fatalf("same size: exit %q", tk.ExitStatus)
	}
	if mustGuest(t, s, r).Digest != cur.Digest {
		t.Fatal("a no-op resize wrote the config")
	}

	// Every refusal happens inside the task and changes nothing.
	stale := before.Digest
	for _, tc := range []struct{ disk, size, digest, exit string }{
		{"scsi1", "9G", "", "shrinking disks is not supported"},
		{"scsi1", "20G", stale, "checksum mismatch (file change by other user?)"},
		{"ide2", "10G", "", "you can't resize a cdrom"},
		{"sata0", "10G", "", "unable to parse volume ID 'none'"},
		{"virtio0", "10G", "", "unable to parse volume ID '/dev/disk/by-id/ata-X'"},
		{"scsi5", "10G", "", "disk 'scsi5' does not exist"},
		{"scsi2", "10G", "", "Could not determine current size of volume 'local-lvm:vm-100-disk-3'"},
	} {
		kv := []string{"disk", tc.disk, "size", tc.size}
		if tc.digest != "" {
			kv = append(kv, "digest", tc.digest)
		}
		rp := resize(t, s, r, kv...)
		if rp.Code != 200 {
			t.Fatalf("%s %s: %d %s; QEMU checks in the task", tc.disk, tc.size, rp.Code, rp.Status)
		}
		if tk := finish(t, s, rp); tk.ExitStatus != tc.exit {
			t.Errorf("%s %s: exit %q, want %q", tc.disk, tc.size, tk.ExitStatus, tc.exit)
		}
	}
	if got := mustGuest(t, s, r); got.Digest != cur.Digest {
		t.Fatalf("a refused resize changed the config: %v", got.Config)
	}

	// The lock is checked when the worker runs, not when the request
	// arrives.
	rp = resize(t, s, r, "disk", "scsi1", "size", "20G")
	if err := s.SetLock(r, "backup"); err != nil {
		t.Fatal(err)
	}
	if tk := finish(t, s, rp); tk.ExitStatus != "VM is locked (backup)" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
	_ = s.SetLock(r, "")

	// A missing VM still gets its task, which fails.
	rp = resize(t, s, qemu("pve", 150), "disk", "scsi0", "size", "1G")
	if tk := finish(t, s, rp); tk.ExitStatus != "Configuration file 'nodes/pve/qemu-server/150.conf' does not exist" {
		t.Fatalf("missing VM: exit %q", tk.ExitStatus)
	}

	// The efidisk can grow too.
	if tk := finish(t, s, resize(t, s, r, "disk", "efidisk0", "size", "8M")); tk.ExitStatus != "OK" {
		t.Fatalf("efidisk0: exit %q", tk.ExitStatus)
	}
	if got := mustGuest(t, s, r).Config["efidisk0"]; got != "local-lvm:vm-100-disk-2,efitype=4m,size=8M" {
		t.Fatalf("efidisk0 = %q", got)
	}
}

func TestResizeParameters(t *testing.T) {
	s := Start(t, WithManualTasks())
	vm := mustAdd(t, s, resizeVM())
	ct := mustAdd(t, s, ct200(""))
	for _, tc := range []struct {
		name string
		ref  proxmox.Ref
		kv   []string
		key  string
		msg  string
	}{
		{"not a drive", vm, []string{"disk", "net0", "size", "1G"}, "disk", "value 'net0' does not have a value in the enumeration 'ide0, ide1, ide2, ide3, scsi0, "},
		{"unused", vm, []string{"disk", "unused0", "size", "1G"}, "disk", "does not have a value in the enumeration"},
		{"lxc key on qemu", vm, []string{"disk", "rootfs", "size", "1G"}, "disk", "does not have a value in the enumeration"},
		{"qemu key on lxc", ct, []string{"disk", "scsi0", "size", "1G"}, "disk", "value 'scsi0' does not have a value in the enumeration 'rootfs, mp0, mp1, "},
		{"mp256", ct, []string{"disk", "mp256", "size", "1G"}, "disk", "does not have a value in the enumeration"},
		{"negative", vm, []string{"disk", "scsi0", "size", "-1G"}, "size", "value does not match the regex pattern"},
		{"unit GB", vm, []string{"disk", "scsi0", "size", "10GB"}, "size", "value does not match the regex pattern"},
		{"words", vm, []string{"disk", "scsi0", "size", "big"}, "size", "value does not match the regex pattern"},
		{"no size", vm, []string{"disk", "scsi0"}, "size", "property is missing and it is not optional"},
		{"no disk", ct, []string{"size", "1G"}, "disk", "property is missing and it is not optional"},
		{"long digest", vm, []string{"disk", "scsi0", "size", "1G", "digest", strings.Repeat("a", 41)}, "digest", "value may only be 40 characters long"},
		{"skiplock by a token", vm, []string{"disk", "scsi0", "size", "1G", "skiplock", "1"}, "skiplock", "Only root may use this option."},
		{"no skiplock for lxc", ct, []string{"disk", "rootfs", "size", "10G", "skiplock", "1"}, "skiplock", undefinedProp},
	} {
		rp := resize(t, s, tc.ref, tc.kv...)
		if rp.Code != 400 {
			t.Errorf("%s: %d %s, want 400", tc.name, rp.Code, rp.Status)
			continue
		}
		if got, _ := rp.errorsMap()[tc.key].(string); !strings.Contains(got, tc.msg) {
			t.Errorf("%s: errors[%s] = %q, want %q", tc.name, tc.key, got, tc.msg)
		}
	}
	if n := s.TaskCount(proxmox.Ref{}, "resize"); n != 0 {
		t.Fatalf("%d resize tasks for refused requests", n)
	}
}

func TestQEMUResizePVE7IsSynchronous(t *testing.T) {
	s := Start(t, WithVersion(PVE74), WithManualTasks())
	r := mustAdd(t, s, resizeVM())
	before := mustGuest(t, s, r)
	rp := resize(t, s, r, "disk", "scsi0", "size", "40G", "digest", before.Digest)
	if rp.Code != 200 || string(rp.Raw) != `{"data":null}` {
		t.Fatalf("%d %s", rp.Code, rp.Raw)
	}
	after := mustGuest(t, s, r)
	if after.Config["scsi0"] != "local-lvm:vm-100-disk-0,size=40G" {
		t.Fatalf("scsi0 = %q", after.Config["scsi0"])
	}
	sameExcept(t, before.Config, after.Config, "scsi0")
	for _, tc := range []struct{ kv, reason string }{
		{"scsi0 20G", "shrinking disks is not supported"},
		{"ide2 20G", "you can't resize a cdrom"},
		{"scsi0 50G " + before.Digest, "checksum missmatch (file change by other user?)"},
	} {
		f := strings.Fields(tc.kv)
		kv := []string{"disk", f[0], "size", f[1]}
		if len(f) > 2 {
			kv = append(kv, "digest", f[2])
		}
		rp := resize(t, s, r, kv...)
		if rp.Code != 500 || rp.Status != tc.reason {
			t.Errorf("%s: %d %q, want 500 %q", tc.kv, rp.Code, rp.Status, tc.reason)
		}
	}
	if rp := resize(t, s, r, "disk", "scsi0", "size", "40G"); rp.Code != 200 {
		t.Fatalf("same size: %d %s", rp.Code, rp.Status)
	}
	if n := s.TaskCount(proxmox.Ref{}, ""); n != 0 {
		t.Fatalf("%d tasks; PVE 7 resizes a VM's disk without one", n)
	}
	if mustGuest(t, s, r).Digest != after.Digest {
		t.Fatal("refused or no-op resizes wrote the config")
	}
}

// lxcResizeCT is ct200 with a volume mount point and a bind mount.
func lxcResizeCT() GuestSpec {
	spec := ct200("")
	spec.Config["mp0"] = "local-lvm:vm-200-disk-1,mp=/data,size=100G"
	spec.Config["mp1"] = "/srv/shared,mp=/shared"
	return spec
}

func TestLXCResize(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, lxcResizeCT())
	before := mustGuest(t, s, r)

	rp := resize(t, s, r, "disk", "rootfs", "size", "16G", "digest", before.Digest)
	tk := taskOf(t, s, rp)
	if tk.Type != "resize" || tk.ID != "200" {
		t.Fatalf("task %+v", tk)
	}
	if tk = finish(t, s, rp); tk.ExitStatus != "OK" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
	after := mustGuest(t, s, r)
	if after.Config["rootfs"] != "local-lvm:vm-200-disk-0,size=16G" {
		t.Fatalf("rootfs = %q", after.Config["rootfs"])
	}
	sameExcept(t, before.Config, after.Config, "rootfs")

	if tk := finish(t, s, resize(t, s, r, "disk", "mp0", "size", "+50G")); tk.ExitStatus != "OK" {
		t.Fatalf("mp0: exit %q", tk.ExitStatus)
	}
	if got := mustGuest(t, s, r).Config["mp0"]; got != "local-lvm:vm-200-disk-1,mp=/data,size=150G" {
		t.Fatalf("mp0 = %q", got)
	}

	// The early checks answer synchronously and start no task.
	cur := mustGuest(t, s, r)
	tasks := s.TaskCount(r, "resize")
	for _, tc := range []struct {
		kv     []string
		reason string
	}{
		{[]string{"disk", "rootfs", "size", "16G"}, "disk is already at specified size"},
		{[]string{"disk", "rootfs", "size", "+0"}, "disk is already at specified size"},
		{[]string{"disk", "rootfs", "size", "8G"}, "unable to shrink disk size"},
		{[]string{"disk", "rootfs", "size", "20G", "digest", before.Digest}, "detected modified configuration - file changed by other user? Try again."},
		{[]string{"disk", "mp1", "size", "20G"}, "unable to parse volume ID '/srv/shared'"},
		{[]string{"disk", "mp7", "size", "20G"}, "format error"},
	} {
		rp := resize(t, s, r, tc.kv...)
		if rp.Code != 500 || rp.Status != tc.reason {
			t.Errorf("%v: %d %q, want 500 %q", tc.kv, rp.Code, rp.Status, tc.reason)
		}
	}
	if rp := resize(t, s, lxc("pve", 250), "disk", "rootfs", "size", "20G"); rp.Code != 500 || rp.Status != "Configuration file 'nodes/pve/lxc/250.conf' does not exist" {
		t.Errorf("missing CT: %d %q", rp.Code, rp.Status)
	}
	_ = s.SetLock(r, "backup")
	if rp := resize(t, s, r, "disk", "rootfs", "size", "20G"); rp.Code != 500 || rp.Status != "CT is locked (backup)" {
		t.Errorf("locked: %d %q", rp.Code, rp.Status)
	}
	_ = s.SetLock(r, "")
	if n := s.TaskCount(r, "resize"); n != tasks {
		t.Fatalf("%d new tasks for refused resizes", n-tasks)
	}

	// pve-container 5.0.1 and later check again in the worker, under the
	// lock: what changed since the request counts.
	rp = resize(t, s, r, "disk", "rootfs", "size", "20G")
	_ = s.SetLock(r, "snapshot")
	if tk := finish(t, s, rp); tk.ExitStatus != "CT is locked (snapshot)" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
	_ = s.SetLock(r, "")
	first := resize(t, s, r, "disk", "rootfs", "size", "24G")
	second := resize(t, s, r, "disk", "rootfs", "size", "24G")
	if tk := finish(t, s, first); tk.ExitStatus != "OK" {
		t.Fatalf("first: exit %q", tk.ExitStatus)
	}
	if tk := finish(t, s, second); tk.ExitStatus != "disk is already at specified size" {
		t.Fatalf("second: exit %q", tk.ExitStatus)
	}
	if got := mustGuest(t, s, r).Config["rootfs"]; got != "local-lvm:vm-200-disk-0,size=24G" {
		t.Fatalf("rootfs = %q", got)
	}
	_ = cur
}
