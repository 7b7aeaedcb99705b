package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
)

// Reversibility says whether an action can be undone once it succeeded:
// whether [Engine.Revert] can bring the guest back to exactly where the
// action found it. The package documentation lists the class of every
// action and option family, with the reason.
type Reversibility string

// The classes of actions.
const (
	// Reversible: the action's effect can be undone exactly. A power
	// action is undone by the opposite one; a configuration change by
	// writing back the values it replaced, which its intent record
	// journals.
	Reversible Reversibility = "reversible"
	// Irreversible: undoing the action is impossible (a disk cannot
	// shrink), would lose data (a volume would have to be removed), or
	// could not restore what was there (its prior value cannot be read,
	// is too large to journal, or Proxmox changes options the action does
	// not name). Passes and one-shots perform such an action only when
	// allowed ([Config].AllowIrreversible, [OneShot].AllowIrreversible).
	Irreversible Reversibility = "irreversible"
)

// MaxPriorValue is the longest prior value, in bytes, a configuration
// change journals for its undo; a change replacing a longer value is
// irreversible. It is the longest value Proxmox accepts for its longest
// free-text option: a description of proxmox.MaxDescription characters,
// each up to 4 bytes of UTF-8. Every other option is one short line.
//
// The prior values of one change are bounded as a whole too: writing them
// back is one request, which must fit Proxmox's limit on a request body
// (64 KiB). A change whose undo would not fit is irreversible. So an
// intent record holds at most about 64 KiB of prior values next to at
// most 64 KiB of new ones, far within the journal's limit on a record
// (journal.MaxEntrySize).
const MaxPriorValue = 4 * proxmox.MaxDescription

// maxUndoBound is a bound on the encoded size of an undo below which it
// surely fits in one request (Proxmox takes 64 KiB; the digest and the
// delete parameter's name are what the margin is for).
const maxUndoBound = 60 << 10

// errNeverAllowed is wrapped by the refusal of a configuration change that
// no approval allows: deleting an option that holds a volume, which
// Proxmox detaches or destroys.
var errNeverAllowed = errors.New("never done by the engine")

// classification is what classifyAction decided for one action.
type classification struct {
	class Reversibility
	why   string
	// prior holds the prior values of the options a reversible
	// configuration change names that were present.
	prior map[string]string
	// refuse, when set, is why the action must never run, approved or
	// not; it wraps errNeverAllowed.
	refuse error
}

// classifyAction decides the class of an action against the configuration it
// is planned against (cfg, as GET config returns it: pending changes
// applied). It is the one function that passes, one-shots and reverts
// classify through.
func classifyAction(a *Action, cfg map[string]string, set *normalize.Set) classification {
	switch a.Kind {
	case ActionStart, ActionStop, ActionShutdown, ActionReboot:
		return classification{class: Reversible}
	case ActionResize:
		return classification{class: Irreversible, why: fmt.Sprintf("%s: Proxmox cannot shrink a disk, so a resize cannot be undone", a.Disk)}
	case ActionSetConfig:
		return classifyChange(a, cfg, set)
	}
	return classification{class: Irreversible, why: fmt.Sprintf("unknown action kind %q", a.Kind)}
}

