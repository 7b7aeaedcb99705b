package reconcile_test

import (
	"context"
	"fmt"
	"log"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// Plan is a pure function: give it what should be and what is, and it says
// what to do. Proxmox's own rewriting (a generated MAC address, tags sorted
// and joined with ';') is not drift; the memory size is.
func ExamplePlan() {
	web := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	desired := []reconcile.Desired{{
		Ref:   web,
		Power: reconcile.PowerRunning,
		Config: map[string]string{
			"memory": "4096",
			"net0":   "virtio,bridge=vmbr0",
			"tags":   "web,prod",
		},
	}}
	actual := []reconcile.Observed{{
		Ref:    web,
		Status: "stopped",
		Config: map[string]string{
			"memory": "2048",
			"net0":   "virtio=BC:24:11:5E:7A:01,bridge=vmbr0",
			"tags":   "prod;web",
		},
		Digest: "3f1d6f4e9c1b2a7d8e0f5a6b7c8d9e0f1a2b3c4d",
	}}
	fmt.Print(reconcile.Plan(desired, actual, reconcile.PlanOptions{}))
	// Output:
	// pve1/qemu/100: act
	//     memory current: desired "4096", actual "2048"
	//     power: stopped -> running
	//     1. set_config pve1/qemu/100 memory=4096 [reversible]
	//     2. start pve1/qemu/100 [reversible]
	// 1 guest: 0 in sync, 1 to change (2 actions), 0 skipped
}

// An engine on the fake Proxmox server: one pass brings the guest in line,
// the next finds nothing to do.
func ExampleEngine() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	web := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web", "memory": "2048"}}); err != nil {
		log.Fatal(err)
	}

	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		log.Fatal(err)
	}
	desired, err := reconcile.NewStaticProvider([]reconcile.Desired{{
		Ref: web, Power: reconcile.PowerRunning, Config: map[string]string{"memory": "4096"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	jnl := journal.NewMemory() // a real agent uses journal.OpenFile
	defer jnl.Close()
	engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: jnl, Provider: desired})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	for pass := 1; pass <= 2; pass++ {
		rep, err := engine.ReconcileOnce(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for _, g := range rep.Guests {
			fmt.Printf("pass %d: %s %s", pass, g.Ref, g.Outcome)
			for _, a := range g.Actions {
				fmt.Printf(" [%s %s]", a.Action.Kind, a.Outcome)
			}
			fmt.Println()
		}
	}
	// Output:
	// pass 1: pve1/qemu/100 changed [set_config succeeded] [start succeeded]
	// pass 2: pve1/qemu/100 in_sync
}

// A one-shot operation with an idempotency key runs at most once: asking
// again returns the recorded outcome.
func ExampleEngine_Apply() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ref := proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: 200}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.LXC, VMID: 200, Running: true}); err != nil {
		log.Fatal(err)
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		log.Fatal(err)
	}
	engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: journal.NewMemory()})
	if err != nil {
		log.Fatal(err)
	}
	reboot := reconcile.OneShot{Key: "ticket-4711", Ref: ref, Kind: reconcile.ActionReboot}
	for range 2 {
		res, err := engine.Apply(context.Background(), reboot)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(res.State, "replayed:", res.Replayed)
	}
	fmt.Println("reboot tasks:", srv.TaskCount(ref, "vzreboot"))
	// Output:
	// succeeded replayed: false
	// succeeded replayed: true
	// reboot tasks: 1
}
