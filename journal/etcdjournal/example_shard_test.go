package etcdjournal_test

import (
	"context"
	"fmt"

	"github.com/guestward/guestward/journal/etcdjournal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// A shard's engine sees the desired state of its own nodes' guests only;
// the shard's journal and election live under ShardPrefix.
func ExampleNodeProvider() {
	fleet, err := reconcile.NewStaticProvider([]reconcile.Desired{
		{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Power: reconcile.PowerRunning},
		{Ref: proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 200}, Power: reconcile.PowerRunning},
		{Ref: proxmox.Ref{Node: "pve3", Type: proxmox.LXC, VMID: 300}, Power: reconcile.PowerStopped},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	shardB := etcdjournal.NodeProvider(fleet, "pve2", "pve3")
	desired, err := shardB.Desired(context.Background())
	for _, d := range desired {
		fmt.Println(d.Ref)
	}
	fmt.Println(err)
	prefix, err := etcdjournal.ShardPrefix("/guestward/fleet-a", "b")
	fmt.Println(prefix, err)
	// Output:
	// pve2/qemu/200
	// pve3/lxc/300
	// <nil>
	// /guestward/fleet-a/shard/b <nil>
}
