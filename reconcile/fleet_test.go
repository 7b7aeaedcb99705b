package reconcile_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/queue"
	"github.com/guestward/guestward/reconcile"
)

// fleet adds n stopped QEMU guests, spread over the nodes in turn, and
// declares each with its config (and power, if not "").
func fleet(f *fixture, nodes []string, n int, power reconcile.Power) []proxmox.Ref {
	f.t.Helper()
	var refs []proxmox.Ref
	var ds []reconcile.Desired
	for i := range n {
		ref := proxmox.Ref{Node: nodes[i%len(nodes)], Type: proxmox.QEMU, VMID: 100 + i}
		cfg := map[string]string{"name": fmt.Sprintf("vm%d", i), "cores": "2", "memory": "1024"}
		f.add(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Config: cfg})
		ds = append(ds, reconcile.Desired{Ref: ref, Power: power, Config: map[string]string{"cores": "2", "memory": "1024"}})
		refs = append(refs, ref)
	}
	f.desire(ds...)
	return refs
}

// requestsBy counts the fake's logged requests by "METHOD kind", where kind
// is the last path element ("pending", "resources", "current", ...).
func requestsBy(srv *proxmoxtest.Server) map[string]int {
	m := map[string]int{}
	for _, r := range srv.Requests() {
		p := r.Path
		m[r.Method+" "+p[strings.LastIndex(p, "/")+1:]]++
	}
	return m
}

// A pass that finds nothing to do sends the list and one request per
// declared guest: the pending endpoint, which carries configuration,
// digest, lock and pending changes.
func TestNoopPassSendsOneRequestPerGuest(t *testing.T) {
	f := newFixture(t, nil)
	refs := fleet(f, []string{"pve1", "pve2"}, 20, reconcile.PowerStopped)
	f.pass()
	f.srv.ResetRequests()
	rep := f.pass()
	if c := rep.Count(); c[reconcile.GuestInSync] != len(refs) {
		t.Fatalf("outcomes %v", c)
	}
	got := requestsBy(f.srv)
	want := map[string]int{"GET resources": 1, "GET pending": len(refs)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests %v, want %v", got, want)
	}
}

// The list's power state can lag by seconds. A stale one must never cause
// a wrong action: the engine re-reads the exact state before acting.
func TestStaleListNeverCausesWrongAction(t *testing.T) {
	f := newFixture(t, nil)
	running := qemu(100)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"cores": "2"}})
	locked := qemu(101)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"cores": "2"}})
	f.desire(
		reconcile.Desired{Ref: running, Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: locked, Power: reconcile.PowerRunning},
	)
	f.srv.SetResourcesStale(true) // the list still shows 100 running, 101 unlocked
	if err := f.srv.SetRunning(running, false); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.SetRunning(running, true); err != nil { // restarted: running again, the list never saw it stop
		t.Fatal(err)
	}
	// Now make the list lie the other way: the guest stops, the list says running.
	if err := f.srv.SetRunning(running, false); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.SetLock(locked, "backup"); err != nil {
		t.Fatal(err)
	}
	f.desire(
		reconcile.Desired{Ref: running, Power: reconcile.PowerStopped}, // the list says running: a stop is planned, and must not be sent
		reconcile.Desired{Ref: locked, Power: reconcile.PowerRunning},  // locked now: no start
	)
	f.srv.ResetRequests()
	rep := f.pass()
	if g := outcome(rep, running); g.Outcome != reconcile.GuestInSync {
		t.Errorf("%s: %s %s %q, want in sync after the exact re-read", running, g.Outcome, g.Reason, g.Detail)
	}
	if g := outcome(rep, locked); g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipLocked {
		t.Errorf("%s: %s %s %q, want skipped as locked", locked, g.Outcome, g.Reason, g.Detail)
	}
	if n := f.writes(); n != 0 {
		t.Errorf("%d writes sent on a stale list: %v", n, requestsBy(f.srv))
	}
}

// The other way round: the list says stopped, the guest runs. A start is
// planned from the list, and the re-read finds nothing to do.
func TestStaleListStartOfRunningGuestIsNoop(t *testing.T) {
	f := newFixture(t, nil)
	ref := qemu(100)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "2"}})
	f.desire(reconcile.Desired{Ref: ref, Power: reconcile.PowerRunning})
	f.srv.SetResourcesStale(true)
	if err := f.srv.SetRunning(ref, true); err != nil {
		t.Fatal(err)
	}
	f.srv.ResetRequests()
	rep := f.pass()
	if g := outcome(rep, ref); g.Outcome != reconcile.GuestInSync {
		t.Errorf("%s %s %q, want in sync", g.Outcome, g.Reason, g.Detail)
	}
	if n := f.writes(); n != 0 {
		t.Errorf("%d writes: %v", n, requestsBy(f.srv))
	}
}

