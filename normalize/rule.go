package normalize

import (
	"fmt"
	"strconv"
	"strings"
)

// Func maps a value to its canonical form. Two values a Func maps to the
// same string are the same value. A Func must be deterministic and must not
// keep or modify state between calls, because a [Set] may call it from many
// goroutines.
type Func func(value string) string

// Rule decides when a declared value and a reported value of one field are
// the same. The built-in rules of [QEMU] and [LXC] are Rules; [FuncRule],
// [ValueRule] and [PropertyRule] build more for fields the Sets do not know,
// and [WithField] and [WithFamily] register them.
//
// Implementations must be safe for concurrent use. An empty string means
// the value is absent, on either side.
type Rule interface {
	// Normalize returns the canonical form of value. It must be idempotent,
	// and Equal(Normalize(v), v) must hold.
	Normalize(value string) string
	// Equal reports whether actual, the value Proxmox reports, satisfies
	// desired, the declared value. It may be asymmetric: desired may leave
	// out parts Proxmox generates.
	Equal(desired, actual string) bool
}

// Explainer is implemented by a [Rule] that can say which parts of two
// values differ. [Set.Explain] uses it when present; for other rules it
// reports the two normalized values as a whole.
type Explainer interface {
	// Explain returns the differences between desired and actual, or nil
	// when Equal(desired, actual) holds. The Field of each Diff may be left
	// empty; Set.Explain fills it in.
	Explain(desired, actual string) []Diff
}

// Diff is one difference between a declared and a reported value, for
// showing a person. It is a plain value, safe to copy and share.
type Diff struct {
	// Field is the configuration key ("net0", "tags").
	Field string `json:"field"`
	// Key is the part of the value that differs: a property-string key
	// ("bridge", "size"), or "storage" for the storage of a disk declared in
	// allocation syntax. Empty means the value as a whole.
	Key string `json:"key,omitempty"`
	// Desired is the declared value of that part, normalized; empty when
	// the declaration leaves it out.
	Desired string `json:"desired"`
	// Actual is the reported value of that part, normalized; empty when
	// Proxmox does not report it.
	Actual string `json:"actual"`
}

// String renders the difference on one line, for example
//
//	net0 bridge: desired "vmbr0", actual "vmbr1"
func (d Diff) String() string {
	name := d.Field
	if d.Key != "" {
		name += " " + d.Key
	}
	return fmt.Sprintf("%s: desired %s, actual %s", name, quoteOrAbsent(d.Desired), quoteOrAbsent(d.Actual))
}

func quoteOrAbsent(s string) string {
	if s == "" {
		return "(absent)"
	}
	return strconv.Quote(s)
}

// FuncRule returns a [Rule] that trims surrounding white space, maps values
// through f and compares the results byte for byte. f should be idempotent
// (f(f(v)) == f(v)) for Normalize to be. A nil f compares the trimmed values
// exactly, which is the rule for fields a [Set] does not know. The Rule is
// safe for concurrent use if f is.
func FuncRule(f Func) Rule { return funcRule{f: f} }

type funcRule struct{ f Func }

func (r funcRule) Normalize(v string) string {
	v = trimSpace(v)
	if r.f == nil {
		return v
	}
	return r.f(v)
}

func (r funcRule) Equal(d, a string) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	if r.f == nil {
		return false
	}
	return r.f(d) == r.f(a)
}

// exact is the rule for unknown fields.
var exact Rule = funcRule{}

// ValueRule returns a [Rule], safe for concurrent use, for a scalar field whose values are of type
// k.Type (a boolean, an integer, a list, ...), where an absent value stands
// for k.Default. With an empty Default, absent differs from every value.
// k.Required and k.Generated have no meaning for a whole field and are
// ignored: a declared "" is a declaration that the field is absent.
func ValueRule(k Key) Rule { return valueRule{t: k.Type, def: k.Default} }

type valueRule struct {
	t   Type
	def string
	// spaced prints lists joined with a space, as Proxmox prints the
	// top-level nameserver and searchdomain lists, instead of ";".
	spaced bool
}

func (r valueRule) Normalize(v string) string {
	v = trimSpace(v)
	c := canonical(r.t, v)
	if c == "" {
		// Not of the type, or a list of no items (";"): kept as written,
		// for respelling the separators alone would make a value that
		// normalizes differently again.
		return v
	}
	if r.spaced && (r.t == TypeList || r.t == TypeSet) {
		c = strings.ReplaceAll(c, ";", " ")
	}
	return c
}

func (r valueRule) Equal(d, a string) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	if d == "" {
		d = r.def
	}
	if a == "" {
		a = r.def
	}
	if d == "" || a == "" {
		return d == a
	}
	return valueEqual(r.t, d, a)
}

// PropertyRule returns a [Rule], safe for concurrent use, for a
// property-string field described by f. Declared keys must match, compared by their [Type] with absent keys
// standing for their Default; keys only Proxmox reports must be at their
// default, unless they are Generated. With absentMeansDefaults, an absent
// field stands for every key at its default (as for agent or features);
// otherwise an absent field differs from every present one (as for net0,
// where absent means there is no NIC).
//
// PropertyRule copies f; later changes to f do not affect the rule.
func PropertyRule(f *Format, absentMeansDefaults bool) Rule {
	return &propRule{f: f.clone(), absentIsDefault: absentMeansDefaults}
}

