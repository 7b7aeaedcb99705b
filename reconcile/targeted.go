package reconcile

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/guestward/guestward/proxmox"
)

// ReconcileGuests runs a targeted pass: the pass [Engine.ReconcileOnce]
// runs, over just the declared guests among refs (matched by vmid; a ref
// that names no declared guest is ignored, and no ref means no pass).
// It reads the desired state and checks all of it as a full pass does,
// then reads only those guests, each at its declared place and exactly
// (status/current and the pending endpoint: two requests, and no cluster
// list). A guest that is not there, whether missing, of another type or
// moved to another node, is reported missing with what Proxmox answered.
//
// It shares everything else with a full pass: it waits for the pass in
// progress, recovers first when needed, acts through the queue, and
// returns the same kind of report (with Listed zero).
func (e *Engine) ReconcileGuests(ctx context.Context, refs ...proxmox.Ref) (Report, error) {
	if len(refs) == 0 {
		if e.isDraining() {
			return Report{}, fmt.Errorf("%w: no pass starts", ErrDraining)
		}
		return Report{Start: e.cfg.Now(), DryRun: e.cfg.DryRun}, nil
	}
	return e.reconcile(ctx, refs)
}

// triggered collects what the triggers since the last pass of Run asked
// for: a full pass, or passes over named guests. Its zero value is ready;
// it is safe for concurrent use.
type triggered struct {
	mu   sync.Mutex
	full bool
	refs map[int]proxmox.Ref // by vmid: the latest ref named wins
}

func (t *triggered) add(refs []proxmox.Ref) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(refs) == 0 {
		t.full, t.refs = true, nil
		return
	}
	if t.full {
		return // the full pass covers them
	}
	if t.refs == nil {
		t.refs = make(map[int]proxmox.Ref, len(refs))
	}
	for _, r := range refs {
		t.refs[r.VMID] = r
	}
}

// take returns and forgets what was asked for: full, or the guests named,
// sorted by vmid.
func (t *triggered) take() (full bool, refs []proxmox.Ref) {
	t.mu.Lock()
	defer t.mu.Unlock()
	full = t.full
	for _, r := range t.refs {
		refs = append(refs, r)
	}
	t.full, t.refs = false, nil
	sort.Slice(refs, func(i, j int) bool { return refs[i].VMID < refs[j].VMID })
	return full, refs
}

// nextPass runs the pass Run owes: a full one when the interval ran out
// (full) or a trigger without guests asked for it, else a targeted one
// over the guests the triggers named. ran is false when there was none to
// run: a trigger whose guests a full pass already took.
func (e *Engine) nextPass(ctx context.Context, full bool) (rep Report, ran bool, err error) {
	all, refs := e.named.take()
	switch {
	case full || all:
		rep, err = e.ReconcileOnce(ctx)
	case len(refs) > 0:
		rep, err = e.ReconcileGuests(ctx, refs...)
	default:
		return Report{}, false, nil
	}
	return rep, true, err
}
