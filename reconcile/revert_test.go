package reconcile_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// revertGuests adds a VM and a container, stopped or running.
func revertGuests(f *fixture, running bool) {
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: running, Config: map[string]string{
		"memory": "2048", "description": "before", "tags": "a", "name": "vm",
	}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Running: running, Config: map[string]string{
		"memory": "512", "description": "before", "tags": "a", "hostname": "ct",
	}})
}

func mustApply(t *testing.T, e *reconcile.Engine, s reconcile.OneShot) reconcile.Result {
	t.Helper()
	res, err := e.Apply(ctxT(t), s)
	if err != nil || !res.Applied() {
		t.Fatalf("Apply %s: %+v, %v", s.Kind, res, err)
	}
	return res
}

// Every reversible kind, on both guest types, is undone by Revert: a
// configuration change gets exactly its options back (set ones restored,
// added ones deleted, deleted ones set again), a start is shut down, a
// stop or shutdown is started. A reboot has nothing to undo.
func TestRevertEveryKind(t *testing.T) {
	change := func(ref proxmox.Ref) reconcile.OneShot {
		return reconcile.OneShot{Ref: ref, Kind: reconcile.ActionSetConfig,
			Set: map[string]string{"memory": "4096", "cores": "2"}, Delete: []string{"description"}}
	}
	for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
		for _, tc := range []struct {
			kind    reconcile.ActionKind
			running bool // before the operation
		}{
			{reconcile.ActionSetConfig, false},
			{reconcile.ActionStart, false},
			{reconcile.ActionStop, true},
			{reconcile.ActionShutdown, true},
			{reconcile.ActionReboot, true},
		} {
			t.Run(string(ref.Type)+"/"+string(tc.kind), func(t *testing.T) {
				f := newFixture(t, nil)
				revertGuests(f, tc.running)
				before := f.guest(ref)
				s := reconcile.OneShot{Key: "k", Ref: ref, Kind: tc.kind}
				if tc.kind == reconcile.ActionSetConfig {
					s = change(ref)
					s.Key = "k"
				}
				op := mustApply(t, f.eng, s)
				if tc.kind == reconcile.ActionReboot {
					n := f.writes()
					_, err := f.eng.Revert(ctxT(t), op.OpID)
					if !errors.Is(err, reconcile.ErrNothingToRevert) || !errors.Is(err, reconcile.ErrNotRevertible) {
						t.Fatalf("Revert of a reboot: %v, want ErrNothingToRevert", err)
					}
					if f.writes() != n {
						t.Error("the refused revert sent a write")
					}
					return
				}
				res, err := f.eng.Revert(ctxT(t), op.OpID)
				if err != nil || !res.Applied() {
					t.Fatalf("Revert: %+v, %v", res, err)
				}
				if res.Reverts != op.OpID || res.Key != "" || res.OpID == "" || res.OpID == op.OpID {
					t.Errorf("result %+v does not name the reverted operation as it should", res)
				}
				after := f.guest(ref)
				if after.Running != before.Running {
					t.Errorf("running %v after the revert, %v before the operation", after.Running, before.Running)
				}
				for _, k := range []string{"memory", "cores", "description", "tags", "name", "hostname"} {
					if after.Config[k] != before.Config[k] {
						t.Errorf("%s = %q after the revert, %q before", k, after.Config[k], before.Config[k])
					}
				}
				en, ok, err := f.j.Latest(ctxT(t), res.OpID)
				if err != nil || !ok || en.Params["reverts"] != op.OpID || en.State != journal.Succeeded {
					t.Errorf("the revert's journal record %+v (%v, %v) does not name %s", en, ok, err, op.OpID)
				}
				if want := map[reconcile.ActionKind]string{reconcile.ActionStart: "shutdown", reconcile.ActionStop: "start",
					reconcile.ActionShutdown: "start", reconcile.ActionSetConfig: "set_config"}[tc.kind]; en.Kind != want {
					t.Errorf("revert of %s journaled as %s, want %s", tc.kind, en.Kind, want)
				}
			})
		}
	}
}

