package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// driftedFleet adds guests in realistic states, Proxmox's own rewriting
// included, and declares what they should be.
func driftedFleet(f *fixture) {
	// Stopped, must run with more memory: config, then start.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{
		"name": "web1", "memory": "2048", "cores": "2", "tags": "web",
	}})
	// Running, must be stopped with 4 cores: stop, then config.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Running: true, Config: map[string]string{
		"name": "batch", "cores": "2",
	}})
	// Running; options that apply at once on a running guest.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 102, Running: true, Config: map[string]string{
		"name": "db", "onboot": "0", "tags": "db",
	}})
	// In sync once Proxmox's rewriting is understood: generated MAC, sorted
	// tags, re-printed disk, trimmed description.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 103, Running: true, Config: map[string]string{
		"name":        "cache",
		"net0":        "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1",
		"tags":        "cache;prod",
		"scsi0":       "local-lvm:vm-103-disk-0,iothread=1,size=32G",
		"description": "cache node",
	}})
	// Locked by a backup.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 104, Lock: "backup", Config: map[string]string{"memory": "1024"}})
	// Running with a change pending a restart.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 105, Running: true,
		Config: map[string]string{"memory": "1024"}, Pending: map[string]string{"memory": "2048"}})
	// A template cannot run.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 106, Template: true, Config: map[string]string{"memory": "512"}})
	// Containers: a synchronous config change, and a stop.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"hostname": "ct200", "memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 201, Running: true, Config: map[string]string{"hostname": "ct201"}})
	// Not declared: must not be touched.
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 900, Config: map[string]string{"memory": "64"}})

	f.desire(
		reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"memory": "4096", "tags": "web,prod"}},
		reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerStopped, Config: map[string]string{"cores": "4"}},
		reconcile.Desired{Ref: qemu(102), Config: map[string]string{"onboot": "1", "description": "primary db"}, Delete: []string{"tags"}},
		reconcile.Desired{Ref: qemu(103), Power: reconcile.PowerRunning, Config: map[string]string{
			"net0": "virtio,bridge=vmbr0,firewall=1", "tags": "prod cache",
			"scsi0": "local-lvm:vm-103-disk-0,size=32G,iothread=on", "description": "cache node\n\n",
		}},
		reconcile.Desired{Ref: qemu(104), Config: map[string]string{"memory": "2048"}},
		reconcile.Desired{Ref: qemu(105), Config: map[string]string{"cores": "4"}},
		reconcile.Desired{Ref: qemu(106), Power: reconcile.PowerRunning},
		reconcile.Desired{Ref: lxc(200), Config: map[string]string{"memory": "1024"}},
		reconcile.Desired{Ref: lxc(201), Power: reconcile.PowerStopped},
		reconcile.Desired{Ref: qemu(300), Power: reconcile.PowerRunning},
	)
}

