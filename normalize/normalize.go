package normalize

import (
	"errors"
	"fmt"
	"maps"
)

// guest selects the built-in rule tables of a Set.
type guest uint8

const (
	guestNone guest = iota
	guestQEMU
	guestLXC
)

// Set holds the comparison rules for the configuration fields of one kind of
// guest. [QEMU] and [LXC] return Sets with Proxmox's rules; [Set.With]
// derives a Set with options and user rules.
//
// A Set never changes after it is returned, so it is safe for concurrent
// use by any number of goroutines. The zero Set (and a nil *Set) knows no
// field and compares every value exactly after trimming white space.
type Set struct {
	guest             guest
	caseSensitiveTags bool
	cgroupV2          bool
	fields            map[string]Rule // user rules by exact field name
	families          map[string]Rule // user rules by family prefix
}

// QEMU returns a new Set with the rules for QEMU virtual machines. Each call
// returns a fresh value the caller owns.
func QEMU() *Set { return &Set{guest: guestQEMU} }

// LXC returns a new Set with the rules for LXC containers. Each call returns
// a fresh value the caller owns.
func LXC() *Set { return &Set{guest: guestLXC} }

// Normalize returns the canonical form of value for field: the form Proxmox
// would print (booleans as 1 or 0, sizes in their largest exact unit,
// property-string keys in Proxmox's order, the default key bare), with parts
// whose order carries no meaning sorted (tags, sets). A value the field's
// rule cannot parse is returned with surrounding white space trimmed.
//
// Normalize is idempotent, and Equal(field, Normalize(field, v), v) holds for
// every v. It does not fill in defaults or drop generated parts; that is
// Equal's business.
func (s *Set) Normalize(field, value string) string {
	return s.rule(field).Normalize(value)
}

// Equal reports whether actual, the value Proxmox reports for field,
// satisfies desired, the declared value. An empty string means absent on
// either side: a declared "" asks for the field to be absent (or at its
// default, where the schema has one).
//
// Equal is asymmetric on purpose. desired may leave out what Proxmox
// generates (an unpinned MAC address, an allocated volume's name, a disk's
// size); everything desired does declare must match; and every key Proxmox
// reports that desired leaves out must be at its default. Fields the Set
// does not know compare exactly after trimming white space.
//
// Equal does not allocate when desired and actual are identical, and not for
// the usual normalized-equal forms of the known fields either.
func (s *Set) Equal(field, desired, actual string) bool {
	if desired == actual {
		return true
	}
	return s.rule(field).Equal(desired, actual)
}

// Explain returns what differs between desired and actual for field, one
// [Diff] per differing part (property-string key, or the whole value), or
// nil when [Set.Equal] reports them equal. Secrets (cipassword) are shown
// masked.
func (s *Set) Explain(field, desired, actual string) []Diff {
	if desired == actual {
		return nil
	}
	r := s.rule(field)
	if r.Equal(desired, actual) {
		return nil
	}
	var diffs []Diff
	if e, ok := r.(Explainer); ok {
		diffs = e.Explain(desired, actual)
	}
	if len(diffs) == 0 {
		diffs = []Diff{{Desired: r.Normalize(desired), Actual: r.Normalize(actual)}}
	}
	for i := range diffs {
		diffs[i].Field = field
	}
	return diffs
}

// Rule returns the rule s applies to field, so that a user rule can wrap a
// built-in one.
func (s *Set) Rule(field string) Rule { return s.rule(field) }

var (
	tagsFolded        Rule = tagsRule{}
	tagsCaseSensitive Rule = tagsRule{caseSensitive: true}
	cpuunitsClamped   Rule = clampedIntRule{lo: 1, hi: 10000}
)

