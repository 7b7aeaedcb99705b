package reconcile

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
)

// Observed is one guest as observed at the start of a pass.
//
// Config holds the guest's options as Proxmox's GET config returns them,
// with pending changes applied: a change that is already pending is thus
// never requested again. Pending lists the options whose change waits for a
// restart. Config is nil for a guest whose configuration was not fetched
// (guests nobody manages).
type Observed struct {
	Ref      proxmox.Ref
	Status   string // "running" or "stopped"; anything else is unknown
	Template bool
	Lock     string // "" when the guest is not locked
	Name     string
	Tags     []string
	Config   map[string]string
	Digest   string
	Pending  []proxmox.PendingItem // only options with a pending change
}

// ActionKind names what an [Action] does.
type ActionKind string

// The benign actions a plan is made of.
const (
	ActionStart     ActionKind = "start"
	ActionStop      ActionKind = "stop"
	ActionSetConfig ActionKind = "set_config"
	// ActionResize grows one disk or mount point to an absolute size.
	// Proxmox cannot shrink a disk, and an absolute size asked for twice
	// grows it once.
	ActionResize ActionKind = "resize"
)

// Action is one change to one guest.
type Action struct {
	Kind ActionKind  `json:"kind"`
	Ref  proxmox.Ref `json:"-"`
	// For ActionSetConfig: the options to set (only those that differ) and
	// to delete (only those present), and the digest of the configuration
	// the change was planned against, so that Proxmox refuses it if the
	// configuration changed meanwhile.
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
	Digest string            `json:"digest,omitempty"`
	// For ActionResize: the disk or mount point ("scsi0", "rootfs"), its
	// new size in bytes, and its size when the action was planned (0 when
	// the configuration did not say). Digest, when set, is the digest of
	// the configuration the resize was planned against.
	Disk     string `json:"disk,omitempty"`
	Size     int64  `json:"size,omitempty"`
	FromSize int64  `json:"from_size,omitempty"`
	// Class says whether [Engine.Revert] can undo the action once it
	// succeeded, and Why, for an irreversible one, says why not; see
	// [Reversibility]. Plan and the engine set them; an Action built by
	// hand is classified again before it runs.
	Class Reversibility `json:"class,omitempty"`
	Why   string        `json:"why,omitempty"`
	// Prior holds, for a reversible ActionSetConfig, the value each option
	// it sets or deletes had in the configuration it was planned against;
	// an option it names that is not in Prior was absent. The operation's
	// intent record journals them, and a revert restores them.
	Prior map[string]string `json:"-"`
}

func (a Action) String() string {
	switch a.Kind {
	case ActionSetConfig:
		var parts []string
		for _, k := range sortedKeys(a.Set) {
			parts = append(parts, k+"="+a.Set[k])
		}
		for _, k := range a.Delete {
			parts = append(parts, "-"+k)
		}
		return fmt.Sprintf("%s %s %s", a.Kind, a.Ref, strings.Join(parts, " "))
	case ActionResize:
		from := "?"
		if a.FromSize > 0 {
			from = normalize.FormatSize(a.FromSize)
		}
		return fmt.Sprintf("%s %s %s %s -> %s", a.Kind, a.Ref, a.Disk, from, normalize.FormatSize(a.Size))
	default:
		return fmt.Sprintf("%s %s", a.Kind, a.Ref)
	}
}

// Verdict is what a plan decided for one guest.
type Verdict string

// The verdicts.
const (
	InSync Verdict = "in_sync" // nothing to do
	Act    Verdict = "act"     // the guest's Actions bring it in line
	Skip   Verdict = "skip"    // the guest is reported, not acted on; see Reason
)

// SkipReason says why a guest was not acted on.
type SkipReason string

