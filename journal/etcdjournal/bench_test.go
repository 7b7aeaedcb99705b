package etcdjournal

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
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

// The append benchmarks compare 64 concurrent appenders through the
// journal with 64 goroutines that send bare etcd transactions of the same
// records through the same client. Each appender drives its own operations
// through started, task_running and succeeded; every second operation holds
// an idempotency key. The variants:
//
//	journal      Append on an Open journal
//	leader       Append on a Leader's journal: every record also checks the fence
//	bare         the journal's transaction and nothing else: the same puts (the
//	             op record; the key index on a keyed Started record) under the
//	             same compares (the op record's mod revision, 0 for a Started
//	             record; the key free on a keyed Started record, naming the op
//	             on a later one), of the same bytes (journal.Merge and
//	             MarshalBinary, on state the bare writer keeps in a map)
//	bare-fenced  bare plus the compare of an election key's create revision,
//	             as a leader's journal sends
//	bare-put     the same puts with no compares, which is not the journal's
//	             transaction (no check): a floor for reference
//
// journal/bare and leader/bare-fenced are the figures: what the journal
// costs beyond the transactions its records need.

// BenchmarkAppend64 runs each variant on its own, for per-variant figures,
// allocations and profiles (-cpuprofile, -memprofile). On a shared machine
// the load changes between sub-benchmarks; compare variants with
// BenchmarkAppend64Ratio.
func BenchmarkAppend64(b *testing.B) {
	_, cli := sharedEtcd(b)
	for _, v := range appendVariants(b, cli) {
		b.Run(v.name, func(b *testing.B) {
			v.took, v.cpu = 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			if err := v.turn(b.N); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/v.took.Seconds(), "records/s")
			b.ReportMetric(float64(v.cpu.Microseconds())/float64(b.N), "cpu-µs/record")
		})
	}
}

// BenchmarkAppend64Ratio runs the variants but bare-put in turns of 512 records each,
// rotating which goes first, so that every variant sees the same load, and
// reports the ratios of their throughputs (journal/bare, leader/bare-fenced)
// and each variant's records/s. b.N is the number of records per variant;
// ns/op counts all variants' time and is of no interest.
func BenchmarkAppend64Ratio(b *testing.B) {
	_, cli := sharedEtcd(b)
	appendRatio(b, cli)
}

// BenchmarkAppend64Sync is BenchmarkAppend64Ratio against an etcd that
// fsyncs its log, as in production, where the disk rather than the CPU
// bounds every variant.
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
	appendRatio(b, cli)
}

