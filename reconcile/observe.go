package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/guestward/guestward/proxmox"
)

// Observation.
//
// A full pass reads what the cluster-wide guest list gives (node, type,
// name, power state) from the list, then one request per declared guest:
// GET .../pending ([proxmox.Client.PendingConfig]), which carries the
// configuration, its digest, the lock, the template flag, the tags and the
// pending changes together, all from one version of the config file. The
// one thing the pass takes from the list alone is the power state, which
// the list builds from statistics each node broadcasts every ten seconds
// (pvestatd), so it can lag. A stale power state never causes a wrong
// action: before acting on a guest, in the guest's queue lane, the engine
// reads its exact state (status/current) and plans that guest again
// (recheck); a guest the stale state showed in sync is planned again at
// the next pass. A start that finds the guest running, or a stop that
// finds it stopped, succeeds as the no-op it is.
//
// A targeted pass ([Engine.ReconcileGuests]) and a one-shot operation read
// only their guests, each with two exact requests (status/current and
// pending) and no list.

// observeListed reads the configuration of every declared guest that the
// list shows with the declared type on the declared node. Guests it could
// not read have a nil Config; their errors are returned by vmid.
func (e *Engine) observeListed(ctx context.Context, desired []Desired, guests []proxmox.Guest, tr *passTracker) ([]Observed, map[int]error) {
	observed := make([]Observed, len(guests))
	index := make(map[int]int, len(guests))
	for i, g := range guests {
		observed[i] = Observed{Ref: g.Ref, Status: g.Status, Template: g.Template, Lock: g.Lock, Name: g.Name, Tags: g.Tags}
		index[g.Ref.VMID] = i
	}
	var todo []int
	for _, d := range desired {
		if i, ok := index[d.Ref.VMID]; ok && observed[i].Ref == d.Ref {
			todo = append(todo, i)
		}
	}
	errs := e.observeEach(ctx, observed, todo, e.readConfig, tr)
	return observed, errs
}

// observeRefs reads the declared guests of a targeted pass exactly, each
// at its declared place, without the cluster list. A guest that is not
// there (missing, another type, or moved to another node) is left out of
// the observations, so the plan reports it missing; its error is
// returned by vmid with the others.
func (e *Engine) observeRefs(ctx context.Context, desired []Desired, tr *passTracker) ([]Observed, map[int]error) {
	all := make([]Observed, len(desired))
	todo := make([]int, len(desired))
	for i, d := range desired {
		all[i], todo[i] = Observed{Ref: d.Ref}, i
	}
	errs := e.observeEach(ctx, all, todo, e.observeOne, tr)
	observed := all[:0]
	for _, o := range all {
		if err := errs[o.Ref.VMID]; err != nil && errors.Is(err, proxmox.ErrNotFound) {
			continue
		}
		observed = append(observed, o)
	}
	return observed, errs
}

