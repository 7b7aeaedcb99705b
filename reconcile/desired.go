package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/guestward/guestward/proxmox"
)

// Power is the power state a guest should be in.
type Power string

// The power states a [Desired] may ask for.
const (
	PowerAny     Power = ""        // leave the power state as it is
	PowerRunning Power = "running" // start the guest if it is stopped
	PowerStopped Power = "stopped" // stop the guest if it is running
)

// Valid reports whether p is one of the declared power states.
func (p Power) Valid() bool { return p == PowerAny || p == PowerRunning || p == PowerStopped }

// Desired is the declared state of one guest. Only what it declares is
// managed: a config field it does not name is left alone, whatever its value,
// and [PowerAny] leaves the power state alone.
//
// A Desired is a plain value. Plan and the engine never modify one; the maps
// and slices must not be modified while a Plan or a pass reads them.
type Desired struct {
	Ref   proxmox.Ref
	Power Power
	// Config maps option names to the values they must have, written as
	// Proxmox's API takes them ("memory": "4096", "net0":
	// "virtio,bridge=vmbr0"). Values are compared under the normalize rules,
	// so Proxmox's own rewriting never counts as a difference.
	Config map[string]string
	// Delete names options that must be absent.
	Delete []string
}

// ErrInvalidDesired is returned, wrapped in a *DesiredError, when the
// desired state cannot be acted on. Nothing is acted on when the desired
// state as a whole is invalid.
var ErrInvalidDesired = errors.New("reconcile: invalid desired state")

// ErrForbiddenKey is matched by the *DesiredError of a desired state that
// sets or deletes an option it may not manage: one that is not the guest's
// configuration at all, or one Proxmox reserves for root@pam that the
// [ValidateOptions] in force do not allow. See [ValidateDesiredWith] for
// the list. Such an error matches [ErrInvalidDesired] too.
var ErrForbiddenKey = errors.New("reconcile: option may not be managed")

// DesiredError describes what is wrong with a desired state: one problem per
// entry, in the order of the guests.
type DesiredError struct {
	Problems []string

	forbidden bool // some problem is a forbidden option: Is(ErrForbiddenKey)
}