// classifyChange classifies a configuration change, option by option, in
// sorted order so that the reason given is the same on every run.
func classifyChange(a *Action, cfg map[string]string, set *normalize.Set) classification {
	irr := func(format string, args ...any) classification {
		return classification{class: Irreversible, why: fmt.Sprintf(format, args...)}
	}
	qemu := a.Ref.Type == proxmox.QEMU
	names := func(k string) bool {
		_, ok := a.Set[k]
		return ok || slices.Contains(a.Delete, k)
	}
	// Deleting a volume first: it is refused outright, whatever else.
	for _, k := range slices.Sorted(slices.Values(a.Delete)) {
		have, ok := cfg[k]
		if !ok {
			continue
		}
		if isUnused(k) {
			return classification{class: Irreversible, why: fmt.Sprintf("deleting %s destroys its volume", k),
				refuse: fmt.Errorf("%w: deleting %s would destroy volume %q", errNeverAllowed, k, have)}
		}
		if v, ok := set.Volume(k, have); ok && v.HoldsData() {
			return classification{class: Irreversible, why: fmt.Sprintf("deleting %s detaches its volume", k),
				refuse: fmt.Errorf("%w: deleting %s would detach its volume %s", errNeverAllowed, k, v.Volume)}
		}
	}
	if qemu && !names("boot") {
		for _, k := range slices.Sorted(slices.Values(a.Delete)) {
			if _, ok := cfg[k]; ok && inBootOrder(cfg["boot"], k) {
				// update_vm_api takes a deleted device out of an
				// order= boot list as well.
				return irr("%s: deleting it also takes it out of the boot order, an option the change does not name", k)
			}
		}
	}
	var keys []string
	for k := range a.Set {
		keys = append(keys, k)
	}
	keys = append(keys, a.Delete...)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	total := 0
	for _, k := range keys {
		have, present := cfg[k]
		want, setting := a.Set[k]
		switch {
		case qemu && k == "cipassword":
			// qemu-server's update_vm_api stores it hashed
			// (encrypt_pw), and its vm_config and vm_pending answer
			// "**********" for it: what was there cannot be read, so
			// it cannot be written back.
			return irr("cipassword: Proxmox stores it hashed and reads it back masked, so its prior value cannot be restored")
		case isUnused(k):
			return irr("%s: an unused volume's slot is Proxmox's to manage; setting it cannot be undone without touching the volume", k)
		case setting && isVolumeKey(set, k):
			if why := volumeSetWhy(set, k, want, have, present, qemu, names("boot")); why != "" {
				return irr("%s", why)
			}
		case qemu && setting && k == "ostype" && !names("machine"):
			if _, ok := cfg["machine"]; !ok {
				// update_vm_api pins the machine version when the
				// OS type changes and machine is neither set nor
				// being changed: an option the change does not name.
				return irr("ostype: Proxmox may pin the machine version when the OS type changes, adding an option (machine) the change does not name")
			}
		}
		if present {
			if len(have) > MaxPriorValue {
				return irr("%s: its prior value is %d bytes, more than the %d a change journals for its undo", k, len(have), MaxPriorValue)
			}
			total += len(have)
		}
	}
	prior := make(map[string]string, len(keys))
	// The undo is built and checked as the client would send it only when
	// it might not fit or hold a value the client refuses: percent-encoding
	// at most triples a value, so most changes are clear at a glance, and
	// a pass classifies every change it plans.
	bound, odd := 0, false
	for _, k := range keys {
		if have, ok := cfg[k]; ok {
			prior[k] = have
			bound += 3*(len(k)+len(have)) + 2
			odd = odd || strings.ContainsAny(have, "\r\n\x00") || !utf8.ValidString(have)
		} else {
			bound += 3*len(k) + 1
		}
	}
	if bound < maxUndoBound && !odd {
		return classification{class: Reversible, prior: prior}
	}
	undo := proxmox.ConfigChange{Digest: strings.Repeat("0", 40)}
	for _, k := range keys {
		if have, ok := prior[k]; ok {
			if undo.Set == nil {
				undo.Set = make(map[string]string)
			}
			undo.Set[k] = have
		} else {
			undo.Delete = append(undo.Delete, k)
		}
	}
	if err := undo.Validate(); err != nil {
		// Most often: the prior values together would not fit in one
		// request to Proxmox (total bytes).
		return irr("its undo could not be sent (%d bytes of prior values): %v", total, err)
	}
	return classification{class: Reversible, prior: prior}
}

// inBootOrder reports whether a QEMU boot value ("order=scsi0;net0")
// lists device k.
func inBootOrder(boot, k string) bool {
	for _, part := range strings.Split(boot, ",") {
		if list, ok := strings.CutPrefix(strings.TrimSpace(part), "order="); ok {
			return slices.Contains(strings.FieldsFunc(list, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }), k)
		}
	}
	return false
}

