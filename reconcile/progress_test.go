package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// progressLog collects OnProgress calls.
type progressLog struct {
	mu     sync.Mutex
	events []reconcile.Progress
	// inside counts calls in progress, to catch two at once.
	inside, overlaps int
}

func (l *progressLog) add(p reconcile.Progress) {
	l.mu.Lock()
	l.inside++
	if l.inside > 1 {
		l.overlaps++
	}
	l.events = append(l.events, p)
	l.mu.Unlock()
	l.mu.Lock()
	l.inside--
	l.mu.Unlock()
}

func (l *progressLog) take() []reconcile.Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

func withProgress(l *progressLog) fixtureOpt {
	return func(c *reconcile.Config) { c.OnProgress = l.add }
}

var phaseOrder = []reconcile.Phase{reconcile.PhaseRecover, reconcile.PhaseList, reconcile.PhaseObserve,
	reconcile.PhasePlan, reconcile.PhaseAct, reconcile.PhaseDone}

// checkProgress checks the events of one pass against the contract of
// Config.OnProgress, and returns them grouped by phase.
func checkProgress(t *testing.T, evs []reconcile.Progress) map[reconcile.Phase][]reconcile.Progress {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no progress events")
	}
	by := map[reconcile.Phase][]reconcile.Progress{}
	var order []reconcile.Phase
	for i, p := range evs {
		if p.Pass != evs[0].Pass || p.Targeted != evs[0].Targeted || !p.Start.Equal(evs[0].Start) {
			t.Fatalf("event %d names another pass: %+v, first %+v", i, p, evs[0])
		}
		if p.Done < 0 || p.Done > p.Total {
			t.Fatalf("event %d: done %d of %d", i, p.Done, p.Total)
		}
		if p.Elapsed < 0 {
			t.Fatalf("event %d: elapsed %v", i, p.Elapsed)
		}
		if p.Err != nil && p.Phase != reconcile.PhaseDone {
			t.Fatalf("event %d: an error before the end: %+v", i, p)
		}
		if len(order) == 0 || order[len(order)-1] != p.Phase {
			if slices.Contains(order, p.Phase) {
				t.Fatalf("event %d: phase %s comes back: %v", i, p.Phase, order)
			}
			if len(order) > 0 && slices.Index(phaseOrder, p.Phase) < slices.Index(phaseOrder, order[len(order)-1]) {
				t.Fatalf("event %d: phase %s after %v", i, p.Phase, order)
			}
			order = append(order, p.Phase)
			if p.Done != 0 && p.Phase != reconcile.PhaseDone {
				t.Fatalf("event %d: phase %s starts at done %d", i, p.Phase, p.Done)
			}
		} else if prev := by[p.Phase][len(by[p.Phase])-1]; p.Done < prev.Done || p.Elapsed < prev.Elapsed {
			t.Fatalf("event %d: phase %s goes back: %+v after %+v", i, p.Phase, p, prev)
		}
		by[p.Phase] = append(by[p.Phase], p)
	}
	if order[len(order)-1] != reconcile.PhaseDone || len(by[reconcile.PhaseDone]) != 1 {
		t.Fatalf("the pass does not end with one done event: %v", order)
	}
	for ph, es := range by {
		if last := es[len(es)-1]; last.Done != last.Total {
			t.Errorf("phase %s ends at %d of %d", ph, last.Done, last.Total)
		}
	}
	return by
}

func phases(by map[reconcile.Phase][]reconcile.Progress) []reconcile.Phase {
	var out []reconcile.Phase
	for _, ph := range phaseOrder {
		if len(by[ph]) > 0 {
			out = append(out, ph)
		}
	}
	return out
}

