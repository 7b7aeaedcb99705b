package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

func TestMapProviderUpdatesGuestByGuest(t *testing.T) {
	p, err := reconcile.NewMapProvider(reconcile.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var notified [][]proxmox.Ref
	p.Notify(func(refs ...proxmox.Ref) { notified = append(notified, refs) })
	state := func() []int {
		t.Helper()
		ds, err := p.Desired(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var ids []int
		for _, d := range ds {
			ids = append(ids, d.Ref.VMID)
		}
		return ids
	}
	cfg := map[string]string{"memory": "1024"}
	a := reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerRunning, Config: cfg}
	b := reconcile.Desired{Ref: lxc(100)}
	if err := p.Upsert(a, b); err != nil {
		t.Fatal(err)
	}
	if got := state(); !slices.Equal(got, []int{100, 101}) {
		t.Fatalf("state %v, want 100, 101 sorted", got)
	}
	// A deep copy: the caller's map is its own.
	cfg["memory"] = "1"
	if d, _ := p.Get(101); d.Config["memory"] != "1024" {
		t.Fatalf("the provider shares the caller's map: %v", d.Config)
	}
	if len(notified) != 1 || len(notified[0]) != 2 {
		t.Fatalf("notified %v, want both guests once", notified)
	}

	// The same declaration again changes nothing and notifies no one.
	if err := p.Upsert(reconcile.Desired{Ref: qemu(101), Power: reconcile.PowerRunning, Config: map[string]string{"memory": "1024"}}); err != nil {
		t.Fatal(err)
	}
	if len(notified) != 1 {
		t.Fatalf("an unchanged upsert notified: %v", notified[1:])
	}
	// A guest that moved node replaces its declaration.
	moved := proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 101}
	if err := p.Upsert(reconcile.Desired{Ref: moved}); err != nil {
		t.Fatal(err)
	}
	if d, _ := p.Get(101); d.Ref != moved || d.Power != reconcile.PowerAny {
		t.Fatalf("after the move: %+v", d)
	}
	if last := notified[len(notified)-1]; len(last) != 1 || last[0] != moved {
		t.Fatalf("notified %v for the move", last)
	}

	// All or nothing: one invalid guest refuses the whole call.
	err = p.Upsert(reconcile.Desired{Ref: qemu(102)}, reconcile.Desired{Ref: qemu(103), Config: map[string]string{"lock": "backup"}})
	if !errors.Is(err, reconcile.ErrForbiddenKey) {
		t.Fatalf("Upsert with a forbidden option = %v", err)
	}
	err = p.Upsert(reconcile.Desired{Ref: qemu(104)}, reconcile.Desired{Ref: lxc(104)})
	if !errors.Is(err, reconcile.ErrInvalidDesired) {
		t.Fatalf("Upsert of one vmid twice = %v", err)
	}
	if got := state(); !slices.Equal(got, []int{100, 101}) {
		t.Fatalf("refused upserts changed the state: %v", got)
	}

	if n := p.Delete(100, 999); n != 1 {
		t.Fatalf("Delete = %d, want 1", n)
	}
	if got := state(); !slices.Equal(got, []int{101}) {
		t.Fatalf("after Delete: %v", got)
	}
	before := len(notified)
	if err := p.Replace([]reconcile.Desired{{Ref: moved}, {Ref: qemu(105)}}); err != nil {
		t.Fatal(err)
	}
	if got := state(); !slices.Equal(got, []int{101, 105}) {
		t.Fatalf("after Replace: %v", got)
	}
	if len(notified) != before+1 || !slices.Equal(notified[before], []proxmox.Ref{qemu(105)}) {
		t.Fatalf("Replace notified %v, want only the new guest", notified[before:])
	}
	if err := p.Replace([]reconcile.Desired{{Ref: qemu(1)}, {Ref: qemu(1)}}); err == nil {
		t.Fatal("Replace with a vmid twice was accepted")
	}
	if err := p.Replace(nil); err != nil || p.Len() != 0 || len(state()) != 0 {
		t.Fatalf("Replace(nil) = %v, %d guests", err, p.Len())
	}
}

// Updates and passes run concurrently; each pass sees a whole update.
func TestMapProviderConcurrentUse(t *testing.T) {
	p, err := reconcile.NewMapProvider(reconcile.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				vmid := 100 + w*1000 + i%10
				// Two guests per update, always together.
				_ = p.Upsert(reconcile.Desired{Ref: qemu(vmid), Config: map[string]string{"description": fmt.Sprint(i)}},
					reconcile.Desired{Ref: qemu(vmid + 500), Config: map[string]string{"description": fmt.Sprint(i)}})
				if i%7 == 0 {
					p.Delete(vmid, vmid+500)
				}
			}
		}()
	}
	for range 200 {
		ds, _ := p.Desired(context.Background())
		seen := map[int]string{}
		for _, d := range ds {
			seen[d.Ref.VMID] = d.Config["description"]
		}
		for id, desc := range seen {
			if id%1000 < 500 && seen[id+500] != desc {
				t.Fatalf("a pass saw half an update: %d=%q, %d=%q", id, desc, id+500, seen[id+500])
			}
		}
	}
	wg.Wait()
}
