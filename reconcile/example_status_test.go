package reconcile_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The health handler answers 503 until recovery has completed, then 200;
// Status and OnProgress tell how the passes go.
func ExampleEngine_HealthHandler() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	for vmid := 100; vmid < 103; vmid++ {
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: vmid,
			Config: map[string]string{"memory": "2048"}}); err != nil {
			log.Fatal(err)
		}
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		log.Fatal(err)
	}
	var desired []reconcile.Desired
	for vmid := 100; vmid < 103; vmid++ {
		desired = append(desired, reconcile.Desired{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: vmid},
			Config: map[string]string{"memory": "4096"}})
	}
	provider, err := reconcile.NewStaticProvider(desired)
	if err != nil {
		log.Fatal(err)
	}
	engine, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: client, Journal: journal.NewMemory(), Provider: provider,
		OnProgress: func(p reconcile.Progress) {
			// Calls come one at a time: no lock needed to print.
			if p.Total > 0 && p.Done == p.Total { // the end of each phase with work
				fmt.Printf("pass %d %s: %d/%d\n", p.Pass, p.Phase, p.Done, p.Total)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	health := httptest.NewServer(engine.HealthHandler()) // mux.Handle("/healthz", ...) in a program
	defer health.Close()
	get := func() int {
		res, err := http.Get(health.URL)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	fmt.Println("before recovery:", get())
	ctx := context.Background()
	if _, err := engine.Recover(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after recovery:", get())
	if _, err := engine.ReconcileOnce(ctx); err != nil {
		log.Fatal(err)
	}
	s := engine.Status()
	fmt.Printf("last pass: %d guests, %d changed, %d actions sent, %d succeeded\n",
		s.LastPass.Guests, s.LastPass.Counts[reconcile.GuestChanged], s.LastPass.Sent, s.LastPass.Succeeded)
	fmt.Println("in flight:", s.InFlight, "unresolved:", s.Unresolved, "pass in progress:", s.Pass != nil)
	// Output:
	// before recovery: 503
	// after recovery: 200
	// pass 1 list: 3/3
	// pass 1 observe: 3/3
	// pass 1 plan: 3/3
	// pass 1 act: 3/3
	// pass 1 done: 3/3
	// last pass: 3 guests, 3 changed, 3 actions sent, 3 succeeded
	// in flight: 0 unresolved: 0 pass in progress: false
}
