package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The one-shot path is as guarded as a pass: the policy sees the guest as
// observed, not a bare reference.
func TestApplyPolicySeesTheObservedGuest(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []reconcile.Observed
	)
	f := newFixture(t, nil, func(c *reconcile.Config) {
		c.Policy = func(_ context.Context, _ reconcile.Action, g reconcile.Observed) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, g)
			return nil
		}
	})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true,
		Config: map[string]string{"name": "web-1", "memory": "512", "tags": "prod;web"}, Pending: map[string]string{"cores": "4"}})
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionReboot})
	if err != nil || !res.Applied() {
		t.Fatalf("%+v %v", res, err)
	}
	if len(seen) != 1 {
		t.Fatalf("the policy was asked %d times", len(seen))
	}
	g := seen[0]
	if g.Ref != qemu(100) || g.Status != "running" || g.Name != "web-1" || g.Config["memory"] != "512" || g.Digest == "" ||
		len(g.Pending) != 1 || g.Pending[0].Key != "cores" || strings.Join(g.Tags, ",") != "prod,web" {
		t.Fatalf("the policy saw %+v", g)
	}
}

// A guest that cannot be observed is refused before anything is journaled,
// with an error that keeps the class, and the key stays unused.
func TestApplyRefusesAGuestItCannotObserve(t *testing.T) {
	for _, c := range []struct {
		name  string
		ref   proxmox.Ref
		setup func(f *fixture)
		class error
	}{
		{"missing", qemu(999), nil, proxmox.ErrNotFound},
		{"wrong node", proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 100}, nil, proxmox.ErrNotFound},
		{"wrong type", lxc(100), nil, proxmox.ErrNotFound},
		{"node does not answer", qemu(100), func(f *fixture) {
			f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/pve1/qemu/100/status/current", Status: 595, Message: "Connection refused"})
		}, proxmox.ErrTransient},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
			if c.setup != nil {
				c.setup(f)
			}
			shot := reconcile.OneShot{Key: "k", Ref: c.ref, Kind: reconcile.ActionStart}
			res, err := f.eng.Apply(ctxT(t), shot)
			if !errors.Is(err, reconcile.ErrNotObserved) || !errors.Is(err, c.class) {
				t.Fatalf("got %+v, %v; want ErrNotObserved and %v", res, err, c.class)
			}
			if res.Key != "k" || res.Ref != c.ref || res.Kind != reconcile.ActionStart || res.OpID != "" || res.State != "" {
				t.Errorf("result %+v", res)
			}
			if n := f.writes(); n != 0 {
				t.Errorf("%d writes reached Proxmox", n)
			}
			if ops, _ := f.j.(*journal.MemoryJournal).Ops(ctxT(t)); len(ops) != 0 {
				t.Errorf("journaled: %+v", ops)
			}
			if _, ok, err := f.eng.Lookup(ctxT(t), "k"); ok || err != nil {
				t.Errorf("the key was used: %v %v", ok, err)
			}
		})
	}
}

func TestProtectTag(t *testing.T) {
	tagged := reconcile.Observed{Ref: qemu(100), Tags: []string{"web", "Prod"}}
	other := reconcile.Observed{Ref: qemu(101), Tags: []string{"production"}}
	kinds := []reconcile.ActionKind{reconcile.ActionStart, reconcile.ActionStop, reconcile.ActionShutdown,
		reconcile.ActionReboot, reconcile.ActionSetConfig, "resize", "some_kind_added_later"}
	for _, c := range []struct {
		name     string
		policy   reconcile.Policy
		g        reconcile.Observed
		vetoedBy map[reconcile.ActionKind]bool
	}{
		{"power only", reconcile.ProtectTag("prod", false), tagged,
			map[reconcile.ActionKind]bool{reconcile.ActionStop: true, reconcile.ActionShutdown: true, reconcile.ActionReboot: true}},
		{"power and config", reconcile.ProtectTag("prod", true), tagged,
			map[reconcile.ActionKind]bool{reconcile.ActionStop: true, reconcile.ActionShutdown: true, reconcile.ActionReboot: true,
				reconcile.ActionSetConfig: true, "resize": true, "some_kind_added_later": true}},
		{"the tag as Proxmox compares it: any case", reconcile.ProtectTag(" PROD ", true), tagged,
			map[reconcile.ActionKind]bool{reconcile.ActionStop: true, reconcile.ActionShutdown: true, reconcile.ActionReboot: true,
				reconcile.ActionSetConfig: true, "resize": true, "some_kind_added_later": true}},
		{"exact case: another tag", reconcile.ProtectTagExact("prod", true), tagged, nil},
		{"exact case: the tag", reconcile.ProtectTagExact("Prod", false), tagged,
			map[reconcile.ActionKind]bool{reconcile.ActionStop: true, reconcile.ActionShutdown: true, reconcile.ActionReboot: true}},
		{"a tag is a whole tag", reconcile.ProtectTag("prod", true), other, nil},
		{"an empty tag protects nothing", reconcile.ProtectTag("", true), reconcile.Observed{Ref: qemu(100), Tags: []string{""}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, k := range kinds {
				err := c.policy(context.Background(), reconcile.Action{Kind: k, Ref: c.g.Ref}, c.g)
				if (err != nil) != c.vetoedBy[k] {
					t.Errorf("%s: %v, want vetoed=%v", k, err, c.vetoedBy[k])
				}
			}
		})
	}
}

