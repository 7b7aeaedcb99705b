package reconcile_test

import (
	"errors"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// A one-shot configuration change is held to the same rules as a desired
// state: it cannot set or delete what is not configuration, nor root-only
// options unless the engine's Validation allows them.
func TestOneShotCannotManageForbiddenOptions(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	for _, s := range []reconcile.OneShot{
		{Key: "a", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"args": "-monitor stdio"}},
		{Key: "b", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"template": "1"}},
		{Key: "c", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Delete: []string{"lock"}},
		{Key: "d", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"hookscript": "local:snippets/x.pl"}},
	} {
		_, err := f.eng.Apply(ctxT(t), s)
		if !errors.Is(err, reconcile.ErrInvalidOneShot) || !errors.Is(err, reconcile.ErrForbiddenKey) {
			t.Errorf("%s: %v, want ErrInvalidOneShot and ErrForbiddenKey", s.Key, err)
		}
	}
	if n := f.writes(); n != 0 {
		t.Errorf("%d writes sent", n)
	}
	if ops, _ := f.j.InFlight(ctxT(t)); len(ops) != 0 {
		t.Errorf("journaled: %+v", ops)
	}

	// Allowed by the engine's Validation, a root-only option goes through.
	e := f.newEngine(journal.NewMemory(), func(c *reconcile.Config) {
		c.Validation = reconcile.ValidateOptions{AllowRootOnly: []string{"args"}}
	})
	res, err := e.Apply(ctxT(t), reconcile.OneShot{Key: "e", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"args": "-no-hpet"}})
	if err != nil || !res.Applied() {
		t.Fatalf("allowed root-only option: %+v %v", res, err)
	}
}

func TestEngineRefusesInvalidValidation(t *testing.T) {
	f := newFixture(t, nil)
	for _, v := range []reconcile.ValidateOptions{
		{AllowRootOnly: []string{"lock"}},    // never allowed
		{AllowRootOnly: []string{"hostpcy"}}, // misspelt
	} {
		_, err := reconcile.NewEngine(reconcile.Config{Proxmox: f.client, Journal: f.j, Validation: v})
		if !errors.Is(err, reconcile.ErrConfig) {
			t.Errorf("%v: %v, want ErrConfig", v.AllowRootOnly, err)
		}
	}
}
