package demo_test

import (
	"context"
	"testing"

	"github.com/guestward/guestward/examples/internal/demo"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The fleet tells the story its package documentation tells, on every
// Proxmox VE release the fake server emulates: the rewriting quirks differ
// between releases (MAC prefixes, memory typed as a string), and none of
// them may count as drift.
func TestFleetPlan(t *testing.T) {
	want := map[int]reconcile.Verdict{
		100: reconcile.InSync, 101: reconcile.Act, 102: reconcile.Act, 103: reconcile.Skip,
		104: reconcile.Skip, 105: reconcile.Act, 106: reconcile.Act, 107: reconcile.InSync,
		200: reconcile.InSync, 201: reconcile.Act, 202: reconcile.Act, 203: reconcile.Act, 204: reconcile.Skip,
	}
	wantReason := map[int]reconcile.SkipReason{103: reconcile.SkipLocked, 104: reconcile.SkipPending, 204: reconcile.SkipMissing}
	for _, version := range []string{proxmoxtest.PVE74, proxmoxtest.PVE80, proxmoxtest.PVE81, proxmoxtest.DefaultVersion, proxmoxtest.PVE90} {
		t.Run(version, func(t *testing.T) {
			testFleetPlan(t, version, true, want, wantReason, 11)
		})
	}
	// Without the approval, the disk 102 grows (a resize cannot be undone)
	// is the gate's to stop: the guest is skipped, and its two actions
	// are not planned.
	want[102] = reconcile.Skip
	wantReason[102] = reconcile.SkipIrreversible
	t.Run("gated", func(t *testing.T) {
		testFleetPlan(t, proxmoxtest.DefaultVersion, false, want, wantReason, 9)
	})
}

func testFleetPlan(t *testing.T, version string, allow bool, want map[int]reconcile.Verdict, wantReason map[int]reconcile.SkipReason, actions int) {
	{
		{
			f, err := demo.Start(demo.Options{Version: version, TaskDuration: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Guests() != 13 {
				t.Errorf("the cluster holds %d guests, want 13", f.Guests())
			}
			c, err := f.Client()
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			ds, err := reconcile.ParseDesiredJSON(demo.DesiredJSON())
			if err != nil {
				t.Fatalf("the embedded desired state: %v", err)
			}
			p, err := reconcile.NewStaticProvider(ds)
			if err != nil {
				t.Fatal(err)
			}
			e, err := reconcile.NewEngine(reconcile.Config{Proxmox: c, Journal: journal.NewMemory(), Provider: p, DryRun: true, AllowIrreversible: allow})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := e.ReconcileOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Plan.Guests) != len(want) {
				t.Fatalf("the plan has %d guests, want %d", len(rep.Plan.Guests), len(want))
			}
			for _, g := range rep.Plan.Guests {
				if g.Verdict != want[g.Ref.VMID] || g.Reason != wantReason[g.Ref.VMID] {
					t.Errorf("%s: %s (%s) %s, want %s (%s)", g.Ref, g.Verdict, g.Reason, g.Detail, want[g.Ref.VMID], wantReason[g.Ref.VMID])
				}
			}
			if n := len(rep.Plan.Actions()); n != actions {
				t.Errorf("the plan has %d actions, want %d:\n%s", n, actions, rep.Plan)
			}
		}
	}
}

func TestDesiredJSONIsACopy(t *testing.T) {
	a := demo.DesiredJSON()
	a[0] = 'x'
	if b := demo.DesiredJSON(); b[0] == 'x' {
		t.Fatal("DesiredJSON shares its bytes with its callers")
	}
}

func TestWriteDesired(t *testing.T) {
	path, err := demo.WriteDesired(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := reconcile.NewFileProvider(path)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := p.Desired(context.Background())
	if err != nil || len(ds) != 13 {
		t.Fatalf("reading it back: %d guests, %v", len(ds), err)
	}
}

func TestStartRejectsNegativeDuration(t *testing.T) {
	if _, err := demo.Start(demo.Options{TaskDuration: -1}); err == nil {
		t.Fatal("Start accepted a negative task duration")
	}
}