// ProtectTag guards one-shot operations too, with the tags Proxmox reports.
func TestApplyProtectTagVetoesTakingAProtectedGuestDown(t *testing.T) {
	f := newFixture(t, nil, func(c *reconcile.Config) { c.Policy = reconcile.ProtectTag("prod", false) })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"memory": "512", "tags": "prod"}})
	for _, k := range []reconcile.ActionKind{reconcile.ActionShutdown, reconcile.ActionReboot, reconcile.ActionStop} {
		_, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "down-" + string(k), Ref: qemu(100), Kind: k})
		if !errors.Is(err, reconcile.ErrVetoed) {
			t.Errorf("%s: %v", k, err)
		}
	}
	if n := f.writes(); n != 0 {
		t.Fatalf("%d writes reached Proxmox", n)
	}
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "mem", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}})
	if err != nil || !res.Applied() {
		t.Fatalf("a configuration change without noConfig: %+v %v", res, err)
	}
}

// An idempotency key names one request: reusing it for another one is
// refused and sends nothing; the same request is a replay.
func TestApplyKeyReusedForAnotherRequest(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512", "onboot": "1", "cores": "1"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 102, Node: "pve2", Config: map[string]string{"memory": "512"}})
	cfg, err := f.client.Config(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	first := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"memory": "1024"}, Delete: []string{"onboot", "cores"}, Digest: cfg.Digest}
	res, err := f.eng.Apply(ctxT(t), first)
	if err != nil || !res.Applied() {
		t.Fatalf("first: %+v %v", res, err)
	}
	writes := f.writes()
	with := func(change func(s *reconcile.OneShot)) reconcile.OneShot {
		s := first
		s.Set = map[string]string{"memory": "1024"}
		s.Delete = []string{"onboot", "cores"}
		change(&s)
		return s
	}
	for name, s := range map[string]reconcile.OneShot{
		"another vmid":              with(func(s *reconcile.OneShot) { s.Ref = qemu(101) }),
		"another node":              with(func(s *reconcile.OneShot) { s.Ref.Node = "pve2" }),
		"another type":              with(func(s *reconcile.OneShot) { s.Ref = lxc(100) }),
		"another kind":              {Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart},
		"another value":             with(func(s *reconcile.OneShot) { s.Set["memory"] = "2048" }),
		"another set":               with(func(s *reconcile.OneShot) { s.Set["cores"] = "2"; s.Delete = []string{"onboot"} }),
		"fewer deletes":             with(func(s *reconcile.OneShot) { s.Delete = []string{"onboot"} }),
		"no digest":                 with(func(s *reconcile.OneShot) { s.Digest = "" }),
		"a shutdown with a timeout": {Key: "k", Ref: qemu(100), Kind: reconcile.ActionShutdown, Timeout: 30 * time.Second},
	} {
		got, err := f.eng.Apply(ctxT(t), s)
		if !errors.Is(err, reconcile.ErrKeyConflict) {
			t.Errorf("%s: %+v %v", name, got, err)
		}
	}
	if n := f.writes() - writes; n != 0 {
		t.Fatalf("the refused requests made %d writes", n)
	}
	// The same request, its deletions in another order, is a replay.
	again := with(func(s *reconcile.OneShot) { s.Delete = []string{"cores", "onboot"} })
	got, err := f.eng.Apply(ctxT(t), again)
	if err != nil || !got.Replayed || got.OpID != res.OpID {
		t.Fatalf("the same request: %+v %v", got, err)
	}

	// A shutdown's timeout is part of its request.
	down := reconcile.OneShot{Key: "down", Ref: qemu(101), Kind: reconcile.ActionShutdown, Timeout: 30 * time.Second}
	if _, err := f.eng.Apply(ctxT(t), down); err != nil {
		t.Fatal(err)
	}
	down.Timeout = time.Minute
	if _, err := f.eng.Apply(ctxT(t), down); !errors.Is(err, reconcile.ErrKeyConflict) {
		t.Fatalf("another timeout: %v", err)
	}
}