// A guest changed since the operation is not reverted: the revert is
// refused with ErrRevertConflict and nothing is sent. Forced, it plans
// against the guest as it is: the operation's options get their prior
// values, and the other change stays.
func TestRevertConflict(t *testing.T) {
	for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
		t.Run(string(ref.Type), func(t *testing.T) {
			f := newFixture(t, nil)
			revertGuests(f, false)
			before := f.guest(ref).Config["memory"]
			op := mustApply(t, f.eng, reconcile.OneShot{Key: "k", Ref: ref, Kind: reconcile.ActionSetConfig,
				Set: map[string]string{"memory": "4096"}})
			if err := f.srv.UpdateConfig(ref, map[string]string{"tags": "b"}, nil); err != nil {
				t.Fatal(err)
			}
			n := f.writes()
			_, err := f.eng.Revert(ctxT(t), op.OpID)
			if !errors.Is(err, reconcile.ErrRevertConflict) {
				t.Fatalf("Revert after a concurrent edit: %v, want ErrRevertConflict", err)
			}
			if f.writes() != n {
				t.Fatal("the refused revert sent a write")
			}
			if f.guest(ref).Config["memory"] != "4096" {
				t.Fatal("the refused revert changed the guest")
			}
			res, err := f.eng.RevertWith(ctxT(t), op.OpID, reconcile.RevertOptions{Force: true})
			if err != nil || !res.Applied() {
				t.Fatalf("forced Revert: %+v, %v", res, err)
			}
			g := f.guest(ref)
			if g.Config["memory"] != before || g.Config["tags"] != "b" {
				t.Errorf("after the forced revert memory=%q tags=%q, want %s and the concurrent b", g.Config["memory"], g.Config["tags"], before)
			}
		})
	}
	t.Run("power", func(t *testing.T) {
		f := newFixture(t, nil)
		revertGuests(f, false)
		op := mustApply(t, f.eng, reconcile.OneShot{Key: "start", Ref: qemu(100), Kind: reconcile.ActionStart})
		mustApply(t, f.eng, reconcile.OneShot{Key: "stop", Ref: qemu(100), Kind: reconcile.ActionStop})
		n := f.writes()
		if _, err := f.eng.Revert(ctxT(t), op.OpID); !errors.Is(err, reconcile.ErrRevertConflict) {
			t.Fatalf("Revert of a start on a stopped guest: %v, want ErrRevertConflict", err)
		}
		if f.writes() != n {
			t.Error("the refused revert sent a write")
		}
	})
}

// A revert runs at most once per operation: a retry and concurrent calls
// return the first result, also after a restart on the reopened journal,
// whatever options they pass.
func TestRevertAtMostOnce(t *testing.T) {
	f := newFixture(t, nil)
	revertGuests(f, false)
	path := filepath.Join(t.TempDir(), "ops.journal")
	j1 := openFileJournal(t, path)
	e1 := f.newEngine(j1)
	op := mustApply(t, e1, reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "4096"}})
	n := f.writes()

	var wg sync.WaitGroup
	results := make([]reconcile.Result, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e1.Revert(ctxT(t), op.OpID)
		}()
	}
	wg.Wait()
	first := results[0]
	for i := range results {
		if errs[i] != nil || !results[i].Applied() || results[i].OpID != first.OpID {
			t.Fatalf("concurrent revert %d: %+v, %v (first %s)", i, results[i], errs[i], first.OpID)
		}
	}
	if w := f.writes() - n; w != 1 {
		t.Fatalf("%d writes for four concurrent reverts, want 1", w)
	}
	// Someone changes the memory back to 4096: a second revert would undo
	// that; it must not run.
	if err := f.srv.UpdateConfig(qemu(100), map[string]string{"memory": "4096"}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := e1.RevertWith(ctxT(t), op.OpID, reconcile.RevertOptions{Force: true})
	if err != nil || !res.Replayed || res.OpID != first.OpID {
		t.Fatalf("retry: %+v, %v; want the first result replayed", res, err)
	}
	if err := j1.Close(); err != nil {
		t.Fatal(err)
	}
	j2 := openFileJournal(t, path)
	t.Cleanup(func() { j2.Close() })
	e2 := f.newEngine(j2)
	res, err = e2.RevertWith(ctxT(t), op.OpID, reconcile.RevertOptions{Force: true})
	if err != nil || !res.Replayed || res.OpID != first.OpID || res.Reverts != op.OpID {
		t.Fatalf("after a restart: %+v, %v; want the first result replayed", res, err)
	}
	if w := f.writes() - n; w != 1 {
		t.Errorf("%d writes in all, want 1", w)
	}
	if m := f.guest(qemu(100)).Config["memory"]; m != "4096" {
		t.Errorf("memory %s: a replayed revert ran again", m)
	}
}

