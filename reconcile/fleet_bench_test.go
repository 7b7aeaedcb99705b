package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// fleetBench is a fake cluster of five stock nodes (three API workers
// each) with n declared QEMU guests spread over them, and an engine with
// the default Concurrency and NodeConcurrency.
type fleetBench struct {
	srv   *proxmoxtest.Server
	eng   *reconcile.Engine
	refs  []proxmox.Ref
	nodes []string
}

const benchNodeWorkers = 3 // pveproxy's max_workers

func newFleetBench(b *testing.B, n int, latency time.Duration, power reconcile.Power) *fleetBench {
	b.Helper()
	nodes := []string{"pve1", "pve2", "pve3", "pve4", "pve5"}
	srv := proxmoxtest.Start(b, proxmoxtest.WithNodes(nodes...), proxmoxtest.WithSeed(1),
		proxmoxtest.WithRequestLogLimit(0), proxmoxtest.WithNodeWorkers(benchNodeWorkers),
		proxmoxtest.WithLatency(latency), proxmoxtest.WithTaskDuration(20*time.Millisecond))
	fb := &fleetBench{srv: srv, nodes: nodes}
	ds := make([]reconcile.Desired, 0, n)
	for i := range n {
		ref := proxmox.Ref{Node: nodes[i%len(nodes)], Type: proxmox.QEMU, VMID: 1000 + i}
		declared, _ := typicalConfig(i)
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Config: declared}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, reconcile.Desired{Ref: ref, Power: power, Config: declared})
		fb.refs = append(fb.refs, ref)
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(2*time.Millisecond, 8*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	prov, err := reconcile.NewStaticProvider(ds)
	if err != nil {
		b.Fatal(err)
	}
	if fb.eng, err = reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: journal.NewMemory(), Provider: prov}); err != nil {
		b.Fatal(err)
	}
	return fb
}

// requests sums the fake's request counts over the nodes, and returns the
// most any node had in flight.
func (fb *fleetBench) requests() (total, maxInFlight int) {
	for _, l := range fb.srv.NodeLoad() {
		total += l.Requests
		maxInFlight = max(maxInFlight, l.MaxInFlight)
	}
	return total, maxInFlight
}

// BenchmarkFleetNoopPass runs a pass that finds nothing to do over 2,000
// declared guests on five stock nodes, with no added latency and with 20 ms
// added to every request. It reports the requests per declared guest
// (target at most 1.05) and, with latency, the pass's wall time over the
// ideal: requests × latency ÷ effective parallelism, the parallelism
// being the smaller of Concurrency and nodes × NodeConcurrency (target at
// most 1.2).
func BenchmarkFleetNoopPass(b *testing.B) {
	const n = 2000
	for _, latency := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%v", latency), func(b *testing.B) {
			fb := newFleetBench(b, n, latency, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			fb.srv.ResetNodeLoad()
			var wall time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				rep, err := fb.eng.ReconcileOnce(ctx)
				wall += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if c := rep.Count(); c[reconcile.GuestInSync] != n {
					b.Fatalf("not in sync: %v", c)
				}
			}
			b.StopTimer()
			total, most := fb.requests()
			perPass := float64(total) / float64(b.N)
			b.ReportMetric(perPass/n, "requests/guest")
			b.ReportMetric(float64(most), "max-in-flight/node")
			if latency > 0 {
				parallel := min(8, len(fb.nodes)*reconcile.DefaultNodeConcurrency)
				ideal := time.Duration(perPass * float64(latency) / float64(parallel))
				b.ReportMetric((wall / time.Duration(b.N)).Seconds(), "s/pass")
				b.ReportMetric(ideal.Seconds(), "ideal-s/pass")
				b.ReportMetric(float64(wall)/float64(b.N)/float64(ideal), "wall/ideal")
			}
		})
	}
}

// BenchmarkFleetDriftPass runs a first pass over 2,000 declared guests
// that all need a start (tasks of 20 ms), as the gauntlet's load test
// does, and a pass over the same fleet where one guest in ten has drifted
// in one option. It reports the requests per acted-on guest: the pass's
// requests less those a pass that found nothing to do would have sent
// (the list and one read per guest), plus the acted-on guest's own read,
// over the guests acted on (target: no more than 8.9, the figure before
// one-request observation); and the requests of the whole pass per
// declared guest.
func BenchmarkFleetDriftPass(b *testing.B) {
	const n = 2000
	for _, shape := range []string{"all_start", "one_in_ten_config"} {
		b.Run(shape, func(b *testing.B) {
			power := reconcile.PowerRunning
			if shape != "all_start" {
				power = ""
			}
			var acted, total, noop int
			for range b.N {
				b.StopTimer()
				fb := newFleetBench(b, n, 0, power)
				if shape != "all_start" {
					for i := 0; i < n; i += 10 {
						if err := fb.srv.UpdateConfig(fb.refs[i], map[string]string{"cores": "9"}, nil); err != nil {
							b.Fatal(err)
						}
					}
				}
				fb.srv.ResetNodeLoad()
				b.StartTimer()
				rep, err := fb.eng.ReconcileOnce(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				c := rep.Count()
				if !rep.Converged() || c[reconcile.GuestChanged] == 0 {
					b.Fatalf("outcomes %v", c)
				}
				acted += c[reconcile.GuestChanged]
				r, _ := fb.requests()
				total += r
				noop += 1 + n - c[reconcile.GuestChanged]
			}
			b.ReportMetric(float64(total-noop)/float64(acted), "requests/acted-guest")
			b.ReportMetric(float64(total)/float64(b.N*n), "requests/guest")
		})
	}
}