// The reasons a plan skips a guest. None of them is an error of the planner:
// each is a state that a person, or a later pass, must resolve.
const (
	SkipMissing       SkipReason = "missing"        // declared, but no such guest (provisioning is out of scope)
	SkipWrongType     SkipReason = "wrong_type"     // the vmid belongs to a guest of the other type
	SkipWrongNode     SkipReason = "wrong_node"     // the guest lives on another node (migrated?)
	SkipLocked        SkipReason = "locked"         // backup, migration, snapshot... in progress
	SkipTemplate      SkipReason = "template"       // a template cannot run
	SkipPending       SkipReason = "pending"        // changes wait for a restart; nothing more is stacked on them
	SkipStatusUnknown SkipReason = "status_unknown" // the power state is unknown (node offline?)
	SkipUnobserved    SkipReason = "unobserved"     // its configuration could not be read this pass
	SkipInvalid       SkipReason = "invalid"        // the declaration is invalid or duplicated
	// SkipShrink: a declared disk size is below the disk's current size.
	// Proxmox cannot shrink a disk; nothing of the guest is changed until
	// the declaration is corrected.
	SkipShrink SkipReason = "shrink"
	// SkipVolumeChange: the declaration would replace or remove a volume
	// that holds data (another volume id, a new allocation on another
	// storage, a cdrom or "none" in its slot, or the option listed in
	// Delete): Proxmox would detach the disk, and the guest would lose it.
	// Creating, moving and detaching disks is left to a person.
	SkipVolumeChange SkipReason = "volume_change"
	// SkipUnresolved is given by the engine, never by Plan: an earlier
	// operation on the guest is still in flight and Recover could not
	// resolve it yet (its node does not answer, say).
	SkipUnresolved SkipReason = "unresolved"
	// SkipIrreversible: an action the guest needs cannot be undone (see
	// [Reversibility]), and irreversible actions are not allowed
	// ([PlanOptions].AllowIrreversible, [Config].AllowIrreversible). The
	// Detail names the action and why it cannot be undone.
	SkipIrreversible SkipReason = "irreversible"
)

// FieldDiff is one declared option that differs.
type FieldDiff struct {
	Field   string `json:"field"`
	Desired string `json:"desired,omitempty"` // "" for an option that must be absent
	Actual  string `json:"actual,omitempty"`  // "" when the option is absent
	// Details explains the difference sub-key by sub-key, under the
	// normalize rules.
	Details []normalize.Diff `json:"details,omitempty"`
}

// GuestPlan is the plan for one declared guest.
type GuestPlan struct {
	Ref     proxmox.Ref `json:"-"`
	Verdict Verdict     `json:"verdict"`
	Reason  SkipReason  `json:"reason,omitempty"`
	Detail  string      `json:"detail,omitempty"`
	// Power is the change of power state, as "stopped -> running", or "".
	Power   string      `json:"power,omitempty"`
	Diffs   []FieldDiff `json:"diffs,omitempty"`
	Actions []Action    `json:"actions,omitempty"`
}

// PlanResult is a plan: one entry per declared guest, ordered by vmid.
type PlanResult struct {
	Guests []GuestPlan
}

// Actions returns every action of the plan, guest by guest.
func (r PlanResult) Actions() []Action {
	var out []Action
	for _, g := range r.Guests {
		out = append(out, g.Actions...)
	}
	return out
}

// Count returns how many guests got each verdict.
func (r PlanResult) Count() (inSync, act, skip int) {
	for _, g := range r.Guests {
		switch g.Verdict {
		case InSync:
			inSync++
		case Act:
			act++
		default:
			skip++
		}
	}
	return inSync, act, skip
}

// PlanOptions configures [Plan]. The zero value uses the default normalize
// rules of each guest type.
type PlanOptions struct {
	QEMU *normalize.Set // rules for QEMU guests; nil means normalize.QEMU()
	LXC  *normalize.Set // rules for LXC guests; nil means normalize.LXC()
	// AllowIrreversible lets a plan hold actions that cannot be undone
	// (see [Reversibility]); without it a guest that needs one is skipped
	// with [SkipIrreversible]. An engine sets it from
	// [Config].AllowIrreversible, whatever Config.Plan says.
	AllowIrreversible bool
}

func (o PlanOptions) withDefaults() PlanOptions {
	if o.QEMU == nil {
		o.QEMU = normalize.QEMU()
	}
	if o.LXC == nil {
		o.LXC = normalize.LXC()
	}
	return o
}

func (o PlanOptions) set(t proxmox.GuestType) *normalize.Set {
	if t == proxmox.LXC {
		return o.LXC
	}
	return o.QEMU
}