// A pass reports its phases in order, each from done 0 to done == total,
// ending with a done event; a targeted pass lists nothing; a pass that
// cannot act still ends with done, carrying its error.
func TestProgressPhasesInOrder(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		opts   []fixtureOpt
		run    func(f *fixture) (reconcile.Report, error)
		want   []reconcile.Phase
		acting int // act-phase total
	}{
		{
			name:   "first pass",
			reason: "a new engine recovers first, then lists, observes, plans and acts",
			run:    func(f *fixture) (reconcile.Report, error) { return f.eng.ReconcileOnce(ctxT(f.t)) },
			want: []reconcile.Phase{reconcile.PhaseRecover, reconcile.PhaseList, reconcile.PhaseObserve,
				reconcile.PhasePlan, reconcile.PhaseAct, reconcile.PhaseDone},
			acting: 3,
		},
		{
			name:   "targeted pass",
			reason: "a targeted pass reads its guests without the list",
			run: func(f *fixture) (reconcile.Report, error) {
				return f.eng.ReconcileGuests(ctxT(f.t), qemu(100), qemu(101))
			},
			want: []reconcile.Phase{reconcile.PhaseRecover, reconcile.PhaseObserve, reconcile.PhasePlan,
				reconcile.PhaseAct, reconcile.PhaseDone},
			acting: 2,
		},
		{
			name:   "dry run",
			reason: "a dry run acts on nothing: its act phase is one event with nothing to do",
			opts:   []fixtureOpt{func(c *reconcile.Config) { c.DryRun = true; c.Journal = nil }},
			run:    func(f *fixture) (reconcile.Report, error) { return f.eng.ReconcileOnce(ctxT(f.t)) },
			want: []reconcile.Phase{reconcile.PhaseList, reconcile.PhaseObserve, reconcile.PhasePlan,
				reconcile.PhaseAct, reconcile.PhaseDone},
		},
		{
			name:   "guest list fails",
			reason: "a pass that cannot list the guests ends at once, with its error in the done event",
			run: func(f *fixture) (reconcile.Report, error) {
				f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/cluster/resources", Status: 403})
				return f.eng.ReconcileOnce(ctxT(f.t))
			},
			want: []reconcile.Phase{reconcile.PhaseRecover, reconcile.PhaseList, reconcile.PhaseDone},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log progressLog
			f := newFixture(t, nil, append(tc.opts, withProgress(&log))...)
			for i := range 4 {
				f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100 + i, Config: map[string]string{"cores": "1"}})
			}
			var ds []reconcile.Desired
			for i := range 3 {
				ds = append(ds, reconcile.Desired{Ref: qemu(100 + i), Config: map[string]string{"cores": "2"}})
			}
			f.desire(ds...)
			rep, err := tc.run(f)
			evs := log.take()
			by := checkProgress(t, evs)
			if got := phases(by); !slices.Equal(got, tc.want) {
				t.Fatalf("%s: phases %v, want %v", tc.reason, got, tc.want)
			}
			done := by[reconcile.PhaseDone][0]
			if done.Total != len(rep.Guests) || !errors.Is(done.Err, err) || (err == nil) != (done.Err == nil) {
				t.Errorf("%s: done event %+v for %d guests, error %v", tc.reason, done, len(rep.Guests), err)
			}
			if act := by[reconcile.PhaseAct]; len(act) > 0 && act[len(act)-1].Total != tc.acting {
				t.Errorf("%s: act total %d, want %d", tc.reason, act[len(act)-1].Total, tc.acting)
			}
			if l := by[reconcile.PhaseList]; len(l) > 0 && err == nil && l[len(l)-1].Total != rep.Listed {
				t.Errorf("list total %d, listed %d", l[len(l)-1].Total, rep.Listed)
			}
			if ob := by[reconcile.PhaseObserve]; len(ob) > 0 && ob[len(ob)-1].Total != len(rep.Guests) {
				t.Errorf("observe total %d, want %d", ob[len(ob)-1].Total, len(rep.Guests))
			}
			if log.overlaps != 0 {
				t.Errorf("%d calls overlapped", log.overlaps)
			}

			// The next pass has the next number, and no recover phase.
			if _, err := tc.run(f); err != nil && tc.name != "guest list fails" {
				t.Fatal(err)
			}
			next := checkProgress(t, log.take())
			if n := next[reconcile.PhaseDone][0].Pass; n != done.Pass+1 {
				t.Errorf("second pass numbered %d after %d", n, done.Pass)
			}
			if len(next[reconcile.PhaseRecover]) != 0 {
				t.Errorf("the second pass recovered again")
			}
		})
	}
}