// isUnused reports an unusedN option: a volume detached from the guest,
// which Proxmox destroys when the option is deleted (qemu-server's
// vmconfig_delete_or_detach_drive, pve-container's delete of an unused
// mount point).
func isUnused(k string) bool {
	n, ok := strings.CutPrefix(k, "unused")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil
}

// isVolumeKey reports an option that may hold a volume: QEMU's ideN,
// sataN, scsiN, virtioN, efidisk0 and tpmstate0, LXC's rootfs and mpN.
func isVolumeKey(set *normalize.Set, k string) bool {
	// Volume tells the family apart from the value's shape; a value
	// that names a volume on "s" reads in every disk option.
	_, ok := set.Volume(k, "s:v")
	return ok
}

// volumeSetWhy returns why setting a disk or mount point option cannot be
// undone, or "" when it can: only a change of the options of the volume
// the slot already holds, at the same size, is written back exactly.
// Anything else allocates, attaches or detaches a volume, or, for a QEMU
// cdrom drive, may change the boot order: update_vm_api appends a CD
// drive missing from an order= list to it, unless boot is part of the
// change.
func volumeSetWhy(set *normalize.Set, k, want, have string, present, qemu, bootNamed bool) string {
	nv, nok := set.Volume(k, want)
	if !nok {
		return fmt.Sprintf("%s: the value %q cannot be read as a disk", k, want)
	}
	if qemu && nv.CDROM && !bootNamed {
		return fmt.Sprintf("%s: Proxmox may append a CD drive to the boot order, an option the change does not name", k)
	}
	if !present {
		return fmt.Sprintf("%s: setting an empty slot attaches or allocates a volume, and undoing it would remove one", k)
	}
	pv, pok := set.Volume(k, have)
	switch {
	case !pok:
		return fmt.Sprintf("%s: its prior value %q cannot be read as a disk", k, have)
	case nv.Alloc:
		return fmt.Sprintf("%s: %q allocates a new volume", k, want)
	case nv.Volume != pv.Volume:
		return fmt.Sprintf("%s: replacing volume %s with %s detaches it", k, pv.Volume, nv.Volume)
	case nv.Size > 0 && nv.Size != pv.Size:
		return fmt.Sprintf("%s: a size change is a resize, which Proxmox cannot shrink back", k)
	}
	return ""
}

// gate classifies the actions of a guest the plan acts on, and skips the
// guest with SkipIrreversible when one cannot be undone and allow is not
// set. A change that must never run (deleting a volume) skips it with
// SkipVolumeChange, allowed or not; Plan never plans one, but this is the
// same function one-shots go through.
func gate(g *GuestPlan, o *Observed, set *normalize.Set, allow bool) {
	for i := range g.Actions {
		a := &g.Actions[i]
		c := classifyAction(a, o.Config, set)
		a.Class, a.Why, a.Prior = c.class, c.why, c.prior
		switch {
		case c.refuse != nil:
			g.Verdict, g.Reason, g.Detail, g.Actions = Skip, SkipVolumeChange, c.refuse.Error(), nil
			return
		case c.class == Irreversible && !allow:
			g.Verdict, g.Reason, g.Actions = Skip, SkipIrreversible, nil
			g.Detail = fmt.Sprintf("%s cannot be undone (%s), and irreversible actions are not allowed", a.Kind, c.why)
			return
		}
	}
}

// Journal parameters of reversibility.
const (
	// paramClass is the operation's Reversibility; paramWhy why an
	// irreversible one cannot be undone.
	paramClass = "class"
	paramWhy   = "why"
	// paramPrior + option holds the value an option a reversible
	// configuration change names had before it; paramAbsent lists, comma
	// separated, those that were absent.
	paramPrior  = "prior:"
	paramAbsent = "absent"
	// paramReverts names the operation a revert undoes.
	paramReverts = "reverts"
)