// propRule is the generic property-string rule.
type propRule struct {
	f               *Format
	absentIsDefault bool
	// allGenerated treats every key Proxmox reports but desired leaves out
	// as generated (meta).
	allGenerated bool
}

func (r *propRule) Normalize(v string) string { return normalizeProps(r.f, v) }

func (r *propRule) Equal(d, a string) bool { return r.compare(d, a, nil) }

func (r *propRule) Explain(d, a string) []Diff { return explainBy(r.compare, d, a) }

func (r *propRule) compare(d, a string, diffs *[]Diff) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	var dbuf, abuf [maxItems]kv
	dk, e1 := scanProps(r.f, d, dbuf[:0])
	ak, e2 := scanProps(r.f, a, abuf[:0])
	if e1.code != perrNone || e2.code != perrNone {
		return wholeDiff(r, d, a, diffs)
	}
	if !r.absentIsDefault && (len(dk) == 0) != (len(ak) == 0) {
		return wholeDiff(r, d, a, diffs) // one side absent: nothing to compare key by key
	}
	pc := propCompare{f: r.f, diffs: diffs, allGenerated: r.allGenerated}
	return pc.run(dk, ak)
}

// maxItems is the number of property-string items (and list items) compared
// without allocating. Longer values still compare correctly.
const maxItems = 32

// wholeDiff records a difference of the value as a whole.
// explainBy runs a rule's compare function, which appends the differing
// parts to diffs and reports equality, for Explain: nil when equal.
func explainBy(compare func(d, a string, diffs *[]Diff) bool, d, a string) []Diff {
	var diffs []Diff
	if compare(d, a, &diffs) {
		return nil
	}
	return diffs
}

func wholeDiff(r Rule, d, a string, diffs *[]Diff) bool {
	if diffs != nil {
		*diffs = append(*diffs, Diff{Desired: r.Normalize(d), Actual: r.Normalize(a)})
	}
	return false
}

// normalizeProps prints v in canonical order, or returns it trimmed when it
// does not parse.
func normalizeProps(f *Format, v string) string {
	v = trimSpace(v)
	items, perr := scanProps(f, v, nil)
	if perr.code != perrNone {
		return v
	}
	return printProps(f, items)
}

// propCompare compares two parsed property strings key by key. The caller
// may take over some keys (skip) and give context-dependent defaults
// (defs). It allocates nothing unless it records diffs.
type propCompare struct {
	f            *Format
	diffs        *[]Diff
	allGenerated bool
	skip         [12]string
	nskip        int
	defs         [4]kv
	ndefs        int
	differs      bool
}

func (pc *propCompare) skipKey(keys ...string) {
	for _, k := range keys {
		pc.skip[pc.nskip] = k
		pc.nskip++
	}
}

func (pc *propCompare) setDefault(key, val string) {
	pc.defs[pc.ndefs] = kv{key, val}
	pc.ndefs++
}

func (pc *propCompare) skipped(k string) bool {
	for i := 0; i < pc.nskip; i++ {
		if pc.skip[i] == k {
			return true
		}
	}
	return false
}

func (pc *propCompare) def(k string) string {
	for i := 0; i < pc.ndefs; i++ {
		if pc.defs[i].key == k {
			return pc.defs[i].val
		}
	}
	return pc.f.key(k).Default
}

// done reports whether the comparison can stop: a difference was found and
// nobody collects diffs.
func (pc *propCompare) done() bool { return pc.differs && pc.diffs == nil }

// fail records a difference of key, with values as written.
func (pc *propCompare) fail(key, d, a string) {
	pc.differs = true
	if pc.diffs != nil {
		t := pc.f.key(key).Type
		*pc.diffs = append(*pc.diffs, Diff{Key: key, Desired: canonicalValue(t, d), Actual: canonicalValue(t, a)})
	}
}

// run compares the keys not skipped and reports whether no difference was
// found by it or before it.
func (pc *propCompare) run(d, a []kv) bool {
	for _, e := range d {
		if pc.done() {
			return false
		}
		if pc.skipped(e.key) {
			continue
		}
		av, aok := lookup(a, e.key)
		pc.key(e.key, e.val, true, av, aok)
	}
	for _, e := range a {
		if pc.done() {
			return false
		}
		if pc.skipped(e.key) || hasKey(d, e.key) {
			continue
		}
		if pc.allGenerated || pc.f.key(e.key).Generated {
			continue
		}
		pc.key(e.key, "", false, e.val, true)
	}
	return !pc.differs
}

// key compares one key present on at least one side.
func (pc *propCompare) key(k, dv string, dok bool, av string, aok bool) {
	def := pc.def(k)
	d, a := dv, av
	if !dok {
		d = def
	}
	if !aok {
		a = def
	}
	if d == "" || a == "" {
		if d != a {
			pc.fail(k, dv, av)
		}
		return
	}
	if !valueEqual(pc.f.key(k).Type, d, a) {
		pc.fail(k, dv, av)
	}
}

// explainWhole is the Explain of rules that compare a value as a whole.
func explainWhole(r Rule, d, a string) []Diff {
	if r.Equal(d, a) {
		return nil
	}
	return []Diff{{Desired: r.Normalize(d), Actual: r.Normalize(a)}}
}