// A call that reuses the key of a call still running, for another
// request, is refused at once rather than handed the other's result.
func TestApplyKeyReusedWhileItsCallRuns(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	release := make(chan struct{})
	arrived := make(chan struct{})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1,
		Before: func() { close(arrived) }, Wait: release})
	done := make(chan error, 1)
	go func() {
		_, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart})
		done <- err
	}()
	<-arrived
	_, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStop})
	close(release)
	if !errors.Is(err, reconcile.ErrKeyConflict) {
		t.Fatalf("%v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A Result says which request it answers, also when it is replayed, and
// its JSON form spells the guest out.
func TestApplyResultNamesItsRequest(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	shot := reconcile.OneShot{Key: "ticket-9", Ref: lxc(200), Kind: reconcile.ActionStart}
	for i := range 2 {
		res, err := f.eng.Apply(ctxT(t), shot)
		if err != nil || res.Key != "ticket-9" || res.Ref != lxc(200) || res.Kind != reconcile.ActionStart ||
			res.Attempt != 1 || res.Replayed != (i == 1) {
			t.Fatalf("call %d: %+v %v", i, res, err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		var js map[string]any
		if err := json.Unmarshal(b, &js); err != nil {
			t.Fatal(err)
		}
		if js["guest"] != "pve1/lxc/200" || js["kind"] != "start" || js["idemp_key"] != "ticket-9" || js["op_id"] != res.OpID {
			t.Fatalf("JSON %s", b)
		}
	}
	looked, ok, err := f.eng.Lookup(ctxT(t), "ticket-9")
	if err != nil || !ok || looked.Ref != lxc(200) || looked.Kind != reconcile.ActionStart || !looked.Applied() {
		t.Fatalf("Lookup: %+v %v %v", looked, ok, err)
	}
	if _, ok, err := f.eng.Lookup(ctxT(t), "never-used"); ok || err != nil {
		t.Fatalf("Lookup of a new key: %v %v", ok, err)
	}
}

// LookupRequest answers for a request known in full and runs nothing: the
// recorded outcome for the same request, ErrKeyConflict for another one on
// the same key (the same guest and kind with other parameters included),
// nothing for an unused key, ErrInvalidOneShot for an invalid request.
func TestLookupRequest(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})
	set := reconcile.OneShot{Key: "ticket-7", Ref: lxc(200), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"memory": "1024"}, Delete: []string{"description", "cores"}}
	first, err := f.eng.Apply(ctxT(t), set)
	if err != nil {
		t.Fatal(err)
	}
	writes := f.writes()
	same := set
	same.Delete = []string{"cores", "description"} // the same request
	same.AllowIrreversible = true                  // not part of its identity
	got, ok, err := f.eng.LookupRequest(ctxT(t), same)
	if err != nil || !ok || got.OpID != first.OpID || !got.Replayed || !got.Applied() {
		t.Fatalf("the same request: %+v %v %v", got, ok, err)
	}
	with := func(change func(s *reconcile.OneShot)) reconcile.OneShot {
		s := set
		s.Set = map[string]string{"memory": "1024"}
		change(&s)
		return s
	}
	for name, s := range map[string]reconcile.OneShot{
		"other value":   with(func(s *reconcile.OneShot) { s.Set["memory"] = "2048" }),
		"more options":  with(func(s *reconcile.OneShot) { s.Set["swap"] = "0" }),
		"fewer deletes": with(func(s *reconcile.OneShot) { s.Delete = []string{"cores"} }),
		"a digest":      with(func(s *reconcile.OneShot) { s.Digest = strings.Repeat("a", 40) }),
		"other kind":    with(func(s *reconcile.OneShot) { s.Kind = reconcile.ActionStart; s.Set, s.Delete = nil, nil }),
		"other guest":   with(func(s *reconcile.OneShot) { s.Ref.VMID = 201 }),
	} {
		if _, _, err := f.eng.LookupRequest(ctxT(t), s); !errors.Is(err, reconcile.ErrKeyConflict) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, ok, err := f.eng.LookupRequest(ctxT(t), with(func(s *reconcile.OneShot) { s.Key = "never-used" })); ok || err != nil {
		t.Errorf("an unused key: %v %v", ok, err)
	}
	if _, _, err := f.eng.LookupRequest(ctxT(t), with(func(s *reconcile.OneShot) { s.Kind = "destroy" })); !errors.Is(err, reconcile.ErrInvalidOneShot) {
		t.Errorf("an invalid request: %v", err)
	}
	if n := f.writes(); n != writes {
		t.Errorf("LookupRequest sent %d requests", n-writes)
	}
}

// Every validation error matches ErrInvalidOneShot; keys are bounded,
// valid UTF-8, without control characters or white space at the ends.
func TestOneShotValidation(t *testing.T) {
	ok := reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart}
	with := func(change func(s *reconcile.OneShot)) reconcile.OneShot { s := ok; change(&s); return s }
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]reconcile.OneShot{
		"no key":                 with(func(s *reconcile.OneShot) { s.Key = "" }),
		"key too long":           with(func(s *reconcile.OneShot) { s.Key = strings.Repeat("k", reconcile.MaxKeyLen+1) }),
		"key not UTF-8":          with(func(s *reconcile.OneShot) { s.Key = "caf\xe9" }),
		"key with a newline":     with(func(s *reconcile.OneShot) { s.Key = "ticket-1\n" }),
		"key with a tab inside":  with(func(s *reconcile.OneShot) { s.Key = "ticket\t1" }),
		"key with a NUL":         with(func(s *reconcile.OneShot) { s.Key = "ticket\x001" }),
		"key like an attempt":    with(func(s *reconcile.OneShot) { s.Key = "ticket\x1fattempt=2" }),
		"key with a C1 control":  with(func(s *reconcile.OneShot) { s.Key = "ticket\u00851" }),
		"key with leading space": with(func(s *reconcile.OneShot) { s.Key = " ticket-1" }),
		"key with trailing NBSP": with(func(s *reconcile.OneShot) { s.Key = "ticket-1\u00a0" }),
		"bad ref":                with(func(s *reconcile.OneShot) { s.Ref.Type = "kvm" }),
		"unknown kind":           with(func(s *reconcile.OneShot) { s.Kind = "destroy" }),
		"resize":                 with(func(s *reconcile.OneShot) { s.Kind = "resize" }),
		"set on start":           with(func(s *reconcile.OneShot) { s.Set = map[string]string{"memory": "1"} }),
		"empty change":           with(func(s *reconcile.OneShot) { s.Kind = reconcile.ActionSetConfig }),
		"timeout on start":       with(func(s *reconcile.OneShot) { s.Timeout = time.Second }),
		"negative timeout":       with(func(s *reconcile.OneShot) { s.Kind = reconcile.ActionShutdown; s.Timeout = -time.Second }),
		"timeout past Proxmox's": with(func(s *reconcile.OneShot) {
			s.Kind = reconcile.ActionShutdown
			s.Timeout = proxmox.MaxShutdownTimeout + time.Second
		}),
		"fractional timeout": with(func(s *reconcile.OneShot) { s.Kind = reconcile.ActionShutdown; s.Timeout = 1500 * time.Millisecond }),
	} {
		if err := s.Validate(); !errors.Is(err, reconcile.ErrInvalidOneShot) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := with(func(s *reconcile.OneShot) { s.Ref.VMID = 1 }).Validate(); !errors.Is(err, proxmox.ErrInvalidRef) {
		t.Errorf("a bad ref keeps its class: %v", err)
	}
	for _, key := range []string{strings.Repeat("k", reconcile.MaxKeyLen), "ticket 1", "Überweisung/42", "a:b@c"} {
		if err := with(func(s *reconcile.OneShot) { s.Key = key }).Validate(); err != nil {
			t.Errorf("key %q: %v", key, err)
		}
	}

	// Apply refuses them the same way, before anything else.
	f := newFixture(t, nil)
	if _, err := f.eng.Apply(ctxT(t), with(func(s *reconcile.OneShot) { s.Key = "k\n" })); !errors.Is(err, reconcile.ErrInvalidOneShot) {
		t.Fatalf("Apply: %v", err)
	}
	if _, _, err := f.eng.Lookup(ctxT(t), ""); !errors.Is(err, reconcile.ErrInvalidOneShot) {
		t.Fatalf("Lookup: %v", err)
	}
}

// deadlineCtx is a context whose deadline the test decides: once expire
// is called it is done, with context.DeadlineExceeded.
type deadlineCtx struct {
	context.Context
	once sync.Once
	done chan struct{}
}

func newDeadlineCtx(t *testing.T) *deadlineCtx {
	return &deadlineCtx{Context: ctxT(t), done: make(chan struct{})}
}

func (c *deadlineCtx) expire()               { c.once.Do(func() { close(c.done) }) }
func (c *deadlineCtx) Done() <-chan struct{} { return c.done }
func (c *deadlineCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// Apply's error keeps its cause: after a deadline, the error matches
// context.DeadlineExceeded and the Result tells the operation's state.
func TestApplyInterruptedByItsDeadline(t *testing.T) {
	f := newFixture(t, []proxmoxtest.Option{proxmoxtest.WithManualTasks()})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	tasks := make(chan reconcile.Event, 1)
	f.eng = f.newEngine(f.j, func(c *reconcile.Config) {
		c.OnEvent = func(ev reconcile.Event) {
			if ev.Phase == "task" {
				tasks <- ev
			}
		}
	})
	ctx := newDeadlineCtx(t)
	type answer struct {
		res reconcile.Result
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := f.eng.Apply(ctx, reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart})
		done <- answer{res, err}
	}()
	ev := <-tasks // the task is journaled, and awaited
	ctx.expire()
	a := <-done
	if !errors.Is(a.err, context.DeadlineExceeded) {
		t.Fatalf("error %v", a.err)
	}
	if a.res.State != journal.TaskRunning || a.res.OpID != ev.OpID || a.res.UPID != ev.UPID || a.res.Key != "k" {
		t.Fatalf("result %+v", a.res)
	}
}

// An operation stopped at one of the engine's crash points matches
// checkpoint.ErrInterrupted and the failpoint's error, and its Result holds
// the state the journal has.
func TestApplyInterruptedByACheckpoint(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	res, err := f.eng.Apply(crashAt(t, checkpoint.AfterIntent), reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart})
	if !errors.Is(err, checkpoint.ErrInterrupted) || !errors.Is(err, errCrash) || res.State != journal.Started || res.OpID == "" {
		t.Fatalf("%+v %v", res, err)
	}
}