func TestDriftedFleetConvergesInOnePassThenNoOp(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)

	rep := f.pass()
	want := map[proxmox.Ref]reconcile.GuestOutcome{
		qemu(100): reconcile.GuestChanged, qemu(101): reconcile.GuestChanged, qemu(102): reconcile.GuestChanged,
		qemu(103): reconcile.GuestInSync, qemu(104): reconcile.GuestSkipped, qemu(105): reconcile.GuestSkipped,
		qemu(106): reconcile.GuestSkipped, lxc(200): reconcile.GuestChanged, lxc(201): reconcile.GuestChanged,
		qemu(300): reconcile.GuestSkipped,
	}
	for ref, w := range want {
		if g := outcome(rep, ref); g.Outcome != w {
			t.Errorf("%s: %s (%s %s), want %s", ref, g.Outcome, g.Reason, g.Detail, w)
		}
	}
	reasons := map[proxmox.Ref]reconcile.SkipReason{
		qemu(104): reconcile.SkipLocked, qemu(105): reconcile.SkipPending,
		qemu(106): reconcile.SkipTemplate, qemu(300): reconcile.SkipMissing,
	}
	for ref, w := range reasons {
		if g := outcome(rep, ref); g.Reason != w {
			t.Errorf("%s: reason %q, want %q", ref, g.Reason, w)
		}
	}
	// Order around the config change.
	kinds := func(ref proxmox.Ref) string {
		var ks []string
		for _, a := range outcome(rep, ref).Actions {
			ks = append(ks, string(a.Action.Kind))
		}
		return strings.Join(ks, ",")
	}
	if k := kinds(qemu(100)); k != "set_config,start" {
		t.Errorf("guest 100 actions %s, want set_config,start", k)
	}
	if k := kinds(qemu(101)); k != "stop,set_config" {
		t.Errorf("guest 101 actions %s, want stop,set_config", k)
	}

	// The cluster now holds the declared state.
	if g := f.guest(qemu(100)); !g.Running || g.Config["memory"] != "4096" {
		t.Errorf("guest 100: running=%v memory=%q", g.Running, g.Config["memory"])
	}
	if g := f.guest(qemu(101)); g.Running || g.Config["cores"] != "4" {
		t.Errorf("guest 101: running=%v cores=%q", g.Running, g.Config["cores"])
	}
	if g := f.guest(qemu(102)); g.Config["onboot"] != "1" || g.Config["tags"] != "" || len(g.Pending)+len(g.PendingDelete) != 0 {
		t.Errorf("guest 102: %v", g.Config)
	}
	if g := f.guest(lxc(200)); g.Config["memory"] != "1024" {
		t.Errorf("ct 200: %v", g.Config)
	}
	if g := f.guest(qemu(900)); g.Config["memory"] != "64" {
		t.Errorf("an undeclared guest was touched: %v", g.Config)
	}
	inflight, err := f.j.InFlight(ctxT(t))
	if err != nil || len(inflight) != 0 {
		t.Fatalf("in flight after the pass: %v, %v", inflight, err)
	}

	// The second pass finds nothing to do, and sends nothing.
	before := f.writes()
	rep2 := f.pass()
	if n := f.writes() - before; n != 0 {
		t.Fatalf("second pass sent %d writes", n)
	}
	for _, g := range rep2.Guests {
		if g.Outcome != reconcile.GuestInSync && g.Outcome != reconcile.GuestSkipped {
			t.Errorf("second pass: %s %s %s", g.Ref, g.Outcome, g.Detail)
		}
	}
	if c := rep2.Count(); c[reconcile.GuestInSync] != 6 {
		t.Errorf("second pass counts %v, want 6 in sync", c)
	}
}

func TestEmptyProviderMakesNoRequests(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)
	e := f.newEngine(f.j, func(c *reconcile.Config) { c.Provider = reconcile.EmptyProvider{} })
	f.srv.ResetRequests()
	for range 3 {
		rep, err := e.ReconcileOnce(ctxT(t))
		if err != nil || len(rep.Guests) != 0 {
			t.Fatalf("pass: %+v %v", rep, err)
		}
	}
	if n := len(f.srv.Requests()); n != 0 {
		t.Fatalf("the empty provider caused %d requests", n)
	}
}

func TestDryRunSendsNothing(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)
	j := journal.NewMemory()
	e := f.newEngine(j, func(c *reconcile.Config) { c.DryRun = true })
	rep, err := e.ReconcileOnce(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := f.writes(); n != 0 {
		t.Fatalf("dry run sent %d writes", n)
	}
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestPlanned || len(g.Actions) != 2 {
		t.Fatalf("guest 100 in a dry run: %+v", g)
	}
	if inflight, _ := j.InFlight(ctxT(t)); len(inflight) != 0 {
		t.Fatal("dry run journaled")
	}
	if _, err := e.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}); err == nil {
		t.Fatal("Apply ran in dry-run mode")
	}
}

