package etcdjournal

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/etcdjournal/internal/etcdtest"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkAppend64 compares 64 concurrent appenders through the journal
// with 64 goroutines sending bare etcd transactions that put the same
// records (the op record, and the key index on a keyed Started record)
// through the same client, without compares or reads. Both run in one
// benchmark so that -count interleaves them; each appender drives its own
// operations through started, task_running and succeeded. The ratio
// journal/bare of records/s is the figure.
func BenchmarkAppend64(b *testing.B) {
	_, cli := sharedEtcd(b)
	append64(b, cli)
}

// BenchmarkAppend64Sync is BenchmarkAppend64 against an etcd that fsyncs
// its log, as in production, where the disk rather than the CPU bounds both
// variants.
func BenchmarkAppend64Sync(b *testing.B) {
	c, err := etcdtest.Start(b.TempDir(), etcdtest.Options{Sync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cli, err := c.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	append64(b, cli)
}

func append64(b *testing.B, cli *clientv3.Client) {
	lifecycle := func(g, i int) journal.Entry {
		op := fmt.Sprintf("g%d-op%d", g, i/3)
		switch i % 3 {
		case 0:
			e := journal.Entry{OpID: op, VMID: 100 + g, Kind: "set_config", State: journal.Started,
				Params: map[string]string{"memory": "2048", "cores": "4"}}
			if g%2 == 0 {
				e.IdempKey = "key-" + op
			}
			return e
		case 1:
			return journal.Entry{OpID: op, State: journal.TaskRunning, UPID: "UPID:pve1:0001:0002:00000003:qmconfig:100:root@pam:"}
		default:
			return journal.Entry{OpID: op, State: journal.Succeeded}
		}
	}
	run := func(b *testing.B, appendFn func(ctx context.Context, g, i int) error) {
		var next atomic.Int64
		b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			g := int(next.Add(1))
			ctx := context.Background()
			for i := 0; pb.Next(); i++ {
				if err := appendFn(ctx, g, i); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
	}
	b.Run("journal", func(b *testing.B) {
		j, err := Open(context.Background(), cli, newPrefix(b), WithCompactInterval(0))
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		run(b, func(ctx context.Context, g, i int) error { return j.Append(ctx, lifecycle(g, i)) })
	})
	b.Run("bare", func(b *testing.B) {
		l := layout{newPrefix(b)}
		// The bare writer keeps the merged state itself, as a journal must,
		// and sends exactly the bytes the journal would.
		var mu sync.Mutex
		state := map[string]*journal.Entry{}
		run(b, func(ctx context.Context, g, i int) error {
			e := lifecycle(g, i)
			mu.Lock()
			prev := state[e.OpID]
			mu.Unlock()
			if e.At.IsZero() {
				e.At = time.Now().UTC()
			}
			next, err := journal.Merge(prev, e)
			if err != nil {
				return err
			}
			val, err := next.MarshalBinary()
			if err != nil {
				return err
			}
			ops := []clientv3.Op{clientv3.OpPut(l.op(e.OpID), string(val))}
			if prev == nil && next.IdempKey != "" {
				ops = append(ops, clientv3.OpPut(l.key(next.IdempKey), e.OpID))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
			mu.Lock()
			if next.State.Terminal() {
				delete(state, e.OpID)
			} else {
				state[e.OpID] = &next
			}
			mu.Unlock()
			return nil
		})
	})
}

// BenchmarkRecover10k measures Engine.Recover over a journal of 10,000
// operations: 9,990 finished and 10 left in flight by a crash between
// journaling the intent and sending it (each resolved as never started).
// Time and memory per Recover are the figures.
func BenchmarkRecover10k(b *testing.B) {
	const total, inflight = 10000, 10
	_, cli := sharedEtcd(b)
	prefix := newPrefix(b)
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"), proxmoxtest.WithSeed(1))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	pc, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	var desired []reconcile.Desired
	for i := range inflight {
		ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100 + i}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: ref.VMID, Config: map[string]string{"memory": "512"}}); err != nil {
			b.Fatal(err)
		}
		desired = append(desired, reconcile.Desired{Ref: ref, Power: reconcile.PowerRunning})
	}
	prov, err := reconcile.NewStaticProvider(desired)
	if err != nil {
		b.Fatal(err)
	}
	j, err := Open(context.Background(), cli, prefix, WithCompactInterval(0))
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	cfg := reconcile.Config{Proxmox: pc, Journal: j, Provider: prov, SettleDelay: -1, RetryMin: time.Millisecond, RetryMax: time.Millisecond}

	// The finished operations, written in batches straight to etcd in the
	// journal's layout (appending them one by one would only slow the
	// setup down).
	l := layout{prefix}
	at := time.Now().UTC().Add(-time.Hour)
	var batch []clientv3.Op
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := cli.Txn(context.Background()).Then(batch...).Commit(); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range total - inflight {
		e := journal.Entry{OpID: fmt.Sprintf("done-%05d", i), VMID: 100 + i%inflight, Kind: "start",
			Params: map[string]string{"node": "pve1", "type": "qemu"}, State: journal.Succeeded,
			UPID: fmt.Sprintf("UPID:pve1:%08X:00000001:%08X:qmstart:%d:root@pam!guestward:", i, at.Unix(), 100+i%inflight), At: at}
		val, err := e.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, clientv3.OpPut(l.op(e.OpID), string(val)))
		if len(batch) == 100 {
			flush()
		}
	}
	flush()
	// The in-flight ones, made by the engine itself and saved to be put
	// back before each Recover.
	eng, err := reconcile.NewEngine(cfg)
	if err != nil {
		b.Fatal(err)
	}
	fp := new(failpoint.Set)
	fp.Enable(checkpoint.AfterIntent, func() error { return errCrash })
	if _, err := eng.ReconcileOnce(checkpoint.With(context.Background(), fp)); err != nil {
		b.Fatal(err)
	}
	fl, err := j.InFlight(context.Background())
	if err != nil || len(fl) != inflight {
		b.Fatalf("in flight after the crash: %d %v", len(fl), err)
	}
	var saved []clientv3.Op
	for _, e := range fl {
		val, _ := e.MarshalBinary()
		saved = append(saved, clientv3.OpPut(l.op(e.OpID), string(val)))
	}

	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if _, err := cli.Txn(context.Background()).Then(saved...).Commit(); err != nil {
			b.Fatal(err)
		}
		eng, err := reconcile.NewEngine(cfg)
		if err != nil {
			b.Fatal(err)
		}
		j.forgetAll()
		b.StartTimer()
		rep, err := eng.Recover(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if len(rep.Ops) != inflight {
			b.Fatalf("Recover resolved %d operations, want %d", len(rep.Ops), inflight)
		}
	}
	b.StopTimer()
	ops, err := j.Ops(context.Background())
	if err != nil || len(ops) != total {
		b.Fatalf("journal holds %d operations (%v), want %d", len(ops), err, total)
	}
}