// reversibilityParams adds an operation's class and prior values to its
// journal parameters.
func (o *op) reversibilityParams(p map[string]string) {
	if o.class == "" {
		return
	}
	p[paramClass] = string(o.class)
	if o.class == Irreversible {
		if o.why != "" {
			p[paramWhy] = o.why
		}
		return
	}
	if o.kind != ActionSetConfig {
		return
	}
	var absent []string
	for k := range o.set {
		if v, ok := o.prior[k]; ok {
			p[paramPrior+k] = v
		} else {
			absent = append(absent, k)
		}
	}
	for _, k := range o.del {
		if v, ok := o.prior[k]; ok {
			p[paramPrior+k] = v
		} else if !slices.Contains(absent, k) {
			absent = append(absent, k)
		}
	}
	if len(absent) > 0 {
		slices.Sort(absent)
		p[paramAbsent] = strings.Join(absent, ",")
	}
}

// reversibilityFromParams reads back what reversibilityParams wrote.
func (o *op) reversibilityFromParams(p map[string]string) {
	o.class, o.why, o.reverts = Reversibility(p[paramClass]), p[paramWhy], p[paramReverts]
	for k, v := range p {
		if name, ok := strings.CutPrefix(k, paramPrior); ok {
			if o.prior == nil {
				o.prior = make(map[string]string)
			}
			o.prior[name] = v
		}
	}
}

// engineParam reports the journal parameters the engine adds of its own,
// which are not part of what an idempotency key names: the same request
// made against a configuration that changed meanwhile has other prior
// values, and is still the same request.
func engineParam(k string) bool {
	return k == paramClass || k == paramWhy || k == paramAbsent || strings.HasPrefix(k, paramPrior)
}

// classifyOp classifies an operation about to run against the guest as
// observed, and records the class and prior values on it.
func (e *Engine) classifyOp(o *op, obs Observed) classification {
	a := o.action()
	c := classifyAction(&a, obs.Config, e.normalizeSet(o.ref.Type))
	o.class, o.why, o.prior = c.class, c.why, maps.Clone(c.prior)
	return c
}

// oneShotGate classifies a one-shot operation (or a revert) against the
// guest as observed in its lane, records the class and prior values on
// it, and refuses an irreversible one that is not approved, and a change
// that is never made.
func (e *Engine) oneShotGate(o *op, obs Observed, approved bool) error {
	c := e.classifyOp(o, obs)
	switch {
	case c.refuse != nil:
		return fmt.Errorf("%w: %s on %s, even approved: %w", ErrIrreversible, o.kind, o.ref, c.refuse)
	case c.class == Irreversible && !approved:
		return fmt.Errorf("%w: %s on %s cannot be undone: %s", ErrIrreversible, o.kind, o.ref, c.why)
	}
	return nil
}

// digestMark begins the Error of the Succeeded record of a reversible
// configuration change: the digest of the configuration the change
// produced follows it. The journal lets a record after the first add
// nothing to an operation's parameters; its Error is the one field a
// terminal record carries of its own, and it is otherwise empty on
// success. A revert is guarded by this digest (see [Engine.Revert]).
const digestMark = "config digest: "

// producedDigest reads the digest of the configuration a reversible
// configuration change produced, as the Error of its Succeeded record
// (digestMark), or "" when there is none to record or it cannot be read;
// such an operation can be reverted only with RevertOptions.Force. It is
// read right after the change, in the guest's queue lane, so only a
// writer outside the engine can slip in between.
func (e *Engine) producedDigest(ctx context.Context, o *op) string {
	if o.kind != ActionSetConfig || o.class != Reversible {
		return ""
	}
	cfg, err := e.cfg.Proxmox.Config(ctx, o.ref)
	if err != nil || cfg.Digest == "" {
		e.log.WarnContext(ctx, "could not read the digest a change produced; reverting it will need force", "op", o.id, "guest", o.ref.String(), "err", err)
		return ""
	}
	return digestMark + cfg.Digest
}

// succeededDigest returns the digest a succeeded operation's record
// carries (see digestMark), or "".
func succeededDigest(en journal.Entry) string {
	if en.State != journal.Succeeded {
		return ""
	}
	d, _ := strings.CutPrefix(en.Error, digestMark)
	if d == en.Error {
		return ""
	}
	return d
}
