package reconcile_test

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// eventLog collects OnEvent's events.
type eventLog struct {
	mu  sync.Mutex
	evs []reconcile.Event
}

func (l *eventLog) add(ev reconcile.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) last(phase string) []reconcile.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []reconcile.Event
	for _, ev := range l.evs {
		if ev.Phase == phase {
			out = append(out, ev)
		}
	}
	return out
}

func phaseSum(p reconcile.Phases) time.Duration {
	return p.Recover + p.Desired + p.List + p.Observe + p.Plan + p.Act
}

func TestReportPhases(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"memory": "4096"}})

	tests := []struct {
		name string
		run  func() (reconcile.Report, error)
		// zero lists the steps the pass does not take; every other step
		// talks to Proxmox or plans, and takes time.
		zero func(reconcile.Phases) []time.Duration
		why  string
	}{
		{"full pass that acts", func() (reconcile.Report, error) { return f.eng.ReconcileOnce(ctxT(t)) },
			func(p reconcile.Phases) []time.Duration { return nil },
			"every step runs: recovery, the desired state, the list, the reads, the plan, the actions"},
		{"targeted pass", func() (reconcile.Report, error) { return f.eng.ReconcileGuests(ctxT(t), qemu(100)) },
			func(p reconcile.Phases) []time.Duration { return []time.Duration{p.List} },
			"a targeted pass reads its guests without listing the cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			p := rep.Phases
			if sum := phaseSum(p); sum > rep.Duration || sum <= 0 {
				t.Errorf("phases sum to %v, pass took %v: %+v (%s)", sum, rep.Duration, p, tt.why)
			}
			zero := tt.zero(p)
			for _, d := range zero {
				if d != 0 {
					t.Errorf("a step the pass does not take took %v: %+v (%s)", d, p, tt.why)
				}
			}
			for _, d := range []time.Duration{p.Desired, p.Observe, p.Plan, p.Act} {
				if d <= 0 {
					t.Errorf("a step took no time: %+v (%s)", p, tt.why)
				}
			}
			if len(zero) == 0 && p.List <= 0 {
				t.Errorf("the list took no time: %+v (%s)", p, tt.why)
			}
		})
	}

	// A pass that ends early still accounts for the steps it took.
	f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/cluster/resources", Status: 403, Times: 1})
	rep, err := f.eng.ReconcileOnce(ctxT(t))
	if err == nil {
		t.Fatal("a pass whose guest list was refused acted")
	}
	if p := rep.Phases; p.List <= 0 || p.Observe != 0 || p.Act != 0 || phaseSum(p) > rep.Duration {
		t.Errorf("aborted pass: phases %+v, duration %v", p, rep.Duration)
	}
}

// The last event of each operation says how it ended and how long it
// waited for its task; metrics count actions by kind and outcome from it.
func TestEventLastCarriesOutcome(t *testing.T) {
	var log eventLog
	f := newFixture(t, nil, func(c *reconcile.Config) { c.OnEvent = log.add })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "2048"}})
	f.desire(
		reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerRunning},
	)
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/101/status/start", Times: 1, TaskError: "boom"})
	f.pass()

	done, failed := log.last("done"), log.last("failed")
	if len(done) != 1 || len(failed) != 1 {
		t.Fatalf("got %d done and %d failed events, want one each", len(done), len(failed))
	}
	d, x := done[0], failed[0]
	if d.Ref != qemu(100) || d.Kind != reconcile.ActionStart || d.Outcome != reconcile.OutcomeSucceeded {
		t.Errorf("done event %+v", d)
	}
	if x.Ref != qemu(101) || x.Outcome != reconcile.OutcomeFailed {
		t.Errorf("failed event %+v", x)
	}
	for _, ev := range []reconcile.Event{d, x} {
		if ev.TaskWait <= 0 || ev.TaskWait > ev.Duration {
			t.Errorf("%s: task wait %v of %v; both ran a task", ev.Ref, ev.TaskWait, ev.Duration)
		}
	}
	for _, ev := range append(log.last("start"), log.last("task")...) {
		if ev.Outcome != "" || ev.Duration != 0 || ev.TaskWait != 0 {
			t.Errorf("%s event carries an outcome: %+v", ev.Phase, ev)
		}
	}
}

// An LXC configuration change is synchronous: its last event has no task
// wait.
func TestEventNoTaskNoWait(t *testing.T) {
	var log eventLog
	f := newFixture(t, nil, func(c *reconcile.Config) { c.OnEvent = log.add })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: lxc(200), Config: map[string]string{"memory": "1024"}})
	f.pass()
	done := log.last("done")
	if len(done) != 1 || done[0].Kind != reconcile.ActionSetConfig || done[0].TaskWait != 0 || done[0].Duration <= 0 {
		t.Fatalf("done events %+v", done)
	}
}

// A journal wrapped by journal.Observe is still one the engine takes: it
// keeps the capabilities NewEngine and Apply need, and sees every record.
func TestEngineTakesObservedJournal(t *testing.T) {
	fj, err := journal.OpenFile(filepath.Join(t.TempDir(), "ops.journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fj.Close() })
	var mu sync.Mutex
	states := map[journal.State]int{}
	j := journal.Observe(fj, func(ai journal.AppendInfo) {
		mu.Lock()
		states[ai.State]++
		mu.Unlock()
	})
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100})
	f.eng = f.newEngine(j)
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	f.pass()
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "stop-100", Ref: qemu(100), Kind: reconcile.ActionStop})
	if err != nil || res.State != journal.Succeeded {
		t.Fatalf("Apply through the observed journal: %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if states[journal.Started] != 2 || states[journal.Succeeded] != 2 || states[journal.TaskRunning] != 2 {
		t.Errorf("records seen by the observer: %v", states)
	}
}
