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

// gateGuests adds a stopped VM with a disk, a cdrom slot and a cloud-init
// password, and a stopped container.
func gateGuests(f *fixture) {
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{
		"memory": "2048", "scsi0": "local-lvm:vm-100-disk-0,size=32G", "cipassword": "secret",
		"unused0": "local-lvm:vm-100-disk-9", "ostype": "l26", "description": "old",
		"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "boot": "order=scsi0;net0",
	}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{
		"memory": "512", "rootfs": "local-lvm:vm-200-disk-0,size=8G", "hostname": "ct",
	}})
}

// A pass never performs an irreversible action unless the engine allows
// it: the guest is skipped, the plan says which action and why, and
// nothing is sent. Allowed, the same pass acts.
func TestGatePassSkipsIrreversible(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       reconcile.Desired
		wantWhy string
	}{
		{"resize: a disk cannot shrink back",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"scsi0": "local-lvm:64"}}, "cannot shrink"},
		{"resize of a mount point",
			reconcile.Desired{Ref: lxc(200), Config: map[string]string{"rootfs": "local-lvm:16"}}, "cannot shrink"},
		{"cipassword: the prior value reads masked",
			reconcile.Desired{Ref: qemu(100), Delete: []string{"cipassword"}}, "masked"},
		{"ostype without machine: Proxmox may pin the machine version",
			reconcile.Desired{Ref: qemu(100), Config: map[string]string{"ostype": "win11"}}, "machine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			gateGuests(f)
			f.desire(tc.d)
			rep := f.pass()
			g := outcome(rep, tc.d.Ref)
			if g.Outcome != reconcile.GuestSkipped || g.Reason != reconcile.SkipIrreversible {
				t.Fatalf("outcome %s (%s): %s; want skipped (irreversible)", g.Outcome, g.Reason, g.Detail)
			}
			if !strings.Contains(g.Plan.Detail, tc.wantWhy) || g.Plan.Reason != reconcile.SkipIrreversible {
				t.Errorf("plan detail %q does not say why (%q)", g.Plan.Detail, tc.wantWhy)
			}
			if n := f.writes(); n != 0 {
				t.Errorf("%d writes sent for a gated guest", n)
			}

			allowed := newFixture(t, nil, allowIrreversible)
			gateGuests(allowed)
			allowed.desire(tc.d)
			g = outcome(allowed.pass(), tc.d.Ref)
			if g.Outcome != reconcile.GuestChanged {
				t.Fatalf("allowed: outcome %s (%s): %s", g.Outcome, g.Reason, g.Detail)
			}
			for _, a := range g.Actions {
				if a.Action.Class == "" {
					t.Errorf("action %s has no class", a.Action)
				}
			}
		})
	}
}

// A Policy sees each action's class, so a finer rule than the engine's
// one switch (resizes yes, secrets no) is a Policy on an engine that
// allows irreversible actions.
func TestGatePolicySeesClass(t *testing.T) {
	var seen []reconcile.Action
	f := newFixture(t, nil, allowIrreversible, func(c *reconcile.Config) {
		c.Policy = func(_ context.Context, a reconcile.Action, _ reconcile.Observed) error {
			seen = append(seen, a)
			return nil
		}
	})
	gateGuests(f)
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"memory": "4096", "scsi0": "local-lvm:64"}})
	f.pass()
	want := []struct {
		kind  reconcile.ActionKind
		class reconcile.Reversibility
	}{{reconcile.ActionSetConfig, reconcile.Reversible}, {reconcile.ActionResize, reconcile.Irreversible}, {reconcile.ActionStart, reconcile.Reversible}}
	if len(seen) != len(want) {
		t.Fatalf("policy saw %d actions: %+v", len(seen), seen)
	}
	for i, a := range seen {
		if a.Kind != want[i].kind || a.Class != want[i].class {
			t.Errorf("action %d: %s %s, want %s %s", i, a.Kind, a.Class, want[i].kind, want[i].class)
		}
	}
	if seen[1].Why == "" || seen[0].Prior["memory"] != "2048" {
		t.Errorf("the policy did not see why the resize is irreversible (%q) or the change's prior values (%v)", seen[1].Why, seen[0].Prior)
	}
}

