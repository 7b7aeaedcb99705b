package otel_test

import (
	"context"
	"fmt"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	gwotel "github.com/guestward/guestward/otel"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// The instruments on an SDK MeterProvider. A real program gives the
// provider an exporter's reader (Prometheus, OTLP) and wires the hooks:
// ins.Wire(&cfg) for the engine, ins.ProxmoxOption() for the client,
// ins.QueueOption() for the queue and ins.Journal(j) for the journal.
func ExampleNew() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	ins, err := gwotel.New(mp)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ins.Close()

	var cfg reconcile.Config
	ins.Wire(&cfg)
	// What the client and the engine would report:
	ins.OnRequest(proxmox.RequestInfo{Method: "GET", Path: "/cluster/resources", Status: 200, Attempt: 1, Duration: 3 * time.Millisecond})
	cfg.OnEvent(reconcile.Event{OpID: "op-1", Kind: reconcile.ActionStart, Phase: "done", Outcome: reconcile.OutcomeSucceeded, Duration: time.Second})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			fmt.Println(m.Name, d.DataPoints[0].Value)
		case metricdata.Histogram[float64]:
			fmt.Println(m.Name, m.Unit, d.DataPoints[0].Count)
		}
	}
	// Unordered output:
	// guestward.actions 1
	// guestward.action.duration s 1
	// guestward.api.request.duration s 1
}
