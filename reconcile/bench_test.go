package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// BenchmarkPlan plans fleets of 30-option QEMU guests. "in_sync" guests
// match their declaration once Proxmox's rewriting is normalized away;
// "drift" has one guest in ten drifted in two options, "grow" the same plus
// a disk declared larger than it is (a resize). guests/s reads
// better than ns/op across sizes; compare the ratio between sizes to check
// that Plan scales linearly.
func BenchmarkPlan(b *testing.B) {
	opts := reconcile.PlanOptions{QEMU: normalize.QEMU(), LXC: normalize.LXC()}
	for _, n := range []int{1_000, 10_000, 100_000} {
		for _, shape := range []struct {
			name  string
			drift int
			grow  bool // the drifted guests' scsi1 is declared larger: a resize
		}{{"in_sync", 0, false}, {"drift", 10, false}, {"grow", 10, true}} {
			b.Run(fmt.Sprintf("guests=%d/%s", n, shape.name), func(b *testing.B) {
				ds, os := syntheticFleet(n, shape.drift)
				if shape.grow {
					for i := 0; i < n; i += shape.drift {
						os[i].Config["scsi1"] = "local-lvm:vm-100-disk-1,size=50G"
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					res := reconcile.Plan(ds, os, opts)
					if len(res.Guests) != n {
						b.Fatal(len(res.Guests))
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "guests/s")
			})
		}
	}
}

// BenchmarkReconcileOnce runs a full pass over 1,000 declared guests on the
// fake server: the list, one read per guest (the pending endpoint), plan. The guests are in sync, so
// the pass measures observation and planning, the part every pass pays.
func BenchmarkReconcileOnce(b *testing.B) {
	const n = 1000
	srv := proxmoxtest.Start(b, proxmoxtest.WithNodes("pve1"), proxmoxtest.WithSeed(1))
	ds := make([]reconcile.Desired, 0, n)
	for i := range n {
		ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 1000 + i}
		declared, _ := typicalConfig(i)
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: ref.VMID, Config: declared}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, reconcile.Desired{Ref: ref, Config: declared})
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		b.Fatal(err)
	}
	prov, err := reconcile.NewStaticProvider(ds)
	if err != nil {
		b.Fatal(err)
	}
	e, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: journal.NewMemory(), Provider: prov, Concurrency: 16})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rep, err := e.ReconcileOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if c := rep.Count(); c[reconcile.GuestInSync] != n {
			b.Fatalf("not in sync: %v", c)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "guests/s")
}