// Plan compares the desired state with the observed one and returns the
// minimal set of benign actions that brings every declared guest in line.
// It is pure: it reads its arguments, changes nothing, does no I/O, and
// returns the same plan for the same input.
//
// For each declared guest, in vmid order:
//
//   - a guest that is missing, of the other type, on another node, locked,
//     of unknown power state, not observed, or with changes pending a
//     restart is skipped with a reason and gets no action; so is a template
//     asked to run, and a declaration that is invalid or repeats a vmid;
//   - otherwise it gets a SetConfig with exactly the declared options whose
//     values differ under the normalize rules, plus the declared deletions
//     of options that are present, carrying the observed digest; and a
//     Start or Stop when the declared power state differs. A guest that must
//     end stopped is stopped before its configuration changes; one that
//     must end running has its configuration changed before it starts;
//   - every action is classified (see [Reversibility]); a guest that needs
//     an irreversible action is skipped with [SkipIrreversible] unless
//     opts.AllowIrreversible is set;
//   - a guest with nothing to change is in sync. Checking one costs no
//     allocation beyond its entry in the result.
//
// Observed guests that are not declared are ignored. desired is expected to
// have passed [ValidateDesired]; Plan only guards against invalid
// references and repeated vmids, and skips them.
func Plan(desired []Desired, actual []Observed, opts PlanOptions) PlanResult {
	opts = opts.withDefaults()
	byVMID := make(map[int]int, len(actual))
	for i := range actual {
		byVMID[actual[i].Ref.VMID] = i
	}
	order := make([]int, len(desired))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return desired[order[a]].Ref.VMID < desired[order[b]].Ref.VMID
	})

	res := PlanResult{Guests: make([]GuestPlan, 0, len(desired))}
	for n, i := range order {
		d := &desired[i]
		if n > 0 && desired[order[n-1]].Ref.VMID == d.Ref.VMID {
			res.Guests = append(res.Guests, skip(d.Ref, SkipInvalid, "vmid %d is declared more than once", d.Ref.VMID))
			continue
		}
		if err := d.Ref.Validate(); err != nil {
			res.Guests = append(res.Guests, skip(d.Ref, SkipInvalid, "%v", err))
			continue
		}
		if !d.Power.Valid() {
			res.Guests = append(res.Guests, skip(d.Ref, SkipInvalid, "unknown power state %q", string(d.Power)))
			continue
		}
		j, ok := byVMID[d.Ref.VMID]
		if !ok {
			res.Guests = append(res.Guests, skip(d.Ref, SkipMissing, "no guest with vmid %d exists", d.Ref.VMID))
			continue
		}
		g := planGuest(d, &actual[j], opts.set(d.Ref.Type))
		if g.Verdict == Act {
			gate(&g, &actual[j], opts.set(d.Ref.Type), opts.AllowIrreversible)
		}
		res.Guests = append(res.Guests, g)
	}
	return res
}