// A drifted guest costs its pending read, one exact re-read, and its
// action's requests.
func TestDriftPassRequests(t *testing.T) {
	f := newFixture(t, nil)
	refs := fleet(f, []string{"pve1", "pve2"}, 6, reconcile.PowerStopped)
	if err := f.srv.UpdateConfig(refs[0], map[string]string{"cores": "8"}, nil); err != nil {
		t.Fatal(err)
	}
	f.srv.ResetRequests()
	rep := f.pass()
	if c := rep.Count(); c[reconcile.GuestChanged] != 1 || c[reconcile.GuestInSync] != 5 {
		t.Fatalf("outcomes %v", c)
	}
	got := requestsBy(f.srv)
	if got["GET current"] != 1 || got["GET pending"] != 6 || got["GET resources"] != 1 || got["POST config"] != 1 {
		t.Errorf("requests %v: want the list, 6 pending reads, 1 status re-read, 1 config write (and its task polls)", got)
	}
	if f.guest(refs[0]).Config["cores"] != "2" {
		t.Errorf("cores not restored")
	}
}

// With NodeConcurrency n, no node ever sees more than n of the engine's
// requests at once: observation, actions and task polling included.
func TestNodeConcurrencyBoundsRequestsInFlight(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprint("n=", n), func(t *testing.T) {
			nodes := []string{"pve1", "pve2", "pve3"}
			f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithNodes(nodes...)}, func(c *reconcile.Config) {
				c.Concurrency, c.NodeConcurrency = 16, n
			})
			refs := fleet(f, nodes, 30, reconcile.PowerRunning) // every guest is started: actions and polling
			rep := f.pass()
			if c := rep.Count(); c[reconcile.GuestChanged] != len(refs) {
				t.Fatalf("outcomes %v", c)
			}
			f.pass()
			load := f.srv.NodeLoad()
			for _, node := range nodes {
				if l := load[node]; l.MaxInFlight > n || l.Requests == 0 {
					t.Errorf("node %s: %+v, want at most %d in flight", node, l, n)
				}
			}
		})
	}
}

// A slow node does not hold back the others: while every request to one
// node hangs, the other nodes' guests are read, and the pass finishes once
// the slow node answers.
func TestSlowNodeDoesNotHoldBackOthers(t *testing.T) {
	nodes := []string{"pve1", "pve2", "pve3"}
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithNodes(nodes...)}, func(c *reconcile.Config) {
		c.Concurrency, c.NodeConcurrency = 4, 2
	})
	refs := fleet(f, nodes, 30, "")
	release := make(chan struct{})
	f.srv.Inject(proxmoxtest.Fault{Guest: proxmox.Ref{Node: "pve3"}, Wait: release})
	var (
		rep  reconcile.Report
		err  error
		done = make(chan struct{})
	)
	go func() { defer close(done); rep, err = f.eng.ReconcileOnce(ctxT(t)) }()
	fast := 0
	for _, r := range refs {
		if r.Node != "pve3" {
			fast++
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		load := f.srv.NodeLoad()
		if load["pve1"].Requests+load["pve2"].Requests >= fast {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("the other nodes' guests were not read while pve3 hung: %+v", load)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Count(); c[reconcile.GuestInSync] != len(refs) {
		t.Errorf("outcomes %v", c)
	}
}

// A targeted pass reads and acts on just the named declared guests, with
// no cluster list.
func TestReconcileGuests(t *testing.T) {
	f := newFixture(t, nil)
	refs := fleet(f, []string{"pve1", "pve2"}, 6, reconcile.PowerRunning)
	gone := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 999}
	moved := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 998}
	f.add(proxmoxtest.GuestSpec{Node: "pve2", Type: proxmox.QEMU, VMID: 998})
	ds, _ := f.prov.Desired(ctxT(t))
	ds = append(ds, reconcile.Desired{Ref: gone, Power: reconcile.PowerRunning}, reconcile.Desired{Ref: moved, Power: reconcile.PowerRunning})
	f.desire(ds...)
	f.srv.ResetRequests()
	undeclared := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 5000}
	rep, err := f.eng.ReconcileGuests(ctxT(t), refs[1], refs[4], gone, moved, undeclared)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Guests) != 4 || rep.Listed != 0 {
		t.Fatalf("%d guests reported, listed %d: %+v", len(rep.Guests), rep.Listed, rep.Guests)
	}
	for _, r := range []proxmox.Ref{refs[1], refs[4]} {
		if g := outcome(rep, r); g.Outcome != reconcile.GuestChanged || !f.guest(r).Running {
			t.Errorf("%s: %s %q", r, g.Outcome, g.Detail)
		}
	}
	for _, r := range []proxmox.Ref{gone, moved} {
		if g := outcome(rep, r); g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipMissing {
			t.Errorf("%s: %s %s %q, want skipped as missing", r, g.Outcome, g.Reason, g.Detail)
		}
	}
	for _, r := range []proxmox.Ref{refs[0], refs[2], refs[3], refs[5]} {
		if f.guest(r).Running {
			t.Errorf("%s was started by a pass that did not name it", r)
		}
	}
	got := requestsBy(f.srv)
	if got["GET resources"] != 0 {
		t.Errorf("a targeted pass listed the cluster: %v", got)
	}
	for _, r := range f.srv.Requests() {
		if strings.Contains(r.Path, "/qemu/") && !strings.Contains(r.Path, "/qemu/101/") && !strings.Contains(r.Path, "/qemu/104/") &&
			!strings.Contains(r.Path, "/qemu/999/") && !strings.Contains(r.Path, "/qemu/998/") {
			t.Errorf("request for a guest not named: %s %s", r.Method, r.Path)
		}
	}
	if rep, err := f.eng.ReconcileGuests(ctxT(t)); err != nil || len(rep.Guests) != 0 {
		t.Errorf("no refs: %d guests, %v", len(rep.Guests), err)
	}
}

