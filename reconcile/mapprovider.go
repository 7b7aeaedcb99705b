package reconcile

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/guestward/guestward/proxmox"
)

// MapProvider holds a desired state that its owner updates guest by guest,
// as a hub does when it learns of one change at a time: [MapProvider.Upsert]
// declares or redeclares guests, [MapProvider.Delete] stops managing them,
// and [MapProvider.Replace] swaps the whole state. Guests are keyed by vmid,
// which is unique in a cluster: a guest upserted again under the same vmid
// (after a migration to another node, say) replaces its earlier declaration.
//
// Every guest is validated as it comes in, under the [ValidateOptions] given
// to [NewMapProvider], and kept as a deep copy, so the caller may reuse what
// it passed. A pass sees the state as it was between two updates, never
// half of one. The function given to [MapProvider.Notify] learns which
// guests each update changed, so that only those need a pass:
//
//	p.Notify(func(refs ...proxmox.Ref) { engine.Trigger(refs...) })
//
// It is safe for concurrent use; its zero value is not usable.
type MapProvider struct {
	opts ValidateOptions // fixed at construction

	mu     sync.Mutex
	guests map[int]Desired
	snap   []Desired // sorted copy of guests; nil after a change, rebuilt by Desired
	notify func(refs ...proxmox.Ref)
}

// NewMapProvider returns an empty provider that validates what it is given
// under opts. Invalid opts are refused with the error of
// [ValidateOptions.Validate].
func NewMapProvider(opts ValidateOptions) (*MapProvider, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &MapProvider{
		opts:   ValidateOptions{AllowRootOnly: slices.Clone(opts.AllowRootOnly)},
		guests: make(map[int]Desired),
	}, nil
}

// Notify sets the function called after each update with the guests whose
// declaration it added or changed (not those deleted: a guest no longer
// declared is left alone, and needs no pass). It is called once per update
// that changed something, on the updating goroutine, after the update is
// visible to Desired, and never with the provider's lock held; it must be
// quick. nil removes it.
func (p *MapProvider) Notify(fn func(refs ...proxmox.Ref)) {
	p.mu.Lock()
	p.notify = fn
	p.mu.Unlock()
}

// Upsert declares ds, replacing the declarations of the same vmids. It is
// all or nothing: if any guest is invalid, or two of ds share a vmid, it
// returns a *DesiredError listing every problem and changes nothing.
func (p *MapProvider) Upsert(ds ...Desired) error {
	if err := ValidateDesiredWith(ds, p.opts); err != nil {
		return err
	}
	p.mu.Lock()
	var changed []proxmox.Ref
	for _, d := range cloneDesired(ds) {
		if old, ok := p.guests[d.Ref.VMID]; ok && sameDesired(old, d) {
			continue
		}
		p.guests[d.Ref.VMID] = d
		changed = append(changed, d.Ref)
	}
	return p.changed(changed)
}

// Delete stops managing the guests with these vmids, and returns how many
// were declared. A guest no longer declared is left as it is.
func (p *MapProvider) Delete(vmids ...int) int {
	p.mu.Lock()
	n := 0
	for _, id := range vmids {
		if _, ok := p.guests[id]; ok {
			delete(p.guests, id)
			n++
		}
	}
	if n > 0 {
		p.snap = nil
	}
	p.mu.Unlock()
	return n
}

// Replace makes ds the whole desired state, as [StaticProvider.Set] does:
// guests left out are no longer managed. It validates ds as a whole first
// (see [ValidateDesiredWith]); an invalid state is refused with a
// *DesiredError and the previous one is kept.
func (p *MapProvider) Replace(ds []Desired) error {
	if err := ValidateDesiredWith(ds, p.opts); err != nil {
		return err
	}
	next := make(map[int]Desired, len(ds))
	var changed []proxmox.Ref
	p.mu.Lock()
	for _, d := range cloneDesired(ds) {
		next[d.Ref.VMID] = d
		if old, ok := p.guests[d.Ref.VMID]; !ok || !sameDesired(old, d) {
			changed = append(changed, d.Ref)
		}
	}
	removed := false
	for id := range p.guests {
		if _, ok := next[id]; !ok {
			removed = true
		}
	}
	p.guests = next
	if removed {
		p.snap = nil
	}
	return p.changed(changed)
}

// changed finishes an update made under p.mu, which it releases: the
// snapshot is dropped if anything changed, and Notify's function is called.
func (p *MapProvider) changed(refs []proxmox.Ref) error {
	if len(refs) == 0 {
		p.mu.Unlock()
		return nil
	}
	p.snap = nil
	fn := p.notify
	p.mu.Unlock()
	if fn != nil {
		fn(refs...)
	}
	return nil
}

// Get returns a copy of the declaration of the guest with this vmid.
func (p *MapProvider) Get(vmid int) (Desired, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.guests[vmid]
	if !ok {
		return Desired{}, false
	}
	return cloneDesired([]Desired{d})[0], true
}

// Len returns the number of guests declared.
func (p *MapProvider) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.guests)
}

// Desired returns the current state, sorted by vmid. The slice is shared
// between callers until the next update, and must not be modified.
func (p *MapProvider) Desired(context.Context) ([]Desired, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.snap == nil {
		snap := make([]Desired, 0, len(p.guests))
		for _, d := range p.guests {
			snap = append(snap, d)
		}
		sortDesired(snap)
		p.snap = snap
	}
	return p.snap, nil
}

// sameDesired reports whether two declarations say the same thing.
func sameDesired(a, b Desired) bool {
	return a.Ref == b.Ref && a.Power == b.Power && maps.Equal(a.Config, b.Config) &&
		slices.Equal(a.Delete, b.Delete)
}

var _ DesiredProvider = (*MapProvider)(nil)
