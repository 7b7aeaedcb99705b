package guestward_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The whole model in one run, against a fake Proxmox VE cluster: a stopped
// VM whose values Proxmox has rewritten (a generated MAC address, sorted and
// lower-cased tags), a desired state in a file, and a file journal.
//
// The first pass sets the memory and starts the VM, through the per-guest
// queue, journaling every step; the rewritten values are not drift. The
// second pass finds nothing to do. A one-shot reboot is then requested
// twice with the same idempotency key, the second time after a restart (a
// new engine on the reopened journal): Proxmox reboots the VM once.
func Example() {
	ctx := context.Background()
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	web := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web-1", "memory": "2048"}}); err != nil {
		log.Fatal(err)
	}
	// Written through the API, so the fake rewrites it as Proxmox would.
	if err := srv.UpdateConfig(web, map[string]string{"net0": "virtio,bridge=vmbr0", "tags": "Web,prod"}, nil); err != nil {
		log.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "guestward-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	desiredFile := filepath.Join(dir, "desired.json")
	if err := os.WriteFile(desiredFile, []byte(`{"guests": [{
		"node": "pve1", "type": "qemu", "vmid": 100, "power": "running",
		"config": {"memory": 4096, "net0": "virtio,bridge=vmbr0", "tags": "web,prod"}
	}]}`), 0o600); err != nil {
		log.Fatal(err)
	}

	// As with a real cluster: an API token and the pinned certificate.
	client, err := proxmox.New(srv.URL, proxmox.WithAPIToken(srv.APIToken()), proxmox.WithFingerprint(srv.Fingerprint()))
	if err != nil {
		log.Fatal(err)
	}
	defer client.CloseIdleConnections()
	desired, err := reconcile.NewFileProvider(desiredFile)
	if err != nil {
		log.Fatal(err)
	}

	// start is what an agent does when it starts: open the journal, make an
	// engine, resolve what a crash may have left in flight.
	start := func() (*reconcile.Engine, *journal.FileJournal) {
		jnl, err := journal.OpenFile(filepath.Join(dir, "journal"))
		if err != nil {
			log.Fatal(err)
		}
		engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: jnl, Provider: desired})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := engine.Recover(ctx); err != nil {
			log.Fatal(err)
		}
		return engine, jnl
	}

	engine, jnl := start()
	for pass := 1; pass <= 2; pass++ {
		rep, err := engine.ReconcileOnce(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for _, g := range rep.Guests {
			fmt.Printf("pass %d: %s %s", pass, g.Ref, g.Outcome)
			for _, a := range g.Actions {
				fmt.Printf(", %s %s", a.Action.Kind, a.Outcome)
			}
			fmt.Println()
		}
	}

	reboot := reconcile.OneShot{Key: "ticket-4711/reboot-web-1", Ref: web, Kind: reconcile.ActionReboot}
	res, err := engine.Apply(ctx, reboot)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("reboot: %s, replayed %v\n", res.State, res.Replayed)
	if err := jnl.Close(); err != nil {
		log.Fatal(err)
	}

	engine, jnl = start() // a restart
	defer jnl.Close()
	res, err = engine.Apply(ctx, reboot)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("after a restart, reboot: %s, replayed %v\n", res.State, res.Replayed)
	fmt.Println("reboot tasks Proxmox ran:", srv.TaskCount(web, "qmreboot"))
	// Output:
	// pass 1: pve1/qemu/100 changed, set_config succeeded, start succeeded
	// pass 2: pve1/qemu/100 in_sync
	// reboot: succeeded, replayed false
	// after a restart, reboot: succeeded, replayed true
	// reboot tasks Proxmox ran: 1
}