// A failure caused by Proxmox keeps its class in Result.Err; a replay has
// the message only.
func TestApplyFailureKeepsItsClass(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Lock: "backup", Config: map[string]string{"memory": "512"}})

	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "digest", Ref: qemu(100), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"memory": "1024"}, Digest: strings.Repeat("0", 40)})
	if err != nil || res.State != journal.Failed || !errors.Is(res.Err, proxmox.ErrDigestMismatch) || res.Error != res.Err.Error() {
		t.Fatalf("stale digest: %+v %v", res, err)
	}
	res, err = f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "locked", Ref: qemu(101), Kind: reconcile.ActionStart})
	if err != nil || res.State != journal.Failed || !errors.Is(res.Err, proxmox.ErrLocked) || !errors.Is(res.Err, proxmox.ErrTaskFailed) {
		t.Fatalf("locked guest: %+v %v", res, err)
	}

	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, TaskError: "start failed: QEMU exited with code 1"})
	shot := reconcile.OneShot{Key: "boom", Ref: qemu(100), Kind: reconcile.ActionStart}
	res, err = f.eng.Apply(ctxT(t), shot)
	if err != nil || res.State != journal.Failed || res.KeyUnused || !errors.Is(res.Err, proxmox.ErrTaskFailed) {
		t.Fatalf("failed task: %+v %v", res, err)
	}
	again, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || !again.Replayed || again.Err == nil || again.Err.Error() != res.Error || errors.Is(again.Err, proxmox.ErrTaskFailed) {
		t.Fatalf("replay: %+v %v", again, err)
	}
}