// On a large fleet the observe and act phases report every hundredth,
// not every guest: at most 102 calls per phase, first and last included.
func TestProgressCoalescedOnLargeFleet(t *testing.T) {
	const n, acting = 2000, 300
	var log progressLog
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithRequestLogLimit(0)}, withProgress(&log),
		func(c *reconcile.Config) { c.Concurrency, c.NodeConcurrency = 16, 8 })
	ds := make([]reconcile.Desired, 0, n)
	for i := range n {
		ref := proxmox.Ref{Node: []string{"pve1", "pve2"}[i%2], Type: proxmox.LXC, VMID: 1000 + i}
		cores := "1"
		if i < acting {
			cores = "2" // drifted: one synchronous configuration change
		}
		f.add(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Config: map[string]string{"cores": cores}})
		ds = append(ds, reconcile.Desired{Ref: ref, Config: map[string]string{"cores": "1"}})
	}
	f.desire(ds...)
	rep := f.pass()
	if c := rep.Count(); c[reconcile.GuestChanged] != acting || c[reconcile.GuestInSync] != n-acting {
		t.Fatalf("outcomes %v", c)
	}
	by := checkProgress(t, log.take())
	for _, tc := range []struct {
		phase reconcile.Phase
		total int
	}{{reconcile.PhaseObserve, n}, {reconcile.PhaseAct, acting}} {
		es := by[tc.phase]
		if es[len(es)-1].Total != tc.total {
			t.Errorf("%s: total %d, want %d", tc.phase, es[len(es)-1].Total, tc.total)
		}
		// The first, one per hundredth, the last.
		if len(es) > 102 || len(es) < 50 {
			t.Errorf("%s: %d calls for %d guests, want at most 102 and not far fewer", tc.phase, len(es), tc.total)
		}
		step := (tc.total + 99) / 100
		for i := 1; i < len(es); i++ {
			if gap := es[i].Done - es[i-1].Done; gap == 0 {
				t.Errorf("%s: two calls at done %d", tc.phase, es[i].Done)
			} else if i < len(es)-1 && es[i].Done%step != 0 {
				t.Errorf("%s: a call at done %d, not a multiple of %d", tc.phase, es[i].Done, step)
			}
		}
	}
	for _, ph := range []reconcile.Phase{reconcile.PhaseList, reconcile.PhasePlan} {
		if k := len(by[ph]); k != 2 {
			t.Errorf("%s: %d calls, want a start and an end", ph, k)
		}
	}
}

// A phase with fewer guests than steps reports every guest.
func TestProgressSmallFleetReportsEachGuest(t *testing.T) {
	var log progressLog
	f := newFixture(t, nil, withProgress(&log))
	refs := fleet(f, []string{"pve1", "pve2"}, 7, reconcile.PowerStopped)
	f.pass()
	by := checkProgress(t, log.take())
	ob := by[reconcile.PhaseObserve]
	var dones []int
	for _, p := range ob {
		dones = append(dones, p.Done)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(dones, want) {
		t.Errorf("observe reported %v for %d guests, want %v", dones, len(refs), want)
	}
	if s := fmt.Sprint(by[reconcile.PhaseAct]); len(by[reconcile.PhaseAct]) != 1 || by[reconcile.PhaseAct][0].Total != 0 {
		t.Errorf("act with nothing to do: %s", s)
	}
}

// A pass whose context ends while acting counts the guests whose jobs
// never started as done too: the act phase still ends at done == total.
func TestProgressOfPassCancelledWhileActing(t *testing.T) {
	var log progressLog
	f := newFixture(t, nil, withProgress(&log), func(c *reconcile.Config) { c.Concurrency = 1 })
	for i := range 3 {
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100 + i, Config: map[string]string{"cores": "1"}})
	}
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: qemu(102), Power: reconcile.PowerRunning})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	arrived, held := arrival()
	// Whichever guest goes first holds the only slot of the queue.
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/pve1/qemu/*/status/start", Before: arrived, Wait: release})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { _, err := f.eng.ReconcileOnce(ctx); done <- err }()
	<-held
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("pass error %v", err)
	}
	by := checkProgress(t, log.take())
	act := by[reconcile.PhaseAct]
	if last := act[len(act)-1]; last.Total != 3 {
		t.Errorf("act events %+v", act)
	}
	if s := f.eng.Status(); s.InFlight != 0 || s.Pass != nil {
		t.Errorf("status after the cancelled pass: %+v", s)
	}
}