// Run turns a trigger naming guests into a targeted pass over them, and a
// trigger without guests into a full pass.
func TestRunTriggerNamedGuests(t *testing.T) {
	reports := make(chan reconcile.Report, 16)
	f := newFixture(t, nil, func(c *reconcile.Config) {
		c.Interval, c.Jitter = time.Hour, -1
		c.OnReport = func(r reconcile.Report) { reports <- r }
	})
	refs := fleet(f, []string{"pve1", "pve2"}, 4, reconcile.PowerStopped)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.eng.Run(ctx) }()
	next := func() reconcile.Report {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no pass")
			return reconcile.Report{}
		}
	}
	if r := next(); len(r.Guests) != 4 || r.Listed == 0 {
		t.Fatalf("first pass: %d guests, listed %d", len(r.Guests), r.Listed)
	}
	f.eng.Trigger(refs[2])
	if r := next(); len(r.Guests) != 1 || r.Guests[0].Ref != refs[2] || r.Listed != 0 {
		t.Fatalf("targeted pass: %+v listed %d", r.Guests, r.Listed)
	}
	f.eng.Trigger()
	if r := next(); len(r.Guests) != 4 {
		t.Fatalf("full pass after Trigger(): %d guests", len(r.Guests))
	}

	// Guests named while a pass runs are taken together by the next one.
	arrived, release := make(chan struct{}), make(chan struct{})
	f.srv.Inject(proxmoxtest.Fault{Guest: refs[0], Times: 1, Before: func() { close(arrived) }, Wait: release})
	f.eng.Trigger(refs[0])
	<-arrived
	f.eng.Trigger(refs[1])
	f.eng.Trigger(refs[3], refs[1])
	close(release)
	if r := next(); len(r.Guests) != 1 || r.Guests[0].Ref != refs[0] {
		t.Fatalf("pass held up: %+v", r.Guests)
	}
	if r := next(); len(r.Guests) != 2 || r.Guests[0].Ref != refs[1] || r.Guests[1].Ref != refs[3] {
		t.Fatalf("pass after triggers during a pass: %+v", r.Guests)
	}
	select {
	case r := <-reports:
		t.Fatalf("an extra pass ran: %+v", r.Guests)
	default:
	}
	cancel()
	<-done
}

// Two engines sharing one queue each report every guest of their pass: a
// job of one never stands in for the other's.
func TestEnginesSharingAQueueReportEveryGuest(t *testing.T) {
	f := newFixture(t, nil)
	ref := qemu(100)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "2"}})
	f.desire(reconcile.Desired{Ref: ref, Config: map[string]string{"cores": "4"}})
	q := queue.New[int]()
	hold := make(chan struct{})
	busy := make(chan struct{})
	blocker, err := q.Submit(context.Background(), 100, func(context.Context) error { close(busy); <-hold; return nil })
	if err != nil {
		t.Fatal(err)
	}
	<-busy
	var engines []*reconcile.Engine
	for range 2 {
		engines = append(engines, f.newEngine(journal.NewMemory(), func(c *reconcile.Config) { c.Queue = q }))
	}
	var wg sync.WaitGroup
	reps := make([]reconcile.Report, 2)
	for i, e := range engines {
		wg.Go(func() {
			var err error
			reps[i], err = e.ReconcileOnce(ctxT(t))
			if err != nil {
				t.Error(err)
			}
		})
	}
	// Both passes have queued their job behind the blocker before it ends.
	deadline := time.Now().Add(20 * time.Second)
	for len(f.srv.Requests()) < 4 { // two lists, two pending reads
		if time.Now().After(deadline) {
			t.Fatal("passes did not reach the queue")
		}
		time.Sleep(time.Millisecond)
	}
	// Both jobs wait behind the blocker (with coalescing, the second
	// would replace the first, and Waiting would stay at one).
	for wait := time.Now().Add(5 * time.Second); q.Stats().Waiting < 2 && time.Now().Before(wait); {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	_ = blocker
	for i, rep := range reps {
		if g := outcome(rep, ref); g.Outcome == reconcile.GuestInterrupted || g.Outcome == "" {
			t.Errorf("engine %d: %s %q", i, g.Outcome, g.Detail)
		}
	}
}