func (s *Set) rule(field string) Rule {
	if s == nil {
		return exact
	}
	if r, ok := s.fields[field]; ok {
		return r
	}
	prefix, indexed := family(field)
	if indexed {
		if r, ok := s.families[prefix]; ok {
			return r
		}
	}
	if s.guest == guestNone {
		return exact
	}
	switch field {
	case "tags":
		if s.caseSensitiveTags {
			return tagsCaseSensitive
		}
		return tagsFolded
	case "cpuunits":
		if s.cgroupV2 {
			return cpuunitsClamped
		}
	}
	fields, families := qemuFields, qemuFamilies
	if s.guest == guestLXC {
		fields, families = lxcFields, lxcFamilies
	}
	if r, ok := fields[field]; ok {
		return r
	}
	if indexed {
		if r, ok := families[prefix]; ok {
			return r
		}
	}
	return exact
}

// family splits an indexed field name ("net0") into its family prefix
// ("net"). Fields without a trailing number are not indexed.
func family(field string) (string, bool) {
	i := len(field)
	for i > 0 && isDigit(field[i-1]) {
		i--
	}
	if i == len(field) || i == 0 {
		return "", false
	}
	return field[:i], true
}

// ErrInvalidOption is returned (wrapped, with the reason) by [Set.With] when
// an option is malformed: an empty or malformed field name, a family prefix
// ending in a digit, or a nil rule.
var ErrInvalidOption = errors.New("normalize: invalid option")

// Option configures a Set derived with [Set.With]. Options are immutable
// values, safe to reuse and share; the set of options is closed.
type Option interface {
	apply(*Set) error
}

type optionFunc func(*Set) error

func (f optionFunc) apply(s *Set) error { return f(s) }

// With returns a new Set with the rules of s and opts applied in order; s is
// not changed. It returns an error wrapping [ErrInvalidOption] when an
// option is malformed.
func (s *Set) With(opts ...Option) (*Set, error) {
	c := &Set{}
	if s != nil {
		*c = *s
	}
	c.fields = maps.Clone(c.fields)
	c.families = maps.Clone(c.families)
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o.apply(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WithCaseSensitiveTags makes tags compare with letter case, for clusters
// whose datacenter tag-style sets case-sensitive=1. By default Proxmox
// lower-cases tags, and "Web" equals "web".
func WithCaseSensitiveTags() Option {
	return optionFunc(func(s *Set) error { s.caseSensitiveTags = true; return nil })
}

// WithCgroupV2 clamps cpuunits into [1, 10000] on both sides before they
// compare, as Proxmox does on hosts that run cgroup v2 (the default since
// Proxmox VE 7). Without it cpuunits compare as plain integers.
func WithCgroupV2() Option {
	return optionFunc(func(s *Set) error { s.cgroupV2 = true; return nil })
}

// WithField registers r for the field named field, replacing any built-in
// rule for it. Use it for fields the Set does not know, or to override a
// built-in choice.
func WithField(field string, r Rule) Option {
	return optionFunc(func(s *Set) error {
		if err := checkName(field, false); err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("%w: nil rule for field %q", ErrInvalidOption, field)
		}
		if s.fields == nil {
			s.fields = make(map[string]Rule)
		}
		s.fields[field] = r
		return nil
	})
}

// WithFamily registers r for every field named prefix followed by a number
// (WithFamily("usb", r) covers usb0, usb1, ...), replacing any built-in rule
// for that family. A rule registered with [WithField] for one member takes
// precedence.
func WithFamily(prefix string, r Rule) Option {
	return optionFunc(func(s *Set) error {
		if err := checkName(prefix, true); err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("%w: nil rule for family %q", ErrInvalidOption, prefix)
		}
		if s.families == nil {
			s.families = make(map[string]Rule)
		}
		s.families[prefix] = r
		return nil
	})
}

// checkName accepts Proxmox configuration key names: a letter, then
// letters, digits, '-', '_' or '.' (lxc.* keys).
func checkName(name string, prefix bool) error {
	what := "field"
	if prefix {
		what = "family prefix"
	}
	if name == "" {
		return fmt.Errorf("%w: empty %s name", ErrInvalidOption, what)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter || !letter && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("%w: %s name %q: invalid character %q", ErrInvalidOption, what, name, c)
		}
	}
	if prefix && isDigit(name[len(name)-1]) {
		return fmt.Errorf("%w: family prefix %q ends in a digit", ErrInvalidOption, name)
	}
	return nil
}
