package reconcile_test

import (
	"errors"
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

func onlyNodes(nodes ...string) func(*reconcile.Config) {
	return func(c *reconcile.Config) { c.Nodes = nodes }
}

// NewEngine refuses a node list it cannot match guests against.
func TestNodesValidated(t *testing.T) {
	f := newFixture(t, nil)
	for name, nodes := range map[string][]string{
		"empty name":   {""},
		"invalid name": {"pve 1"},
		"listed twice": {"pve1", "pve2", "pve1"},
	} {
		cfg := reconcile.Config{Proxmox: f.client, Journal: f.j, Nodes: nodes}
		if _, err := reconcile.NewEngine(cfg); !errors.Is(err, reconcile.ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// An engine scoped to pve1 acts on pve1's declared guests only, in full
// and targeted passes, and refuses one-shots and reverts for another
// node's guest before anything is journaled or sent; the caller's slice
// changing later does not widen it.
func TestNodesScopeEveryPath(t *testing.T) {
	f := newFixture(t, nil)
	mine, theirs := qemu(100), proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 300}
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	f.add(proxmoxtest.GuestSpec{Node: "pve2", Type: proxmox.QEMU, VMID: 300, Config: map[string]string{"memory": "512"}})
	f.desire(reconcile.Desired{Ref: mine, Power: reconcile.PowerRunning}, reconcile.Desired{Ref: theirs, Power: reconcile.PowerRunning})

	// Another engine, unscoped, on the same journal, ran a config change
	// on pve2's guest: something to try to revert.
	other, err := f.newEngine(f.j).Apply(ctxT(t), reconcile.OneShot{Key: "other-1", Ref: theirs, Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}})
	if err != nil || !other.Applied() {
		t.Fatalf("the other engine's change: %+v %v", other, err)
	}
	base := f.writes()

	nodes := []string{"pve1"}
	e := f.newEngine(f.j, onlyNodes(nodes...))
	nodes[0] = "pve2" // the engine keeps its own copy

	rep, err := e.ReconcileGuests(ctxT(t), theirs)
	if err != nil || len(rep.Guests) != 0 {
		t.Fatalf("targeted pass naming another node's guest: %v %+v", err, rep.Guests)
	}
	rep, err = e.ReconcileOnce(ctxT(t))
	if err != nil || len(rep.Guests) != 1 || outcome(rep, mine).Outcome != reconcile.GuestChanged {
		t.Fatalf("full pass: %v %+v", err, rep.Guests)
	}
	if g, _ := f.srv.Guest(theirs); g.Running {
		t.Error("the pass started another node's guest")
	}
	afterPass := f.writes()
	if afterPass == base {
		t.Fatal("the pass sent nothing for its own guest")
	}

	shot := reconcile.OneShot{Key: "scoped-1", Ref: theirs, Kind: reconcile.ActionStart}
	if _, err := e.Apply(ctxT(t), shot); !errors.Is(err, reconcile.ErrNotInScope) {
		t.Errorf("Apply on another node's guest: %v", err)
	}
	if _, ok, err := e.Lookup(ctxT(t), shot.Key); ok || err != nil {
		t.Errorf("the refused one-shot holds its key: %v %v", ok, err)
	}
	if _, err := e.Revert(ctxT(t), other.OpID); !errors.Is(err, reconcile.ErrNotInScope) {
		t.Errorf("Revert of another node's operation: %v", err)
	}
	if n := f.writes(); n != afterPass {
		t.Errorf("refused calls sent %d requests", n-afterPass)
	}
	if res, err := e.Apply(ctxT(t), reconcile.OneShot{Key: "scoped-2", Ref: mine, Kind: reconcile.ActionStop}); err != nil || !res.Applied() {
		t.Errorf("Apply on its own guest: %+v %v", res, err)
	}
}