func appendRatio(b *testing.B, cli *clientv3.Client) {
	vs := appendVariants(b, cli)
	vs = slices.DeleteFunc(vs, func(v *appender) bool { return v.name == "bare-put" }) // not a ratio's term
	const per = 512
	b.ResetTimer()
	for done, r := 0, 0; done < b.N; done, r = done+per, r+1 {
		n := min(per, b.N-done)
		for k := range vs {
			if err := vs[(r+k)%len(vs)].turn(n); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	rate, cpu := map[string]float64{}, map[string]float64{}
	for _, v := range vs {
		rate[v.name] = float64(b.N) / v.took.Seconds()
		cpu[v.name] = float64(v.cpu.Microseconds()) / float64(b.N)
		b.ReportMetric(rate[v.name], v.name+"-records/s")
		b.ReportMetric(cpu[v.name], v.name+"-cpu-µs/record")
	}
	// Throughput ratios, and the same from CPU per record (bare's CPU per
	// record over the journal's): the throughput a CPU-bound host would
	// see, which other load on a shared machine disturbs far less.
	b.ReportMetric(rate["journal"]/rate["bare"], "journal/bare")
	b.ReportMetric(rate["leader"]/rate["bare-fenced"], "leader/bare-fenced")
	b.ReportMetric(cpu["bare"]/cpu["journal"], "cpu:journal/bare")
	b.ReportMetric(cpu["bare-fenced"]/cpu["leader"], "cpu:leader/bare-fenced")
}

// appender is one variant: appendRecord sends goroutine g's record i.
type appender struct {
	name         string
	appendRecord func(ctx context.Context, g, i int) error
	next         [appenders]int // each goroutine's next record, kept across turns
	took         time.Duration  // wall time of its turns
	cpu          time.Duration  // this process's CPU time (user and system) during its turns
}

const appenders = 64

// turn sends n records from 64 goroutines, each its share in its own order,
// and adds the time it took to took.
func (a *appender) turn(n int) error {
	var wg sync.WaitGroup
	errs := make([]error, appenders)
	cpu0 := processCPU()
	start := time.Now()
	for g := range appenders {
		share := n / appenders
		if g < n%appenders {
			share++
		}
		wg.Go(func() {
			ctx := context.Background()
			for range share {
				if err := a.appendRecord(ctx, g, a.next[g]); err != nil {
					errs[g] = fmt.Errorf("%s: %w", a.name, err)
					return
				}
				a.next[g]++
			}
		})
	}
	wg.Wait()
	a.took += time.Since(start)
	a.cpu += processCPU() - cpu0
	return errors.Join(errs...)
}

// lifecycle is goroutine g's record i: its operations, one after another,
// go through started, task_running and succeeded.
func lifecycle(g, i int) journal.Entry {
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

func appendVariants(b *testing.B, cli *clientv3.Client) []*appender {
	j, err := Open(context.Background(), cli, newPrefix(b), WithCompactInterval(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { j.Close() })
	ld, err := Campaign(context.Background(), cli, newPrefix(b), "bench", WithCompactInterval(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ld.Resign(context.Background()) })
	lj := ld.Journal()
	return []*appender{
		{name: "journal", appendRecord: func(ctx context.Context, g, i int) error { return j.Append(ctx, lifecycle(g, i)) }},
		{name: "leader", appendRecord: func(ctx context.Context, g, i int) error { return lj.Append(ctx, lifecycle(g, i)) }},
		{name: "bare", appendRecord: bareWriter(cli, newPrefix(b), nil, true)},
		{name: "bare-fenced", appendRecord: bareWriter(cli, newPrefix(b), &fence{key: ld.Key(), rev: ld.Rev()}, true)},
		{name: "bare-put", appendRecord: bareWriter(cli, newPrefix(b), nil, false)},
	}
}

// bareWriter returns the appendRecord of a bare variant: it keeps each
// operation's merged state and mod revision itself, as a journal must, and
// sends one transaction per record with the journal's puts and bytes; with
// check, under the journal's compares (and f's, when not nil).
func bareWriter(cli *clientv3.Client, prefix string, f *fence, check bool) func(ctx context.Context, g, i int) error {
	l := layout{prefix}
	type op struct {
		e      journal.Entry
		modRev int64
	}
	var mu sync.Mutex
	state := map[string]op{}
	return func(ctx context.Context, g, i int) error {
		e := lifecycle(g, i)
		e.At = time.Now().UTC()
		mu.Lock()
		cur, ok := state[e.OpID]
		mu.Unlock()
		var prev *journal.Entry
		if ok {
			prev = &cur.e
		}
		next, err := journal.Merge(prev, e)
		if err != nil {
			return err
		}
		val, err := next.MarshalBinary()
		if err != nil {
			return err
		}
		opKey := l.op(e.OpID)
		var cmps []clientv3.Cmp
		if check {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(opKey), "=", cur.modRev))
		}
		puts := []clientv3.Op{clientv3.OpPut(opKey, string(val))}
		if k := next.IdempKey; k != "" {
			kk := l.key(k)
			switch {
			case prev == nil:
				puts = append(puts, clientv3.OpPut(kk, e.OpID))
				if check {
					cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(kk), "=", 0))
				}
			case check:
				cmps = append(cmps, clientv3.Compare(clientv3.Value(kk), "=", e.OpID))
			}
		}
		if f != nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev))
		}
		resp, err := cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("op %s: compare failed", e.OpID)
		}
		mu.Lock()
		if next.State.Terminal() {
			delete(state, e.OpID)
		} else {
			state[e.OpID] = op{next, resp.Header.Revision}
		}
		mu.Unlock()
		return nil
	}
}

// BenchmarkRecover10k measures Engine.Recover over a journal of 10,000
// operations: 9,990 finished and 10 left in flight by a crash between
// journaling the intent and sending it (each resolved as never started).
// Time and memory (B/op allocated; peak-MB, the most the heap grew during
// one Recover beyond the live heap before it) per Recover are the figures.
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

	var peak uint64
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
		runtime.GC()
		base := heapBytes()
		stop := sampleHeap(&peak, base)
		b.StartTimer()
		rep, err := eng.Recover(context.Background())
		b.StopTimer()
		stop()
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
		if len(rep.Ops) != inflight {
			b.Fatalf("Recover resolved %d operations, want %d", len(rep.Ops), inflight)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
	ops, err := j.Ops(context.Background())
	if err != nil || len(ops) != total {
		b.Fatalf("journal holds %d operations (%v), want %d", len(ops), err, total)
	}
}

// heapBytes returns the bytes of heap objects, live and not yet swept.
func heapBytes() uint64 {
	m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

// sampleHeap watches the heap until the returned stop is called, and raises
// *peak to the most it grew beyond base. The heap of the whole process
// counts, the embedded etcd's included, and garbage not yet collected too:
// it is the memory a Recover makes the process hold, sampled (every 100µs)
// so a short spike may pass unseen.
func sampleHeap(peak *uint64, base uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			if h := heapBytes(); h > base && h-base > *peak {
				*peak = h - base
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
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
