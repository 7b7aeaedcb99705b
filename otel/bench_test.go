package otel_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/guestward/guestward/journal"
	gwotel "github.com/guestward/guestward/otel"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// BenchmarkPass runs a pass that finds nothing to do over 20 guests of a
// fake cluster, without and with every hook installed (the client's
// request observer, the journal wrapper, OnEvent and OnReport), with a
// manual reader collecting once per pass as a scrape would. The two run
// interleaved under -count; compare their ns/op.
func BenchmarkPass(b *testing.B) {
	const guests = 20
	srv := proxmoxtest.Start(b, proxmoxtest.WithNodes("pve1", "pve2"))
	var ds []reconcile.Desired
	for n := range guests {
		ref := proxmox.Ref{Node: []string{"pve1", "pve2"}[n%2], Type: proxmox.QEMU, VMID: 100 + n}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Config: map[string]string{"memory": "2048"}}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, reconcile.Desired{Ref: ref, Config: map[string]string{"memory": "2048"}})
	}
	prov, err := reconcile.NewStaticProvider(ds)
	if err != nil {
		b.Fatal(err)
	}
	for _, instrumented := range []bool{false, true} {
		b.Run(fmt.Sprintf("instrumented=%v", instrumented), func(b *testing.B) {
			id, secret := srv.APIToken()
			opts := []proxmox.Option{proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(id, secret)}
			var ins *gwotel.Instruments
			var reader *sdkmetric.ManualReader
			if instrumented {
				reader = sdkmetric.NewManualReader()
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
				defer mp.Shutdown(context.Background())
				if ins, err = gwotel.New(mp); err != nil {
					b.Fatal(err)
				}
				defer ins.Close()
				opts = append(opts, ins.ProxmoxOption())
			}
			client, err := proxmox.New(srv.URL, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer client.CloseIdleConnections()
			var j journal.Journal = journal.NewMemory()
			cfg := reconcile.Config{Proxmox: client, Provider: prov, SettleDelay: -1}
			if instrumented {
				j = ins.Journal(j)
				ins.Wire(&cfg)
			}
			cfg.Journal = j
			eng, err := reconcile.NewEngine(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				rep, err := eng.ReconcileOnce(ctx)
				if err != nil || !rep.Converged() {
					b.Fatalf("pass: %v", err)
				}
				if instrumented {
					ins.OnReport(rep)
					var rm metricdata.ResourceMetrics
					if err := reader.Collect(ctx, &rm); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkOnRequest is the cost of recording one request attempt, the
// hook called most often.
func BenchmarkOnRequest(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	ins, err := gwotel.New(mp)
	if err != nil {
		b.Fatal(err)
	}
	ri := proxmox.RequestInfo{Method: "GET", Path: "/nodes/{node}/qemu/{vmid}/pending", Node: "pve1", Status: 200, Attempt: 1, Duration: 3 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		ins.OnRequest(ri)
	}
}