// Another writer changes the config between our read and our write: Proxmox
// refuses ours (digest), the other writer's change survives, and the next
// pass converges.
func TestDigestRaceEndsCleanlyAndNextPassConverges(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048", "cores": "1"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Config: map[string]string{"memory": "4096"}})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/config", Times: 1, Before: func() {
		if err := f.srv.UpdateConfig(qemu(100), map[string]string{"cores": "8"}, nil); err != nil {
			t.Error(err)
		}
	}})
	rep := f.pass()
	g := outcome(rep, qemu(100))
	if g.Outcome != reconcile.GuestConflict {
		t.Fatalf("outcome %s (%s), want conflict", g.Outcome, g.Detail)
	}
	if st := f.guest(qemu(100)); st.Config["memory"] != "2048" || st.Config["cores"] != "8" {
		t.Fatalf("after the race: %v", st.Config)
	}
	rep = f.pass()
	if g := outcome(rep, qemu(100)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("next pass: %s %s", g.Outcome, g.Detail)
	}
	if st := f.guest(qemu(100)); st.Config["memory"] != "4096" || st.Config["cores"] != "8" {
		t.Fatalf("the other writer's change was lost: %v", st.Config)
	}
}

func TestLockAppearingEndsCleanly(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: lxc(200), Config: map[string]string{"memory": "1024"}})
	f.srv.Inject(proxmoxtest.Fault{Method: "PUT", Path: "/nodes/*/lxc/200/config", Times: 1, Before: func() {
		if err := f.srv.SetLock(lxc(200), "backup"); err != nil {
			t.Error(err)
		}
	}})
	if g := outcome(f.pass(), lxc(200)); g.Outcome != reconcile.GuestConflict {
		t.Fatalf("outcome %s (%s), want conflict", g.Outcome, g.Detail)
	}
	if g := outcome(f.pass(), lxc(200)); g.Reason != reconcile.SkipLocked {
		t.Fatalf("while locked: %s %s", g.Outcome, g.Reason)
	}
	if err := f.srv.SetLock(lxc(200), ""); err != nil {
		t.Fatal(err)
	}
	if g := outcome(f.pass(), lxc(200)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("after unlock: %s %s", g.Outcome, g.Detail)
	}
}

func TestTransientErrorsAreRetried(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	// 595: the proxying node could not reach the guest's node, so nothing
	// ran. The client retries twice itself; the fourth refusal reaches the
	// engine, which tries again.
	h := f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 4, Status: 595, Message: "No route to host"})
	g := outcome(f.pass(), qemu(100))
	if g.Outcome != reconcile.GuestChanged || g.Actions[0].Attempts != 2 {
		t.Fatalf("outcome %s (%s), attempts %d", g.Outcome, g.Detail, g.Actions[0].Attempts)
	}
	if h.Hits() != 4 {
		t.Fatalf("fault hit %d times", h.Hits())
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d start tasks, want 1", n)
	}
}

func TestTaskFailureIsRecordedAndReported(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, TaskError: "start failed: QEMU exited with code 1"})
	g := outcome(f.pass(), qemu(100))
	if g.Outcome != reconcile.GuestFailed || !strings.Contains(g.Detail, "QEMU exited") {
		t.Fatalf("outcome %s (%s)", g.Outcome, g.Detail)
	}
	a := g.Actions[0]
	e, ok, err := f.j.Latest(ctxT(t), a.OpID)
	if err != nil || !ok || e.State != journal.Failed || e.UPID == "" || !strings.Contains(e.Error, "QEMU exited") {
		t.Fatalf("journal: %+v %v %v", e, ok, err)
	}
	if g := outcome(f.pass(), qemu(100)); g.Outcome != reconcile.GuestChanged {
		t.Fatalf("next pass: %s %s", g.Outcome, g.Detail)
	}
}

func TestPolicyVetoSendsNothing(t *testing.T) {
	f := newFixture(t, nil, func(c *reconcile.Config) { c.Policy = reconcile.ProtectTag("protected", false) })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"tags": "protected;db"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerStopped})
	g := outcome(f.pass(), qemu(100))
	if g.Outcome != reconcile.GuestVetoed || !strings.Contains(g.Detail, "protected") {
		t.Fatalf("outcome %s (%s)", g.Outcome, g.Detail)
	}
	if f.writes() != 0 || !f.guest(qemu(100)).Running {
		t.Fatal("a vetoed stop was sent")
	}
}