// BenchmarkFailover measures the time from a leader's death (it freezes:
// no keep-alive, no release; its lease runs out in etcd) to the new
// leader's first action on the fake Proxmox, against the lease TTL. The
// figures are failover-s and ttl-s.
func BenchmarkFailover(b *testing.B) {
	for range b.N {
		b.StopTimer()
		f := failoverOnce(b)
		b.StartTimer()
		_ = f
	}
}

// failoverOnce runs one failover and reports its figures on b.
func failoverOnce(b *testing.B) time.Duration {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"), proxmoxtest.WithSeed(1))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	pc, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}}); err != nil {
		b.Fatal(err)
	}
	prov, err := reconcile.NewStaticProvider([]reconcile.Desired{{Ref: ref, Power: reconcile.PowerRunning}})
	if err != nil {
		b.Fatal(err)
	}
	prefix := newPrefix(b)
	pause := make(chan struct{})
	a, err := Campaign(context.Background(), newClient(b), prefix, "a", WithTTL(testTTL), withPause(pause))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Resign(context.Background())
	won := make(chan *Leader, 1)
	cliB := newClient(b)
	go func() {
		ld, err := Campaign(context.Background(), cliB, prefix, "b", WithTTL(testTTL))
		if err != nil {
			b.Error(err)
		}
		won <- ld
	}()
	waitCandidates(b, a, 2)
	first := make(chan time.Time, 1)
	close(pause) // a dies
	died := time.Now()
	bl := <-won
	if bl == nil {
		b.FailNow()
	}
	defer bl.Resign(context.Background())
	eng, err := reconcile.NewEngine(reconcile.Config{Proxmox: pc, Journal: bl.Journal(), Provider: prov, SettleDelay: -1,
		OnEvent: func(ev reconcile.Event) {
			if ev.Phase == "start" {
				select {
				case first <- time.Now():
				default:
				}
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := eng.ReconcileOnce(context.Background()); err != nil {
		b.Fatal(err)
	}
	d := (<-first).Sub(died)
	b.ReportMetric(d.Seconds(), "failover-s")
	b.ReportMetric(testTTL.Seconds(), "ttl-s")
	b.ReportMetric((d - testTTL).Seconds(), "over-ttl-s")
	return d
}