// A pass's reports keep the class too: a veto matches ErrVetoed and the
// policy's error, a failure its proxmox class.
func TestPassActionReportsKeepTheClass(t *testing.T) {
	noStops := errors.New("no stops today")
	f := newFixture(t, nil, func(c *reconcile.Config) {
		c.Policy = func(_ context.Context, a reconcile.Action, _ reconcile.Observed) error {
			if a.Kind == reconcile.ActionStop {
				return noStops
			}
			return nil
		}
	})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/101/status/start", Times: 1, TaskError: "start failed: QEMU exited with code 1"})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerStopped}, reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerRunning})
	rep := f.pass()
	vetoed := outcome(rep, qemu(100)).Actions
	if len(vetoed) != 1 || !errors.Is(vetoed[0].Err, reconcile.ErrVetoed) || !errors.Is(vetoed[0].Err, noStops) || vetoed[0].Error != noStops.Error() {
		t.Fatalf("veto: %+v", vetoed)
	}
	failed := outcome(rep, qemu(101)).Actions
	if len(failed) != 1 || failed[0].Outcome != reconcile.OutcomeFailed || !errors.Is(failed[0].Err, proxmox.ErrTaskFailed) || failed[0].Error != failed[0].Err.Error() {
		t.Fatalf("failure: %+v", failed)
	}
}