func skip(ref proxmox.Ref, reason SkipReason, format string, args ...any) GuestPlan {
	return GuestPlan{Ref: ref, Verdict: Skip, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// planGuest plans one declared guest that exists.
func planGuest(d *Desired, o *Observed, set *normalize.Set) GuestPlan {
	switch {
	case o.Ref.Type != d.Ref.Type:
		return skip(d.Ref, SkipWrongType, "vmid %d is a %s guest, declared as %s", d.Ref.VMID, o.Ref.Type, d.Ref.Type)
	case o.Ref.Node != d.Ref.Node:
		return skip(d.Ref, SkipWrongNode, "guest %d is on node %s, declared on %s", d.Ref.VMID, o.Ref.Node, d.Ref.Node)
	case o.Lock != "":
		return skip(d.Ref, SkipLocked, "locked (%s)", o.Lock)
	case d.Power == PowerRunning && o.Template:
		return skip(d.Ref, SkipTemplate, "a template cannot be started")
	}
	manageConfig := len(d.Config) > 0 || len(d.Delete) > 0
	if manageConfig && o.Config == nil {
		return skip(d.Ref, SkipUnobserved, "its configuration was not read")
	}

	// The common case, a guest in sync, is decided without allocating.
	configDiffers := false
	for f, want := range d.Config {
		if !set.Equal(f, want, o.Config[f]) {
			configDiffers = true
			break
		}
	}
	if !configDiffers {
		for _, f := range d.Delete {
			if _, ok := o.Config[f]; ok {
				configDiffers = true
				break
			}
		}
	}
	running := o.Status == "running"
	known := running || o.Status == "stopped"
	powerDiffers := (d.Power == PowerRunning && !running) || (d.Power == PowerStopped && (running || !known))
	if !configDiffers && !powerDiffers {
		g := GuestPlan{Ref: d.Ref, Verdict: InSync}
		if len(o.Pending) > 0 {
			g.Detail = "changes pending a restart: " + pendingKeys(o.Pending)
		}
		return g
	}
	if !known {
		return skip(d.Ref, SkipStatusUnknown, "power state %q is unknown", o.Status)
	}

	g := GuestPlan{Ref: d.Ref, Verdict: Act}
	var config []Action // the configuration changes, in the order they run
	if configDiffers {
		change := Action{Kind: ActionSetConfig, Ref: d.Ref}
		var resizes []Action
		for _, f := range sortedKeys(d.Config) {
			want, have := d.Config[f], o.Config[f]
			if set.Equal(f, want, have) {
				continue
			}
			g.Diffs = append(g.Diffs, FieldDiff{Field: f, Desired: want, Actual: have, Details: set.Explain(f, want, have)})
			vc := volumeChange(set, f, want, have)
			if vc.reason != "" {
				g.Verdict, g.Reason, g.Detail = Skip, vc.reason, vc.detail
				g.Actions = nil
				return g
			}
			if vc.send != "" {
				if change.Set == nil {
					change.Set = make(map[string]string)
				}
				change.Set[f] = vc.send
			}
			if vc.size > 0 {
				resizes = append(resizes, Action{Kind: ActionResize, Ref: d.Ref, Disk: f, Size: vc.size, FromSize: vc.from})
			}
		}
		dels := slices.Clone(d.Delete)
		sort.Strings(dels)
		for _, f := range dels {
			have, ok := o.Config[f]
			if !ok {
				continue
			}
			g.Diffs = append(g.Diffs, FieldDiff{Field: f, Actual: have})
			if v, ok := set.Volume(f, have); ok && v.HoldsData() {
				g.Verdict, g.Reason = Skip, SkipVolumeChange
				g.Detail = fmt.Sprintf("deleting %s would detach its volume %s; removing disks is left to a person", f, v.Volume)
				return g
			}
			change.Delete = append(change.Delete, f)
		}
		if len(change.Set) > 0 || len(change.Delete) > 0 {
			config = append(config, change)
		}
		config = append(config, resizes...)
		if len(config) > 0 {
			// The first change is guarded by the digest of the
			// configuration it was planned against. Each changes the
			// digest, so the later ones cannot carry it: they are
			// narrow (one disk grown to an absolute size, which
			// Proxmox refuses to shrink) and run right after, in the
			// same job of the guest's queue.
			config[0].Digest = o.Digest
		}
	}
	configDiffers = len(config) > 0
	if !configDiffers && !powerDiffers {
		// Only differences the volumes' rules settle (a size declared
		// as the disk already has it, say): nothing to do.
		g.Verdict, g.Diffs = InSync, nil
		if len(o.Pending) > 0 {
			g.Detail = "changes pending a restart: " + pendingKeys(o.Pending)
		}
		return g
	}
	if len(o.Pending) > 0 {
		g.Verdict, g.Reason = Skip, SkipPending
		g.Detail = "changes pending a restart (" + pendingKeys(o.Pending) + "); nothing more is changed until they are applied"
		return g
	}
	switch {
	case d.Power == PowerStopped && running:
		g.Power = "running -> stopped"
		g.Actions = append(g.Actions, Action{Kind: ActionStop, Ref: d.Ref})
		g.Actions = append(g.Actions, config...)
	case d.Power == PowerRunning && !running:
		g.Power = "stopped -> running"
		g.Actions = append(g.Actions, config...)
		g.Actions = append(g.Actions, Action{Kind: ActionStart, Ref: d.Ref})
	default:
		g.Actions = append(g.Actions, config...)
	}
	return g
}

func pendingKeys(items []proxmox.PendingItem) string {
	keys := make([]string, 0, len(items))
	for _, p := range items {
		keys = append(keys, p.Key)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}
