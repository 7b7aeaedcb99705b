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

// DesiredError describes what is wrong with a desired state: one problem per
// entry, in the order of the guests.
type DesiredError struct {
	Problems []string
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

// Validate reports what makes d unusable: an invalid reference, an unknown
// power state, a config value no Proxmox guest could hold, or an option that
// is both set and deleted. It returns nil or a *DesiredError.
func (d Desired) Validate() error {
	if p := d.problems(); len(p) > 0 {
		return &DesiredError{Problems: p}
	}
	return nil
}

func (d Desired) problems() []string {
	var out []string
	add := func(format string, args ...any) {
		out = append(out, d.Ref.String()+": "+fmt.Sprintf(format, args...))
	}
	if err := d.Ref.Validate(); err != nil {
		out = append(out, fmt.Sprintf("guest %q: %v", d.Ref.String(), err))
	}
	if !d.Power.Valid() {
		add("power %q is neither %q, %q nor empty", string(d.Power), PowerRunning, PowerStopped)
	}
	for _, k := range sortedKeys(d.Config) {
		if d.Config[k] == "" {
			add("option %q has an empty value; list it in Delete to remove it", k)
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
	return out
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
func ValidateDesired(ds []Desired) error {
	var problems []string
	first := make(map[int]int, len(ds))
	for i, d := range ds {
		problems = append(problems, d.problems()...)
		if j, dup := first[d.Ref.VMID]; dup {
			problems = append(problems, fmt.Sprintf("guest %d is declared twice (%s and %s)",
				d.Ref.VMID, ds[j].Ref, d.Ref))
			continue
		}
		first[d.Ref.VMID] = i
	}
	if len(problems) > 0 {
		return &DesiredError{Problems: problems}
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
// never a mix. The zero value holds no guests. It is safe for concurrent use.
type StaticProvider struct {
	mu sync.RWMutex
	ds []Desired
}

// NewStaticProvider returns a provider holding ds, which must be valid.
func NewStaticProvider(ds []Desired) (*StaticProvider, error) {
	p := &StaticProvider{}
	if err := p.Set(ds); err != nil {
		return nil, err
	}
	return p, nil
}

// Set validates ds and, if it is valid, makes it the desired state. The
// provider keeps a deep copy, so the caller may reuse ds. An invalid state
// is refused with a *DesiredError and the previous one is kept.
func (p *StaticProvider) Set(ds []Desired) error {
	if err := ValidateDesired(ds); err != nil {
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
