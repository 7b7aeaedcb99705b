package reconcile_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/guestward/guestward/reconcile"
)

// TestPlanVolumes: a declared disk or mount point never makes Proxmox
// allocate a new volume in a slot that holds one, nor detach one. The
// values are shaped as Proxmox reports them: an allocated disk is
// "storage:vm-<vmid>-disk-<n>" with size= added (qemu-server's
// create_disks, pve-container's create_disks), and allocation syntax
// "storage:GiB" on a slot that holds a volume allocates a new one and moves
// the old one to unusedN.
func TestPlanVolumes(t *testing.T) {
	const (
		scsi0  = "local-lvm:vm-100-disk-0,cache=writeback,discard=on,size=32G"
		rootfs = "local-lvm:vm-200-disk-0,size=8G"
		mp0    = "local-lvm:vm-200-disk-1,mp=/data,backup=1,size=100G"
	)
	type want struct {
		verdict reconcile.Verdict
		reason  reconcile.SkipReason
		actions []reconcile.Action // Ref and Digest are filled in
	}
	digest := strings.Repeat("a", 40)
	for _, tc := range []struct {
		name   string
		d      reconcile.Desired
		status string
		have   map[string]string
		want   want
	}{
		{"larger size is a resize, never a new allocation",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:64,cache=writeback,discard=on"}},
			"running", map[string]string{"scsi0": scsi0},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionResize, Disk: "scsi0", Size: 64 << 30, FromSize: 32 << 30}}}},
		{"same size is in sync",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:32,discard=on,cache=writeback"}},
			"running", map[string]string{"scsi0": scsi0},
			want{reconcile.InSync, "", nil}},
		{"size in allocation syntax without a storage",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "40,cache=writeback,discard=on"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionResize, Disk: "scsi0", Size: 40 << 30, FromSize: 32 << 30}}}},
		{"size= on the volume the slot holds",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:vm-100-disk-0,cache=writeback,discard=on,size=48G"}},
			"running", map[string]string{"scsi0": scsi0},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionResize, Disk: "scsi0", Size: 48 << 30, FromSize: 32 << 30}}}},
		{"smaller size skips the guest",
			reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"scsi0": "local-lvm:16,cache=writeback,discard=on", "memory": "4096"}},
			"stopped", map[string]string{"scsi0": scsi0, "memory": "2048"},
			want{reconcile.Skip, reconcile.SkipShrink, nil}},
		{"options change on the existing volume",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:32,cache=none,discard=on,iothread=1"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionSetConfig,
				Set: map[string]string{"scsi0": "local-lvm:vm-100-disk-0,cache=none,discard=on,iothread=1,size=32G"}}}}},
		{"options and growth: config first, then the resize without a digest, then start",
			reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"scsi0": "local-lvm:64,ssd=1"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Act, "", []reconcile.Action{
				{Kind: reconcile.ActionSetConfig, Set: map[string]string{"scsi0": "local-lvm:vm-100-disk-0,size=32G,ssd=1"}},
				{Kind: reconcile.ActionResize, Disk: "scsi0", Size: 64 << 30, FromSize: 32 << 30},
				{Kind: reconcile.ActionStart}}}},
		{"another storage would allocate a new disk",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "ceph:32,cache=writeback,discard=on"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Skip, reconcile.SkipVolumeChange, nil}},
		{"another volume would detach this one",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:vm-100-disk-1"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Skip, reconcile.SkipVolumeChange, nil}},
		{"none in a slot holding data",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "none"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Skip, reconcile.SkipVolumeChange, nil}},
		{"deleting a disk would detach it",
			reconcile.Desired{Ref: qemu(100), Delete: []string{"scsi0"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Skip, reconcile.SkipVolumeChange, nil}},
		{"deleting a cdrom is a config change",
			reconcile.Desired{Ref: qemu(100), Delete: []string{"ide2"}},
			"stopped", map[string]string{"scsi0": scsi0, "ide2": "local:iso/debian-12.iso,media=cdrom,size=628M"},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionSetConfig, Delete: []string{"ide2"}}}}},
		{"swapping an ISO is a config change",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"ide2": "local:iso/debian-13.iso,media=cdrom"}},
			"running", map[string]string{"ide2": "local:iso/debian-12.iso,media=cdrom,size=628M"},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionSetConfig, Set: map[string]string{"ide2": "local:iso/debian-13.iso,media=cdrom"}}}}},
		{"a new disk in an empty slot is allocated",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi1": "local-lvm:10"}},
			"stopped", map[string]string{"scsi0": scsi0},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionSetConfig, Set: map[string]string{"scsi1": "local-lvm:10"}}}}},
		{"efidisk size is Proxmox's",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"efidisk0": "local-lvm:1,efitype=4m,pre-enrolled-keys=1"}},
			"stopped", map[string]string{"efidisk0": "local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M"},
			want{reconcile.InSync, "", nil}},
		{"LXC rootfs grows",
			reconcile.Desired{Ref: lxc(200), Config: map[string]string{"rootfs": "local-lvm:16"}},
			"running", map[string]string{"rootfs": rootfs},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionResize, Disk: "rootfs", Size: 16 << 30, FromSize: 8 << 30}}}},
		{"LXC rootfs shrink",
			reconcile.Desired{Ref: lxc(200), Config: map[string]string{"rootfs": "local-lvm:4"}},
			"running", map[string]string{"rootfs": rootfs},
			want{reconcile.Skip, reconcile.SkipShrink, nil}},
		{"LXC mount point grows and changes options, stopped first",
			reconcile.Desired{Ref: lxc(200), Power: reconcile.PowerStopped, Config: map[string]string{"mp0": "local-lvm:200,mp=/data,backup=0", "rootfs": "local-lvm:10"}},
			"running", map[string]string{"rootfs": rootfs, "mp0": mp0},
			want{reconcile.Act, "", []reconcile.Action{
				{Kind: reconcile.ActionStop},
				{Kind: reconcile.ActionSetConfig, Set: map[string]string{"mp0": "local-lvm:vm-200-disk-1,mp=/data,backup=0,size=100G"}},
				{Kind: reconcile.ActionResize, Disk: "mp0", Size: 200 << 30, FromSize: 100 << 30},
				{Kind: reconcile.ActionResize, Disk: "rootfs", Size: 10 << 30, FromSize: 8 << 30}}}},
		{"LXC mount point on another volume",
			reconcile.Desired{Ref: lxc(200), Config: map[string]string{"mp0": "local-lvm:vm-200-disk-7,mp=/data"}},
			"running", map[string]string{"mp0": mp0},
			want{reconcile.Skip, reconcile.SkipVolumeChange, nil}},
		{"LXC bind mount changes like any option",
			reconcile.Desired{Ref: lxc(200), Config: map[string]string{"mp1": "/srv/new,mp=/share"}},
			"running", map[string]string{"mp1": "/srv/old,mp=/share"},
			want{reconcile.Act, "", []reconcile.Action{{Kind: reconcile.ActionSetConfig, Set: map[string]string{"mp1": "/srv/new,mp=/share"}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := obs(tc.d.Ref, tc.status, tc.have)
			// Resizes are irreversible: allowed here, where the volume
			// rules are under test (the gate has its own tests).
			res := reconcile.Plan([]reconcile.Desired{tc.d}, []reconcile.Observed{o}, reconcile.PlanOptions{AllowIrreversible: true})
			g := res.Guests[0]
			if g.Verdict != tc.want.verdict || g.Reason != tc.want.reason {
				t.Fatalf("verdict %s (%s: %s), want %s (%s)", g.Verdict, g.Reason, g.Detail, tc.want.verdict, tc.want.reason)
			}
			var want []reconcile.Action
			for i, a := range tc.want.actions {
				a.Ref = tc.d.Ref
				if a.Kind == reconcile.ActionSetConfig || a.Kind == reconcile.ActionResize {
					if i == 0 || tc.want.actions[i-1].Kind == reconcile.ActionStop {
						a.Digest = digest
					}
				}
				want = append(want, a)
			}
			if diff := cmp.Diff(want, g.Actions, cmpopts.IgnoreFields(reconcile.Action{}, "Class", "Why", "Prior")); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			for _, a := range g.Actions {
				for f, v := range a.Set {
					// Never a new allocation in a slot that holds a volume.
					if have := tc.have[f]; have != "" && strings.Contains(have, "vm-") && !strings.Contains(v, "vm-") {
						t.Errorf("set %s=%q would allocate over %q", f, v, have)
					}
				}
			}
			if g.Verdict == reconcile.Skip && !strings.Contains(g.Detail, "scsi0") && !strings.Contains(g.Detail, "rootfs") && !strings.Contains(g.Detail, "mp0") {
				t.Errorf("skip detail %q does not name the disk", g.Detail)
			}
		})
	}
}

func TestPlanRendersResize(t *testing.T) {
	d := reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:64"}}
	o := obs(qemu(100), "running", map[string]string{"scsi0": "local-lvm:vm-100-disk-0,size=32G"})
	res := reconcile.Plan([]reconcile.Desired{d}, []reconcile.Observed{o}, reconcile.PlanOptions{AllowIrreversible: true})
	if s := res.String(); !strings.Contains(s, "resize "+qemu(100).String()+" scsi0 32G -> 64G") {
		t.Errorf("plan text does not show the resize:\n%s", s)
	}
}