// Revert refuses what it cannot undo, each with its sentinel, and sends
// nothing: an unknown operation, a failed one, an irreversible one, and
// a revert the gate or the policy refuses.
func TestRevertRefusals(t *testing.T) {
	f := newFixture(t, nil, allowIrreversible)
	revertGuests(f, false)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{
		"scsi0": "local-lvm:vm-101-disk-0,size=32G", "ostype": "l26", "machine": "q35"}})
	failed, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "stale", Ref: qemu(100), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"memory": "1024"}, Digest: "0000000000000000000000000000000000000000"})
	if err != nil || failed.Applied() {
		t.Fatalf("stale change: %+v, %v", failed, err)
	}
	irr := mustApply(t, f.eng, reconcile.OneShot{Key: "cipw", Ref: qemu(100), Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"cipassword": "pw"}, AllowIrreversible: true})
	f.desire(reconcile.Desired{Ref: qemu(101), Config: map[string]string{"scsi0": "local-lvm:64"}})
	rep := f.pass()
	resize := outcome(rep, qemu(101)).Actions[0].OpID
	n := f.writes()
	for _, tc := range []struct {
		name string
		opID string
		want error
	}{
		{"unknown", "20260101T000000Z-0000000000000000", reconcile.ErrOpUnknown},
		{"empty id", "", reconcile.ErrOpUnknown},
		{"failed", failed.OpID, reconcile.ErrOpNotSucceeded},
		{"irreversible one-shot", irr.OpID, reconcile.ErrIrreversible},
		{"resize", resize, reconcile.ErrIrreversible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.eng.RevertWith(ctxT(t), tc.opID, reconcile.RevertOptions{Force: true, AllowIrreversible: true})
			if !errors.Is(err, tc.want) || !errors.Is(err, reconcile.ErrNotRevertible) {
				t.Fatalf("Revert: %v, want %v", err, tc.want)
			}
		})
	}
	if f.writes() != n {
		t.Fatal("a refused revert sent a write")
	}

	// The gate: a revert that itself cannot be undone needs its approval.
	// ostype set while machine was present is reversible; once machine is
	// gone, writing the old ostype back may pin one.
	op := mustApply(t, f.eng, reconcile.OneShot{Key: "os", Ref: qemu(101), Kind: reconcile.ActionSetConfig, Set: map[string]string{"ostype": "win11"}})
	if err := f.srv.UpdateConfig(qemu(101), nil, []string{"machine"}); err != nil {
		t.Fatal(err)
	}
	n = f.writes()
	if _, err := f.eng.RevertWith(ctxT(t), op.OpID, reconcile.RevertOptions{Force: true}); !errors.Is(err, reconcile.ErrIrreversible) {
		t.Fatalf("irreversible revert: %v, want ErrIrreversible", err)
	}
	if f.writes() != n {
		t.Fatal("the gated revert sent a write")
	}
	if res, err := f.eng.RevertWith(ctxT(t), op.OpID, reconcile.RevertOptions{Force: true, AllowIrreversible: true}); err != nil || !res.Applied() {
		t.Fatalf("approved irreversible revert: %+v, %v", res, err)
	}

	// The policy: a revert is vetoed as any operation is.
	g := newFixture(t, nil, func(c *reconcile.Config) {
		c.Policy = func(_ context.Context, a reconcile.Action, _ reconcile.Observed) error {
			if a.Kind == reconcile.ActionShutdown {
				return errors.New("no shutdowns")
			}
			return nil
		}
	})
	revertGuests(g, false)
	start := mustApply(t, g.eng, reconcile.OneShot{Key: "s", Ref: qemu(100), Kind: reconcile.ActionStart})
	n = g.writes()
	if _, err := g.eng.Revert(ctxT(t), start.OpID); !errors.Is(err, reconcile.ErrVetoed) {
		t.Fatalf("vetoed revert: %v, want ErrVetoed", err)
	}
	if g.writes() != n {
		t.Fatal("the vetoed revert sent a write")
	}
}

