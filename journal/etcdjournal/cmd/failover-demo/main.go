// Command failover-demo shows two agent replicas sharing one journal in
// etcd: the leader dies in the middle of a reconcile pass, the other
// replica takes over, recovers the dead leader's in-flight operations and
// finishes the work, and the fake Proxmox's task list shows that nothing
// was done twice.
//
// Everything runs in this process: an embedded single-member etcd on a
// loopback port with its data in a temporary directory, the fake Proxmox
// cluster of proxmoxtest, and the two replicas. Run it with
//
//	go run ./cmd/failover-demo
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal/etcdjournal"
	"github.com/guestward/guestward/journal/etcdjournal/internal/etcdtest"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "failover-demo:", err)
		os.Exit(1)
	}
}

const prefix = "/guestward/demo"

var errDied = errors.New("the leader died")

func run(ctx context.Context, out io.Writer) error {
	// Events arrive from the engines' workers at once; lines must not mix.
	w := &lockedWriter{w: out}
	dir, err := os.MkdirTemp("", "failover-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cluster, err := etcdtest.Start(dir, etcdtest.Options{})
	if err != nil {
		return err
	}
	defer cluster.Close()
	fmt.Fprintf(w, "etcd running at %v\n", cluster.Endpoints())

	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"), proxmoxtest.WithSeed(1))
	if err != nil {
		return err
	}
	defer srv.Close()
	pc, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		return err
	}
	var desired []reconcile.Desired
	for i := range 6 {
		ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100 + i}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID,
			Config: map[string]string{"name": fmt.Sprintf("vm%d", ref.VMID), "memory": "512"}}); err != nil {
			return err
		}
		desired = append(desired, reconcile.Desired{Ref: ref, Power: reconcile.PowerRunning,
			Config: map[string]string{"memory": "1024"}})
	}
	prov, err := reconcile.NewStaticProvider(desired)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "fake Proxmox with 6 stopped VMs; desired: each running with 1024 MiB\n")

	// Two replicas campaign; a is started first, so it leads.
	cliA, err := cluster.Client()
	if err != nil {
		return err
	}
	defer cliA.Close()
	cliB, err := cluster.Client()
	if err != nil {
		return err
	}
	defer cliB.Close()
	ttl := 3 * time.Second
	a, err := etcdjournal.Campaign(ctx, cliA, prefix, "replica-a", etcdjournal.WithTTL(ttl))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "replica-a leads (election key %s)\n", a.Key())
	bWon := make(chan *etcdjournal.Leader, 1)
	bErr := make(chan error, 1)
	go func() {
		ld, err := etcdjournal.Campaign(ctx, cliB, prefix, "replica-b", etcdjournal.WithTTL(ttl))
		if err != nil {
			bErr <- err
			return
		}
		bWon <- ld
	}()

	// replica-a dies once its third operation has recorded its task: the
	// process stops there (a failpoint on its pass's context aborts every
	// operation that reaches that step, as guestward's crash tests do),
	// and its lease is gone as etcd expires a dead process's lease.
	var mu sync.Mutex
	n := 0
	var once sync.Once
	die := func() {
		once.Do(func() {
			fmt.Fprintf(w, "*** replica-a dies in the middle of its pass ***\n")
			_, _ = cliB.Revoke(context.WithoutCancel(ctx), a.Lease())
		})
	}
	engA, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: pc, Journal: a.Journal(), Provider: prov, Concurrency: 2, SettleDelay: 200 * time.Millisecond,
		OnEvent: func(ev reconcile.Event) { fmt.Fprintf(w, "  replica-a: %s %s %s\n", ev.Ref, ev.Kind, ev.Phase) },
	})
	if err != nil {
		return err
	}
	fp := new(failpoint.Set)
	fp.Enable(checkpoint.AfterTaskRecord, func() error {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k >= 3 {
			die()
			return errDied
		}
		return nil
	})
	ctxA, cancelA := a.Context(ctx)
	repA, err := engA.ReconcileOnce(checkpoint.With(ctxA, fp))
	cancelA()
	sent, ok := repA.Actions()
	fmt.Fprintf(w, "replica-a's pass ended (%v): %d actions sent, %d succeeded\n", errOrNil(err), sent, ok)

	var b *etcdjournal.Leader
	select {
	case b = <-bWon:
	case err := <-bErr:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	defer b.Resign(context.WithoutCancel(ctx))
	fmt.Fprintf(w, "replica-b leads now (election key %s)\n", b.Key())
	engB, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: pc, Journal: b.Journal(), Provider: prov, Concurrency: 2, SettleDelay: 200 * time.Millisecond,
		OnEvent: func(ev reconcile.Event) { fmt.Fprintf(w, "  replica-b: %s %s %s\n", ev.Ref, ev.Kind, ev.Phase) },
	})
	if err != nil {
		return err
	}
	ctxB, cancelB := b.Context(ctx)
	defer cancelB()
	rec, err := engB.Recover(ctxB)
	if err != nil {
		return fmt.Errorf("replica-b's recovery: %w", err)
	}
	for _, op := range rec.Ops {
		fmt.Fprintf(w, "  replica-b recovered %s %s: %s -> %s\n", op.Ref, op.Kind, op.From, op.To)
	}
	for pass := 1; ; pass++ {
		rep, err := engB.ReconcileOnce(ctxB)
		if err != nil {
			return err
		}
		if rep.Converged() {
			fmt.Fprintf(w, "replica-b's pass %d: converged\n", pass)
			break
		}
		if pass == 5 {
			return fmt.Errorf("not converged after 5 passes:\n%s", rep)
		}
	}
	if err := srv.WaitIdle(ctx); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nthe fake Proxmox's tasks:\n")
	tasks := srv.Tasks()
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].UPID < tasks[j].UPID })
	count := map[string]int{}
	for _, t := range tasks {
		fmt.Fprintf(w, "  %-8s vm %s  %s\n", t.Type, t.ID, t.ExitStatus)
		count[t.Type+"/"+t.ID]++
	}
	twice := 0
	for k, c := range count {
		if c > 1 {
			fmt.Fprintf(w, "DONE TWICE: %s (%d tasks)\n", k, c)
			twice++
		}
	}
	for _, d := range desired {
		g, _ := srv.Guest(d.Ref)
		if !g.Running || g.Config["memory"] != "1024" {
			return fmt.Errorf("%s not converged: running %v, memory %s", d.Ref, g.Running, g.Config["memory"])
		}
	}
	if twice > 0 {
		return fmt.Errorf("%d changes were made twice", twice)
	}
	fmt.Fprintf(w, "all 6 VMs running with 1024 MiB; %d tasks, nothing done twice\n", len(tasks))
	return nil
}

func errOrNil(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// lockedWriter serializes writes to w, for output written from several
// goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