// A one-shot performs an irreversible action only with its approval;
// without it Apply refuses with ErrIrreversible before anything is
// journaled or sent, and the key stays unused. One refusal holds even
// with the approval: deleting an option that holds a volume.
func TestGateOneShot(t *testing.T) {
	for _, tc := range []struct {
		name string
		shot reconcile.OneShot
		// never: refused even approved
		never bool
		// already: refused before the gate, by the engine's Validation
		already error
	}{
		{"set cipassword", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"cipassword": "x"}}, false, nil},
		{"delete cipassword", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Delete: []string{"cipassword"}}, false, nil},
		{"ostype without machine", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"ostype": "win11"}}, false, nil},
		{"a cdrom may join the boot order", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"ide2": "local:iso/x.iso,media=cdrom"}}, false, nil},
		{"a device leaves the boot order", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Delete: []string{"net0"}}, false, nil},
		{"a disk in an empty slot", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"scsi1": "local-lvm:4"}}, false, nil},
		{"another volume in a slot", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"scsi0": "local-lvm:vm-100-disk-7"}}, false, nil},
		{"a size in a one-shot is a resize", reconcile.OneShot{Ref: lxc(200), Kind: reconcile.ActionSetConfig, Set: map[string]string{"rootfs": "local-lvm:vm-200-disk-0,size=16G"}}, false, nil},
		{"delete a disk", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Delete: []string{"scsi0"}}, true, nil},
		{"delete an unused volume", reconcile.OneShot{Ref: qemu(100), Kind: reconcile.ActionSetConfig, Delete: []string{"unused0"}}, true, reconcile.ErrInvalidOneShot},
		{"delete a mount point", reconcile.OneShot{Ref: lxc(200), Kind: reconcile.ActionSetConfig, Delete: []string{"rootfs"}}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			gateGuests(f)
			s := tc.shot
			s.Key = "gate-" + strings.ReplaceAll(tc.name, " ", "-")
			_, err := f.eng.Apply(ctxT(t), s)
			if tc.already != nil {
				s.AllowIrreversible = true
				_, err2 := f.eng.Apply(ctxT(t), s)
				if !errors.Is(err, tc.already) || !errors.Is(err2, tc.already) || f.writes() != 0 {
					t.Fatalf("Apply: %v, approved: %v; want %v", err, err2, tc.already)
				}
				return
			}
			if !errors.Is(err, reconcile.ErrIrreversible) {
				t.Fatalf("Apply without approval: %v, want ErrIrreversible", err)
			}
			if n := f.writes(); n != 0 {
				t.Errorf("%d writes sent", n)
			}
			if _, ok, err := f.eng.Lookup(ctxT(t), s.Key); ok || err != nil {
				t.Errorf("the key was journaled (%v, %v)", ok, err)
			}
			s.AllowIrreversible = true
			_, err = f.eng.Apply(ctxT(t), s)
			if tc.never != errors.Is(err, reconcile.ErrIrreversible) {
				t.Fatalf("Apply approved: %v (refusal expected: %v)", err, tc.never)
			}
			if tc.never && f.writes() != 0 {
				t.Errorf("a refused deletion of a volume sent %d writes", f.writes())
			}
		})
	}
}

// A prior value longer than MaxPriorValue, or prior values too large to
// write back in one request, make the change irreversible; within the
// bounds it is reversible and its intent journals them.
func TestGatePriorValuesBounded(t *testing.T) {
	huge := strings.Repeat("x", reconcile.MaxPriorValue+1)
	big := strings.Repeat("y", 30<<10) // three of them exceed one request
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 300, Config: map[string]string{
		"searchdomain": huge, "ciuser": big, "cicustom": big, "nameserver": big, "memory": "512",
	}})
	for _, tc := range []struct {
		name string
		shot reconcile.OneShot
	}{
		{"one prior value over the cap", reconcile.OneShot{Kind: reconcile.ActionSetConfig, Set: map[string]string{"searchdomain": "example.com"}}},
		{"prior values too large to send back", reconcile.OneShot{Kind: reconcile.ActionSetConfig, Delete: []string{"ciuser", "cicustom", "nameserver"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.shot
			s.Ref, s.Key = qemu(300), "bounded-"+strings.ReplaceAll(tc.name, " ", "-")
			if _, err := f.eng.Apply(ctxT(t), s); !errors.Is(err, reconcile.ErrIrreversible) {
				t.Fatalf("Apply: %v, want ErrIrreversible", err)
			}
		})
	}
	if n := f.writes(); n != 0 {
		t.Errorf("%d writes sent", n)
	}
	// Within the bounds: reversible, and the intent holds the prior value
	// of exactly the options set and deleted, and which were absent.
	res, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "ok", Ref: qemu(300), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"memory": "1024", "cores": "2"}, Delete: []string{"ciuser", "tags"}})
	if err != nil || !res.Applied() {
		t.Fatalf("Apply: %+v, %v", res, err)
	}
	params := intentParams(t, f.j, res.OpID)
	want := map[string]string{"prior:memory": "512", "prior:ciuser": big, "absent": "cores,tags", "class": "reversible"}
	for k, v := range want {
		if params[k] != v {
			t.Errorf("intent param %s = %.40q, want %.40q", k, params[k], v)
		}
	}
	for k := range params {
		if strings.HasPrefix(k, "prior:") {
			if _, ok := want[k]; !ok {
				t.Errorf("intent journals prior value %s of an option the change does not name", k)
			}
		}
	}
}

func intentParams(t *testing.T, j journal.Journal, opID string) map[string]string {
	t.Helper()
	en, ok, err := j.Latest(ctxT(t), opID)
	if err != nil || !ok {
		t.Fatalf("no record of %s: %v", opID, err)
	}
	return en.Params
}

// A dry run shows each action's class, in JSON and in text.
func TestGateDryRunShowsClass(t *testing.T) {
	f := newFixture(t, nil, allowIrreversible, func(c *reconcile.Config) { c.DryRun = true; c.Journal = nil })
	gateGuests(f)
	f.desire(
		reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"memory": "4096", "scsi0": "local-lvm:64"}},
		reconcile.Desired{Ref: lxc(200), Config: map[string]string{"memory": "1024"}},
	)
	rep := f.pass()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, want := range []string{`"class":"reversible"`, `"class":"irreversible"`, `"why":"scsi0: Proxmox cannot shrink a disk`} {
		if !strings.Contains(js, want) {
			t.Errorf("report JSON lacks %s:\n%s", want, js)
		}
	}
	pj, _ := json.Marshal(rep.Plan)
	if !strings.Contains(string(pj), `"class":"irreversible"`) {
		t.Errorf("plan JSON lacks the class:\n%s", pj)
	}
	text := rep.Plan.String() + rep.String()
	for _, want := range []string{"[reversible]", "[irreversible: scsi0: Proxmox cannot shrink a disk"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if f.writes() != 0 {
		t.Error("a dry run sent writes")
	}
}