func (e *DesiredError) Error() string {
	if len(e.Problems) == 1 {
		return "reconcile: invalid desired state: " + e.Problems[0]
	}
	return fmt.Sprintf("reconcile: invalid desired state (%d problems): %s",
		len(e.Problems), strings.Join(e.Problems, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalidDesired) true.
func (e *DesiredError) Unwrap() error { return ErrInvalidDesired }

// Is makes errors.Is(err, ErrForbiddenKey) true when one of the problems
// is an option the desired state may not manage.
func (e *DesiredError) Is(target error) bool { return target == ErrForbiddenKey && e.forbidden }

// Validate reports what makes d unusable: an invalid reference, an unknown
// power state, a config value no Proxmox guest could hold, an option name
// that is not lower-case, an option that is both set and deleted, or an
// option a desired state may not manage (see [ValidateDesiredWith]), under
// the default [ValidateOptions]. It returns nil or a *DesiredError.
func (d Desired) Validate() error { return d.ValidateWith(ValidateOptions{}) }

// ValidateWith is [Desired.Validate] under opts. Invalid opts make every
// desired state invalid, with the error of [ValidateOptions.Validate].
func (d Desired) ValidateWith(opts ValidateOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	var e DesiredError
	d.problems(&e, opts)
	if len(e.Problems) > 0 {
		return &e
	}
	return nil
}

// problems adds to e what is wrong with d; opts must be valid.
func (d Desired) problems(e *DesiredError, opts ValidateOptions) {
	add := func(format string, args ...any) {
		e.Problems = append(e.Problems, d.Ref.String()+": "+fmt.Sprintf(format, args...))
	}
	if err := d.Ref.Validate(); err != nil {
		e.Problems = append(e.Problems, fmt.Sprintf("guest %q: %v", d.Ref.String(), err))
	}
	if !d.Power.Valid() {
		add("power %q is neither %q, %q nor empty", string(d.Power), PowerRunning, PowerStopped)
	}
	// The options it sets, in sorted order: those with an empty value,
	// then those it may not set. Only the few at fault are sorted.
	var empty, bad []string
	for k, v := range d.Config {
		if v == "" {
			empty = append(empty, k)
		}
		if forbiddenOption(d.Ref.Type, k, v, true, opts) != "" || !lowerCase(k) {
			bad = append(bad, k)
		}
	}
	slices.Sort(empty)
	for _, k := range empty {
		add("option %q has an empty value; list it in Delete to remove it", k)
	}
	slices.Sort(bad)
	for _, k := range bad {
		if why := forbiddenOption(d.Ref.Type, k, d.Config[k], true, opts); why != "" {
			add("option %q may not be set: %s", k, why)
			e.forbidden = true
		} else {
			add("option %q is not lower-case: Proxmox's option names all are, and it knows no %q", k, k)
		}
	}
	// Then the options it deletes, in their order.
	for _, k := range d.Delete {
		if why := forbiddenOption(d.Ref.Type, k, "", false, opts); why != "" {
			add("option %q may not be deleted: %s", k, why)
			e.forbidden = true
		} else if !lowerCase(k) {
			add("option %q is not lower-case: Proxmox's option names all are, and it knows no %q", k, k)
		}
	}
	seen := make(map[string]bool, len(d.Delete))
	for _, k := range d.Delete {
		if _, ok := d.Config[k]; ok {
			add("option %q is both set and deleted", k)
		}
		if seen[k] {
			add("option %q is deleted twice", k)
		}
		seen[k] = true
	}
	if len(d.Config) > 0 || len(d.Delete) > 0 {
		// The same checks the client makes before sending a change, so
		// that a desired state that passes here cannot be refused there.
		ch := proxmox.ConfigChange{Set: nonEmpty(d.Config), Delete: d.Delete}
		if err := ch.Validate(); err != nil && (len(ch.Set) > 0 || len(ch.Delete) > 0) {
			add("%v", err)
		}
	}
}

// nonEmpty returns m without its empty values, which are reported apart.
func nonEmpty(m map[string]string) map[string]string {
	for _, v := range m {
		if v == "" {
			out := make(map[string]string, len(m))
			for k, v := range m {
				if v != "" {
					out[k] = v
				}
			}
			return out
		}
	}
	return m
}

// ValidateDesired checks a whole desired state: every entry, and that no
// guest is declared twice (guests are identified by vmid, which is unique
// in a cluster). It returns nil or a *DesiredError listing every problem.
// It is [ValidateDesiredWith] under the default [ValidateOptions], which
// allow no root-only option.
func ValidateDesired(ds []Desired) error { return ValidateDesiredWith(ds, ValidateOptions{}) }

// ValidateDesiredWith is [ValidateDesired] under opts. Invalid opts make
// every desired state invalid, with the error of [ValidateOptions.Validate].
//
// Besides values no guest could hold, it refuses, in Config and in Delete
// alike, the options a desired state may not manage, with an error that
// names the option, says why, and matches [ErrForbiddenKey]. Proxmox
// compares option names exactly, and all of its names are lower-case: a
// name with an upper-case letter is refused (Proxmox would know no such
// option), and one that differs from a forbidden name only in case
// ("Args") is refused as that name, so that no spelling slips past.
//
// These are never managed, whatever opts say, because they are not the
// guest's configuration but state Proxmox keeps in the same file:
//
//   - lock: the lock Proxmox holds while a backup, migration, snapshot or
//     similar operation runs; setting or clearing it fakes or breaks that
//     operation.
//   - template: marks a guest converted to a template, a conversion that
//     also turns its disks into base volumes; setting the flag
//     skips the conversion, and clearing it does not undo one.
//   - parent, snaptime, snapstate: the snapshot tree and a snapshot's time
//     and progress, kept by Proxmox's snapshot code.
//   - vmstate: the volume holding a hibernated VM's memory; deleting it
//     deletes that volume, and the saved state with it.
//   - runningmachine, runningcpu, running-nets-host-mtu: the virtual
//     hardware a VM was running with when it was hibernated or
//     snapshotted with its memory, so that it resumes on the same.
//   - meta: creation details Proxmox records (time, QEMU version); it is
//     read-only.
//   - unused0, unused1, ...: volumes detached from the guest but still its
//     own; deleting the entry destroys the volume, setting one claims a
//     volume for the guest.
//   - unprivileged (containers): fixed when the container is created;
//     Proxmox refuses to change it.
//   - pending, snapshots: sections of the configuration file, not options.
//   - lxc and lxc.*: a container's raw LXC keys, which the API cannot set:
//     only root writes them, in the file on the node.
//
// The request parameters of Proxmox's config call (digest, delete, revert,
// skiplock, force, node, vmid, ...) are refused as well, by the checks of
// [proxmox.ConfigChange.Validate].
//
// These are root-only: Proxmox lets only root@pam change them, most
// because they hand out control of the node, and a desired state manages
// them only where opts allow it. For QEMU VMs (qemu-server's
// check_vm_modify_config_perm reserves every option it has no privilege
// for, and check_usb_perm, check_hostpci_perm and the serial-port checks
// decide the device options by value):
//
//   - args: arbitrary arguments for the QEMU process, which runs as root on
//     the node.
//   - hookscript: a script the node runs as root at each step of the
//     guest's life (containers too).
//   - hostpci0, ...: a PCI device of the node passed through, unless it is
//     a resource mapping (mapping=, without romfile=, which would load a
//     file of the node).
//   - usb0, ...: a USB device of the node passed through, unless it is a
//     resource mapping (mapping=) or SPICE redirection (host=spice).
//   - serial0, ...: a serial device of the node, unless it is a socket
//     ("socket").
//   - parallel0, ...: a parallel port device of the node.
//   - ivshmem: memory shared with the node.
//   - affinity: pins the VM to CPUs of the node.
//   - hugepages, keephugepages: reserve and keep the node's huge pages.
//   - amd-sev, intel-tdx: confidential-computing features of the node's
//     CPU.
//   - arch, vmgenid, spice_enhancements: no privilege covers them, so
//     Proxmox leaves them to root.
//
// For containers (pve-container's check_ct_modify_config_perm):
//
//   - dev0, ...: a device node of the host passed into the container.
//   - mp0, ..., rootfs: a mount point whose source is a path on the node
//     (a bind mount or a device) rather than a storage volume.
//   - features: any feature but nesting (mount, keyctl, fuse, mknod,
//     force_rw_sys): Proxmox lets others change nesting alone, and only on
//     unprivileged containers, which Proxmox checks itself.
//
// For the options decided by value, the value declared is what counts,
// and one this check cannot read with certainty (a quoted property
// string, a key given twice) counts as root-only. Deleting such an option
// is left to Proxmox, which judges it by the value the guest has now:
// validation sees only the desired state, and taking a device away gives
// no one control of the node.
func ValidateDesiredWith(ds []Desired, opts ValidateOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	var e DesiredError
	first := make(map[int]int, len(ds))
	for i, d := range ds {
		d.problems(&e, opts)
		if j, dup := first[d.Ref.VMID]; dup {
			e.Problems = append(e.Problems, fmt.Sprintf("guest %d is declared twice (%s and %s)",
				d.Ref.VMID, ds[j].Ref, d.Ref))
			continue
		}
		first[d.Ref.VMID] = i
	}
	if len(e.Problems) > 0 {
		return &e
	}
	return nil
}

// DesiredProvider supplies the desired state, once per reconcile pass.
//
// Desired returns the complete desired state: a guest it leaves out is not
// managed. The engine reads the slice and never modifies it; the provider
// must not modify it afterwards either. An error means the desired state is
// unknown, and the engine performs no mutation in that pass; a provider that
// can still vouch for an older state returns it together with an error
// wrapping [ErrStale], and the engine acts on it and reports the error.
//
// Desired may be called concurrently with itself only if the implementation
// says so; the engine calls it from one goroutine at a time.
type DesiredProvider interface {
	Desired(ctx context.Context) ([]Desired, error)
}

// ErrStale is wrapped by a provider's error when it returns an older state
// it still stands by, because the current source could not be read.
var ErrStale = errors.New("reconcile: desired state is stale")

// EmptyProvider declares nothing: no guest is managed, and an engine using it
// performs no mutation at all. Its zero value is ready to use.
type EmptyProvider struct{}

// Desired returns no guests.
func (EmptyProvider) Desired(context.Context) ([]Desired, error) { return nil, nil }

// StaticProvider holds a desired state in memory. Set replaces it, also
// while an engine is running: a pass sees either the old or the new state,
// never a mix. The zero value holds no guests and validates with the
// default [ValidateOptions]. It is safe for concurrent use.
type StaticProvider struct {
	opts ValidateOptions // fixed at construction

	mu sync.RWMutex
	ds []Desired
}

// NewStaticProvider returns a provider holding ds, which must be valid
// under the default [ValidateOptions].
func NewStaticProvider(ds []Desired) (*StaticProvider, error) {
	return NewStaticProviderWith(ds, ValidateOptions{})
}

// NewStaticProviderWith returns a provider that validates with opts,
// holding ds, which must be valid under them. Invalid opts are refused
// with the error of [ValidateOptions.Validate].
func NewStaticProviderWith(ds []Desired, opts ValidateOptions) (*StaticProvider, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p := &StaticProvider{opts: ValidateOptions{AllowRootOnly: slices.Clone(opts.AllowRootOnly)}}
	if err := p.Set(ds); err != nil {
		return nil, err
	}
	return p, nil
}

// Set validates ds (see [ValidateDesiredWith]) and, if it is valid, makes
// it the desired state. The provider keeps a deep copy, so the caller may
// reuse ds. An invalid state is refused with a *DesiredError and the
// previous one is kept.
func (p *StaticProvider) Set(ds []Desired) error {
	if err := ValidateDesiredWith(ds, p.opts); err != nil {
		return err
	}
	c := cloneDesired(ds)
	p.mu.Lock()
	p.ds = c
	p.mu.Unlock()
	return nil
}

// Desired returns the current state. The slice is shared between callers and
// must not be modified.
func (p *StaticProvider) Desired(context.Context) ([]Desired, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ds, nil
}

func cloneDesired(ds []Desired) []Desired {
	out := make([]Desired, len(ds))
	for i, d := range ds {
		out[i] = Desired{Ref: d.Ref, Power: d.Power, Delete: slices.Clone(d.Delete)}
		if d.Config != nil {
			out[i].Config = make(map[string]string, len(d.Config))
			for k, v := range d.Config {
				out[i].Config[k] = v
			}
		}
	}
	sortDesired(out)
	return out
}

// sortDesired orders a desired state by vmid, so that everything derived
// from it is deterministic.
func sortDesired(ds []Desired) {
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Ref.VMID < ds[j].Ref.VMID })
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ValidateOptions adjust what a desired state may manage. The zero value
// is the safe default: no root-only option. Pass the same options to every
// guard that validates the desired state ([ValidateDesiredWith],
// [NewStaticProviderWith], [NewFileProviderWith], [ParseDesiredJSONWith],
// and the engine's [Config].Validation, which checks every pass again).
type ValidateOptions struct {
	// AllowRootOnly names the root-only options (see [ValidateDesiredWith])
	// the desired state may set and delete: an option's name ("args",
	// "hookscript", "features", "rootfs") or the stem of an indexed family
	// ("hostpci" for hostpci0, hostpci1, ...). [RootOnlyKeys] lists every
	// name it accepts. Allow only what the embedder truly manages, with a
	// token of root@pam: Proxmox refuses these options to everyone else,
	// and whoever writes the desired state gets root on the node through
	// most of them. The options that are not configuration can never be
	// allowed.
	AllowRootOnly []string
}

// Validate reports an entry of AllowRootOnly that is not a name
// [RootOnlyKeys] lists (a misspelt entry would allow nothing, unnoticed)
// or that names an option that can never be managed. It returns nil or a
// *DesiredError, which matches [ErrForbiddenKey] in the second case.
func (o ValidateOptions) Validate() error {
	var e DesiredError
	for _, k := range o.AllowRootOnly {
		r, ok := keyRules[k]
		switch {
		case ok && r.never:
			e.Problems = append(e.Problems, fmt.Sprintf("ValidateOptions.AllowRootOnly: %q can never be managed: %s", k, r.why))
			e.forbidden = true
		case !ok || (!r.qemu && !r.lxc):
			e.Problems = append(e.Problems, fmt.Sprintf("ValidateOptions.AllowRootOnly: %q is not a root-only option; these are: %s",
				k, strings.Join(RootOnlyKeys(), ", ")))
		}
	}
	if len(e.Problems) > 0 {
		return &e
	}
	return nil
}

// allows reports whether o allows the root-only option stem.
func (o ValidateOptions) allows(stem string) bool { return slices.Contains(o.AllowRootOnly, stem) }

// RootOnlyKeys returns, sorted, the names [ValidateOptions].AllowRootOnly
// accepts: every root-only option or family stem, of either guest type.
func RootOnlyKeys() []string {
	var out []string
	for k, r := range keyRules {
		if !r.never && (r.qemu || r.lxc) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// keyRule says why a desired state may not manage an option, or a family
// of indexed options (unused0, unused1, ...) keyed by their stem.
type keyRule struct {
	family bool // the stem followed by digits
	// never: not configuration; no option allows it, for any guest type.
	// Otherwise the option is root-only for the guest types flagged.
	never     bool
	qemu, lxc bool
	why       string
	// open, if set, makes the option root-only by value: it reports
	// whether a value is one Proxmox lets others set, and deleting the
	// option is left to Proxmox (see ValidateDesiredWith).
	open func(value string) bool
}

// keyRules lists the options a desired state may not manage, by name or
// family stem. The facts come from qemu-server (confdesc and
// check_vm_modify_config_perm in PVE::API2::Qemu, with check_usb_perm and
// check_hostpci_perm) and pve-container (PVE::LXC::Config's confdesc and
// update_pct_config, PVE::LXC's check_ct_modify_config_perm).
var keyRules = map[string]keyRule{
	// Not configuration.
	"lock":                  {never: true, why: "it is the lock Proxmox holds while an operation (backup, migration, snapshot, ...) runs; setting or clearing it fakes or breaks that operation"},
	"template":              {never: true, why: "it marks a guest converted to a template, a conversion that also turns its disks into base volumes; setting it skips the conversion and clearing it does not undo one"},
	"parent":                {never: true, why: "it is snapshot bookkeeping (the snapshot the current state derives from), kept by Proxmox"},
	"snaptime":              {never: true, why: "it is snapshot bookkeeping (a snapshot's creation time), kept by Proxmox"},
	"snapstate":             {never: true, why: "it is snapshot bookkeeping (a snapshot in progress), kept by Proxmox"},
	"vmstate":               {never: true, why: "it names the volume holding a hibernated VM's memory; deleting it destroys that volume and the saved state"},
	"runningmachine":        {never: true, why: "Proxmox records it so that a hibernated or snapshotted VM resumes on the same machine type"},
	"runningcpu":            {never: true, why: "Proxmox records it so that a hibernated or snapshotted VM resumes on the same CPU model"},
	"running-nets-host-mtu": {never: true, why: "Proxmox records it so that a hibernated or snapshotted VM resumes with the same network MTUs"},
	"meta":                  {never: true, why: "it holds creation details Proxmox records, and is read-only"},
	"unused":                {never: true, family: true, why: "it names a volume detached from the guest but still its own; deleting it destroys the volume, setting it claims a volume for the guest"},
	"unprivileged":          {never: true, why: "it is fixed when a container is created; Proxmox refuses to change it"},
	"pending":               {never: true, why: "it is a section of the configuration file (changes not yet applied), not an option"},
	"snapshots":             {never: true, why: "it is a section of the configuration file, not an option"},
	"lxc":                   {never: true, why: "raw LXC keys are not API options: only root writes them, in the container's file on the node"},

	// Root-only.
	"args":               {qemu: true, why: "it passes arbitrary arguments to the QEMU process, which runs as root on the node"},
	"hookscript":         {qemu: true, lxc: true, why: "it names a script the node runs as root at every step of the guest's life"},
	"hostpci":            {qemu: true, family: true, open: hostpciOpen, why: "it passes a PCI device of the node through (only a resource mapping, without romfile, is open to others)"},
	"usb":                {qemu: true, family: true, open: usbOpen, why: "it passes a USB device of the node through (only a resource mapping or host=spice is open to others)"},
	"serial":             {qemu: true, family: true, open: serialOpen, why: "it connects a serial device of the node (only \"socket\" is open to others)"},
	"parallel":           {qemu: true, family: true, why: "it connects a parallel port device of the node"},
	"ivshmem":            {qemu: true, why: "it shares memory with the node"},
	"affinity":           {qemu: true, why: "it pins the VM to CPUs of the node"},
	"hugepages":          {qemu: true, why: "it reserves huge pages of the node's memory"},
	"keephugepages":      {qemu: true, why: "it keeps huge pages of the node's memory reserved after the VM stops"},
	"amd-sev":            {qemu: true, why: "it uses confidential-computing features of the node's CPU"},
	"intel-tdx":          {qemu: true, why: "it uses confidential-computing features of the node's CPU"},
	"arch":               {qemu: true, why: "no privilege covers it, so Proxmox leaves it to root@pam"},
	"vmgenid":            {qemu: true, why: "no privilege covers it, so Proxmox leaves it to root@pam"},
	"spice_enhancements": {qemu: true, why: "no privilege covers it, so Proxmox leaves it to root@pam"},
	"dev":                {lxc: true, family: true, why: "it passes a device node of the host into the container"},
	"mp":                 {lxc: true, family: true, open: mountOpen, why: "it mounts a path of the node (a bind mount or a device) into the container (only a storage volume is open to others)"},
	"rootfs":             {lxc: true, open: mountOpen, why: "it mounts a path of the node (a bind mount or a device) as the container's root (only a storage volume is open to others)"},
	"features":           {lxc: true, open: featuresOpen, why: "it turns on container features other than nesting, which only root@pam may change"},
}

// forbiddenOption says why a desired state for a guest of type t may not
// set key to value (set) or delete key (!set), or returns "". It compares
// the lower-case form of key, so that a spelling differing only in case is
// refused as the option it resembles.
func forbiddenOption(t proxmox.GuestType, key, value string, set bool, opts ValidateOptions) string {
	k := strings.ToLower(key)
	if k == "lxc" || strings.HasPrefix(k, "lxc.") {
		k = "lxc"
	}
	stem, r, ok := k, keyRules[k], false
	if r.family {
		r = keyRule{} // the bare stem is not an option; Proxmox judges it
	}
	ok = r.why != ""
	if !ok {
		if s := strings.TrimRight(k, "0123456789"); s != k && s != "" {
			stem, r = s, keyRules[s]
			ok = r.family
		}
	}
	switch {
	case !ok:
		return ""
	case r.never:
		return "it is not configuration: " + r.why
	case t == proxmox.QEMU && !r.qemu, t == proxmox.LXC && !r.lxc:
		return "" // not root-only for this type (or not an option of it)
	case t != proxmox.QEMU && t != proxmox.LXC:
		return "" // an invalid type is reported apart
	case opts.allows(stem):
		return ""
	case r.open != nil && (!set || r.open(value)):
		return ""
	}
	return fmt.Sprintf("it is root-only: %s; allow %q in ValidateOptions.AllowRootOnly to manage it", r.why, stem)
}

// lowerCase reports whether s has no upper-case letter.
func lowerCase(s string) bool { return strings.ToLower(s) == s }

// propertyString splits a Proxmox property string ("key=value,...") into
// its parts; the part without a key is stored under "". It returns false
// when it cannot tell the parts with certainty: a quote (values may be
// quoted, and then hold commas) or a key given twice.
func propertyString(v string) (map[string]string, bool) {
	if strings.ContainsRune(v, '"') {
		return nil, false
	}
	m := make(map[string]string)
	for _, part := range strings.Split(v, ",") {
		k, val, found := strings.Cut(part, "=")
		if !found {
			k, val = "", part
		}
		if _, dup := m[k]; dup {
			return nil, false
		}
		m[k] = val
	}
	return m, true
}

// defaultKey returns the value of key, which may be written without its
// name, or false if it is given both ways.
func defaultKey(m map[string]string, key string) (string, bool) {
	v, named := m[key]
	bare, unnamed := m[""]
	if named && unnamed {
		return "", false
	}
	if unnamed {
		return bare, true
	}
	return v, true
}

// usbOpen: check_usb_perm lets others pass SPICE redirection (host=spice,
// any case) or a resource mapping; host names a device of the node
// otherwise.
func usbOpen(v string) bool {
	m, ok := propertyString(v)
	if !ok {
		return false
	}
	host, ok := defaultKey(m, "host")
	if !ok {
		return false
	}
	if host != "" {
		return strings.EqualFold(host, "spice")
	}
	return m["mapping"] != ""
}

// hostpciOpen: check_hostpci_perm lets others pass a resource mapping,
// without a host address and without a romfile.
func hostpciOpen(v string) bool {
	m, ok := propertyString(v)
	if !ok {
		return false
	}
	host, ok := defaultKey(m, "host")
	_, rom := m["romfile"]
	return ok && host == "" && m["mapping"] != "" && !rom
}

// serialOpen: the serial-port checks of the config update let others set
// a socket; anything else is a device of the node.
func serialOpen(v string) bool { return v == "socket" }

// mountOpen: check_ct_modify_config_perm lets others mount a storage
// volume; classify_mountpoint calls a source starting with "/" a bind
// mount, or a device under /dev.
func mountOpen(v string) bool {
	m, ok := propertyString(v)
	if !ok {
		return false
	}
	vol, ok := defaultKey(m, "volume")
	return ok && vol != "" && !strings.HasPrefix(vol, "/")
}

// featuresOpen: check_ct_modify_config_perm lets others change nesting
// alone (on an unprivileged container, which Proxmox checks).
func featuresOpen(v string) bool {
	m, ok := propertyString(v)
	if !ok {
		return false
	}
	for k := range m {
		if k != "nesting" {
			return false
		}
	}
	return true
}