func TestEveryActionIsJournaledBeforeAndAfter(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)
	rep := f.pass()
	for _, g := range rep.Guests {
		for _, a := range g.Actions {
			e, ok, err := f.j.Latest(ctxT(t), a.OpID)
			if err != nil || !ok {
				t.Fatalf("%s %s: no journal record", g.Ref, a.Action.Kind)
			}
			if e.State != journal.Succeeded || e.VMID != g.Ref.VMID || e.Kind != string(a.Action.Kind) {
				t.Errorf("%s: %+v", g.Ref, e)
			}
			// QEMU changes and all power actions are tasks; an LXC config
			// change is synchronous and has none.
			sync := g.Ref.Type == proxmox.LXC && a.Action.Kind == reconcile.ActionSetConfig
			if (e.UPID == "") != sync {
				t.Errorf("%s %s: UPID %q", g.Ref, a.Action.Kind, e.UPID)
			}
		}
	}
}

func TestInvalidDesiredStateActsOnNothing(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)
	bad := &badProvider{ds: []reconcile.Desired{
		{Ref: qemu(100), Power: reconcile.PowerRunning},
		{Ref: qemu(100), Power: reconcile.PowerStopped},
	}}
	e := f.newEngine(f.j, func(c *reconcile.Config) { c.Provider = bad })
	_, err := e.ReconcileOnce(ctxT(t))
	if !errors.Is(err, reconcile.ErrPassAborted) || !errors.Is(err, reconcile.ErrInvalidDesired) {
		t.Fatalf("err = %v", err)
	}
	if f.writes() != 0 {
		t.Fatal("an invalid desired state caused writes")
	}
}

type badProvider struct{ ds []reconcile.Desired }

func (p *badProvider) Desired(context.Context) ([]reconcile.Desired, error) { return p.ds, nil }

func TestNewEngineRefusesBadConfig(t *testing.T) {
	f := newFixture(t, nil)
	for name, cfg := range map[string]reconcile.Config{
		"no proxmox":     {Journal: f.j},
		"no journal":     {Proxmox: f.client},
		"negative":       {Proxmox: f.client, Journal: f.j, Concurrency: -1},
		"jitter":         {Proxmox: f.client, Journal: f.j, Interval: 1, Jitter: 2},
		"retry inverted": {Proxmox: f.client, Journal: f.j, RetryMin: 2, RetryMax: 1},
	} {
		if _, err := reconcile.NewEngine(cfg); !errors.Is(err, reconcile.ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestReportRendersAndObservesOnlyDeclaredGuests(t *testing.T) {
	f := newFixture(t, nil)
	driftedFleet(f)
	rep := f.pass()
	text := rep.String()
	for _, s := range []string{
		"pve1/qemu/100: changed", "set_config succeeded (op ", "task UPID:pve1:",
		"pve1/qemu/104: skipped (locked): locked (backup)",
		"10 guests in ", "1 in sync, 5 changed, 4 skipped; 7 actions sent, 7 succeeded",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("report lacks %q:\n%s", s, text)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var js struct {
		Guests []struct {
			Guest, Outcome string
			Actions        []struct{ Outcome, UPID string }
		}
	}
	if err := json.Unmarshal(b, &js); err != nil || js.Guests[0].Guest != "pve1/qemu/100" || js.Guests[0].Outcome != "changed" {
		t.Fatalf("JSON report: %s %v", b, err)
	}
	// Only declared guests are read in detail; the guest list is read once.
	lists := 0
	for _, r := range f.srv.Requests() {
		if strings.Contains(r.Path, "/900/") {
			t.Errorf("an undeclared guest was read: %s %s", r.Method, r.Path)
		}
		if r.Path == "/cluster/resources" {
			lists++
		}
	}
	if lists != 1 {
		t.Errorf("the guest list was read %d times in one pass", lists)
	}
}
