package reconcile_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

func TestApplyRunsOnceAndReplays(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	shot := reconcile.OneShot{Key: "req-1", Ref: qemu(100), Kind: reconcile.ActionStart}

	res, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || !res.Applied() || res.Replayed || res.UPID == "" {
		t.Fatalf("first Apply: %+v %v", res, err)
	}
	again, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || !again.Replayed || again.OpID != res.OpID || !again.Applied() {
		t.Fatalf("second Apply: %+v %v", again, err)
	}
	// A new engine on the same journal (a restart) replays it too.
	res3, err := f.newEngine(f.j).Apply(ctxT(t), shot)
	if err != nil || !res3.Replayed || res3.OpID != res.OpID {
		t.Fatalf("after restart: %+v %v", res3, err)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d start tasks, want 1", n)
	}
}

func TestApplyConcurrentCallsShareOneRun(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	// Hold the start request until every caller is in.
	release := make(chan struct{})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, Wait: release})
	const callers = 16
	results := make([]reconcile.Result, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			results[i], errs[i] = f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "same", Ref: qemu(100), Kind: reconcile.ActionStart})
		}()
	}
	ready.Wait()
	close(release)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || results[i].OpID != results[0].OpID || !results[i].Applied() {
			t.Fatalf("caller %d: %+v %v (first %+v)", i, results[i], errs[i], results[0])
		}
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d start tasks for one key", n)
	}
}

func TestApplyFailureIsReplayedNotRetried(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Times: 1, TaskError: "boom"})
	shot := reconcile.OneShot{Key: "req-2", Ref: qemu(100), Kind: reconcile.ActionStart}
	res, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || res.State != journal.Failed || !strings.Contains(res.Error, "boom") {
		t.Fatalf("first: %+v %v", res, err)
	}
	res2, err := f.eng.Apply(ctxT(t), shot)
	if err != nil || !res2.Replayed || res2.State != journal.Failed || res2.OpID != res.OpID {
		t.Fatalf("second: %+v %v", res2, err)
	}
	if n := f.srv.TaskCount(qemu(100), "qmstart"); n != 1 {
		t.Fatalf("%d start tasks", n)
	}
	// A new key is a new attempt.
	res3, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "req-3", Ref: qemu(100), Kind: reconcile.ActionStart})
	if err != nil || !res3.Applied() {
		t.Fatalf("new key: %+v %v", res3, err)
	}
}

func TestApplyKinds(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Running: true, Config: map[string]string{"memory": "512"}})
	for i, s := range []reconcile.OneShot{
		{Ref: qemu(100), Kind: reconcile.ActionReboot},
		{Ref: qemu(100), Kind: reconcile.ActionShutdown, Timeout: 30e9},
		{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}},
		{Ref: lxc(200), Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "2048"}, Delete: []string{"swap"}},
		{Ref: lxc(200), Kind: reconcile.ActionStop},
		{Ref: lxc(200), Kind: reconcile.ActionStart},
	} {
		s.Key = "k" + string(rune('a'+i))
		res, err := f.eng.Apply(ctxT(t), s)
		if err != nil || !res.Applied() {
			t.Fatalf("%s %s: %+v %v", s.Kind, s.Ref, res, err)
		}
	}
	if g := f.guest(qemu(100)); g.Running || g.Config["memory"] != "1024" {
		t.Errorf("vm 100: running %v, %v", g.Running, g.Config)
	}
	if g := f.guest(lxc(200)); !g.Running || g.Config["memory"] != "2048" {
		t.Errorf("ct 200: running %v, %v", g.Running, g.Config)
	}
}

func TestApplyStaleDigestIsAConflict(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{
		Key: "d", Ref: qemu(100), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"memory": "1024"}, Digest: strings.Repeat("0", 40),
	})
	if err != nil || res.State != journal.Failed || !strings.Contains(res.Error, "mismatch") {
		t.Fatalf("%+v %v", res, err)
	}
	if f.guest(qemu(100)).Config["memory"] != "512" {
		t.Fatal("a change planned against another digest was applied")
	}
}

func TestApplyRefusesBadInputAndKeepsKeyUnused(t *testing.T) {
	f := newFixture(t, nil, func(c *reconcile.Config) {
		c.Policy = func(_ context.Context, a reconcile.Action, _ reconcile.Observed) error {
			if a.Kind == reconcile.ActionStop {
				return errors.New("no stops today")
			}
			return nil
		}
	})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"memory": "512"}})
	for name, s := range map[string]reconcile.OneShot{
		"no key":          {Ref: qemu(100), Kind: reconcile.ActionStart},
		"bad ref":         {Key: "a", Ref: proxmox.Ref{Node: "pve1", Type: "kvm", VMID: 100}, Kind: reconcile.ActionStart},
		"unknown kind":    {Key: "b", Ref: qemu(100), Kind: "destroy"},
		"set on start":    {Key: "c", Ref: qemu(100), Kind: reconcile.ActionStart, Set: map[string]string{"memory": "1"}},
		"empty change":    {Key: "d", Ref: qemu(100), Kind: reconcile.ActionSetConfig},
		"bad option":      {Key: "e", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"mem ory": "1"}},
		"timeout on stop": {Key: "f", Ref: qemu(100), Kind: reconcile.ActionStop, Timeout: 1e9},
		"newline":         {Key: "g", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"name": "a\nb"}},
	} {
		if _, err := f.eng.Apply(ctxT(t), s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	veto := reconcile.OneShot{Key: "v", Ref: qemu(100), Kind: reconcile.ActionStop}
	if _, err := f.eng.Apply(ctxT(t), veto); !errors.Is(err, reconcile.ErrVetoed) {
		t.Fatalf("veto: %v", err)
	}
	if f.writes() != 0 {
		t.Fatal("refused input reached Proxmox")
	}
	if _, ok, _ := f.j.(journal.KeyLookup).LatestByKey(ctxT(t), "v"); ok {
		t.Fatal("a vetoed operation used its key")
	}
}
