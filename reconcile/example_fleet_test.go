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

// A hub changed one guest's desired state: a targeted pass reads and acts
// on that guest alone, at the cost of two reads instead of a pass over the
// fleet. Per node, the engine keeps at most NodeConcurrency requests in
// flight.
func ExampleEngine_ReconcileGuests() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1", "pve2"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	var desired []reconcile.Desired
	for i, node := range []string{"pve1", "pve2", "pve1", "pve2"} {
		ref := proxmox.Ref{Node: node, Type: proxmox.QEMU, VMID: 100 + i}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: node, Type: ref.Type, VMID: ref.VMID,
			Config: map[string]string{"memory": "2048"}}); err != nil {
			log.Fatal(err)
		}
		desired = append(desired, reconcile.Desired{Ref: ref, Config: map[string]string{"memory": "2048"}})
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		log.Fatal(err)
	}
	prov, err := reconcile.NewStaticProvider(desired)
	if err != nil {
		log.Fatal(err)
	}
	engine, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: client, Journal: journal.NewMemory(), Provider: prov,
		Concurrency: 8, NodeConcurrency: 2,
	})
	if err != nil {
		log.Fatal(err)
	}

	// The hub declares more memory for guest 101.
	desired[1].Config["memory"] = "4096"
	if err := prov.Set(desired); err != nil {
		log.Fatal(err)
	}
	rep, err := engine.ReconcileGuests(context.Background(), desired[1].Ref)
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range rep.Guests {
		fmt.Println(g.Ref, g.Outcome)
	}
	fmt.Println("cluster listed:", rep.Listed > 0)
	// Output:
	// pve2/qemu/101 changed
	// cluster listed: false
}