// observeEach runs read on observed[i] for every i in todo. Each node gets
// its own workers, at most NodeConcurrency of them, and all of them
// together hold at most Concurrency requests at once: a slow or
// unreachable node ties up its own workers and at most NodeConcurrency of
// the global slots, while the other nodes' guests go on. Guests are
// taken in vmid order within a node. It reports the observe phase to tr:
// a tick per guest read, and the end, with the guests it gave up on when
// ctx ended counted as done.
func (e *Engine) observeEach(ctx context.Context, observed []Observed, todo []int, read func(context.Context, *Observed) error, tr *passTracker) map[int]error {
	tr.phase(PhaseObserve, len(todo))
	defer tr.finish(len(todo))
	byNode := make(map[string][]int)
	for _, i := range todo {
		n := observed[i].Ref.Node
		byNode[n] = append(byNode[n], i)
	}
	var mu sync.Mutex
	errs := make(map[int]error)
	global := make(chan struct{}, e.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, idx := range byNode {
		sort.Slice(idx, func(a, b int) bool { return observed[idx[a]].Ref.VMID < observed[idx[b]].Ref.VMID })
		var next atomic.Int64
		for range min(len(idx), e.cfg.NodeConcurrency) {
			wg.Go(func() {
				for {
					k := int(next.Add(1) - 1)
					if k >= len(idx) {
						return
					}
					select {
					case global <- struct{}{}:
					case <-ctx.Done():
						return
					}
					o := &observed[idx[k]]
					err := read(ctx, o)
					<-global
					tr.tick()
					if err != nil {
						mu.Lock()
						errs[o.Ref.VMID] = err
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	return errs
}

// readConfig fills in what one request to the pending endpoint tells of
// a listed guest: its configuration and digest, its lock, whether it is a
// template, its tags and its pending changes. The power state stays the
// list's.
func (e *Engine) readConfig(ctx context.Context, o *Observed) error {
	pc, err := e.cfg.Proxmox.PendingConfig(ctx, o.Ref)
	if err != nil {
		return fmt.Errorf("reading config and pending changes: %w", err)
	}
	o.setConfig(pc)
	return nil
}

// observeOne reads one guest's exact status, and its configuration with
// pending changes, digest and lock, in two requests.
func (e *Engine) observeOne(ctx context.Context, o *Observed) error {
	st, err := e.cfg.Proxmox.Status(ctx, o.Ref)
	if err != nil {
		return fmt.Errorf("reading status: %w", err)
	}
	pc, err := e.cfg.Proxmox.PendingConfig(ctx, o.Ref)
	if err != nil {
		return fmt.Errorf("reading config and pending changes: %w", err)
	}
	if st.Name != "" {
		o.Name = st.Name
	}
	o.Status = st.Status
	o.setConfig(pc)
	return nil
}

// setConfig takes the configuration, digest, lock, template flag, tags and
// pending changes from one read of the pending endpoint: they describe
// one version of the config file.
func (o *Observed) setConfig(pc proxmox.PendingConfig) {
	o.Config, o.Digest = pc.Config.Values, pc.Config.Digest
	if o.Config == nil {
		o.Config = map[string]string{}
	}
	o.Lock, o.Template = pc.Lock(), pc.Template()
	o.Tags = proxmox.SplitTags(pc.Config.Values["tags"])
	o.Pending = pc.Changes()
}

// recheck reads the exact power state and lock of a guest about to be
// acted on, in its queue lane, and plans it again from what it observed
// with them. It returns the observation to act on and true, or false when
// the guest needs nothing after all or cannot be acted on; gr then holds
// the new plan and the guest's outcome.
func (e *Engine) recheck(ctx context.Context, d Desired, gr *GuestReport, obs Observed) (Observed, bool) {
	st, err := e.cfg.Proxmox.Status(ctx, obs.Ref)
	if err != nil {
		gr.Outcome, gr.Reason = GuestSkipped, SkipUnobserved
		if ctx.Err() != nil {
			gr.Outcome, gr.Reason = GuestInterrupted, ""
		}
		gr.Detail = fmt.Sprintf("reading status before acting: %v", err)
		return obs, false
	}
	// status/current reads the lock from the config file, as the pass's
	// read did, only later.
	obs.Status, obs.Lock = st.Status, st.Lock
	p := Plan([]Desired{d}, []Observed{obs}, e.plan)
	g := p.Guests[0]
	gr.Plan = g
	switch g.Verdict {
	case InSync:
		gr.Outcome, gr.Detail = GuestInSync, g.Detail
		return obs, false
	case Skip:
		gr.Outcome, gr.Reason, gr.Detail = GuestSkipped, g.Reason, g.Detail
		return obs, false
	}
	return obs, true
}

// targeted returns the declared guests named by targets, matched by vmid
// (a guest that moved is still the one declared).
func targeted(desired []Desired, targets []proxmox.Ref) []Desired {
	want := make(map[int]bool, len(targets))
	for _, r := range targets {
		want[r.VMID] = true
	}
	var out []Desired
	for _, d := range desired {
		if want[d.Ref.VMID] {
			out = append(out, d)
		}
	}
	return out
}