// A requester's key can never be a revert's: the derived key holds a
// control character, which requesters' keys may not.
func TestRevertKeyCannotBeClaimed(t *testing.T) {
	f := newFixture(t, nil)
	revertGuests(f, false)
	op := mustApply(t, f.eng, reconcile.OneShot{Key: "k", Ref: qemu(100), Kind: reconcile.ActionStart})
	_, err := f.eng.Apply(ctxT(t), reconcile.OneShot{Key: "\x1frevert=" + op.OpID, Ref: qemu(100), Kind: reconcile.ActionStop})
	if !errors.Is(err, reconcile.ErrInvalidOneShot) {
		t.Fatalf("Apply with a revert's key: %v, want ErrInvalidOneShot", err)
	}
	if res, err := f.eng.Revert(ctxT(t), op.OpID); err != nil || !res.Applied() || res.Replayed {
		t.Fatalf("Revert: %+v, %v", res, err)
	}
}

// A revert survives a crash at every step: after a restart, Recover
// resolves it, and the next Revert returns its result or runs it, never
// twice.
func TestRevertCrashAtEveryCheckpoint(t *testing.T) {
	for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
		for _, point := range checkpoints {
			if ref.Type == proxmox.LXC && (point == checkpoint.AfterTaskRecord || point == checkpoint.AfterWait) {
				continue // an LXC configuration change starts no task
			}
			t.Run(string(ref.Type)+"/"+point, func(t *testing.T) {
				f := newFixture(t, nil)
				revertGuests(f, false)
				before := f.guest(ref).Config["memory"]
				path := filepath.Join(t.TempDir(), "ops.journal")
				j1 := openFileJournal(t, path)
				e1 := f.newEngine(j1)
				op := mustApply(t, e1, reconcile.OneShot{Key: "k", Ref: ref, Kind: reconcile.ActionSetConfig,
					Set: map[string]string{"memory": "4096", "cores": "2"}, Delete: []string{"tags"}})
				n := f.writes()
				// Only the revert runs under the failpoint.
				if _, err := e1.Revert(crashAt(t, point), op.OpID); err == nil && point != checkpoint.AfterOutcome {
					t.Fatalf("the revert did not crash at %s", point)
				}
				if err := f.srv.WaitIdle(ctxT(t)); err != nil {
					t.Fatal(err)
				}
				if err := j1.Close(); err != nil {
					t.Fatal(err)
				}
				j2 := openFileJournal(t, path)
				t.Cleanup(func() { j2.Close() })
				e2 := f.newEngine(j2)
				if rec, err := e2.Recover(ctxT(t)); err != nil {
					t.Fatalf("Recover: %v (%+v)", err, rec)
				}
				res, err := e2.Revert(ctxT(t), op.OpID)
				if err != nil || !res.Applied() {
					t.Fatalf("Revert after the crash: %+v, %v", res, err)
				}
				again, err := e2.Revert(ctxT(t), op.OpID)
				if err != nil || !again.Replayed || again.OpID != res.OpID {
					t.Fatalf("Revert again: %+v, %v", again, err)
				}
				if w := f.writes() - n; w != 1 {
					t.Errorf("the revert was sent %d times", w)
				}
				g := f.guest(ref)
				if g.Config["memory"] != before || g.Config["cores"] != "" || g.Config["tags"] != "a" {
					t.Errorf("after the revert memory=%q cores=%q tags=%q", g.Config["memory"], g.Config["cores"], g.Config["tags"])
				}
			})
		}
	}
}
