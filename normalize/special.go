package normalize

import (
	"strconv"
	"strings"
)

// This file holds the rules that do not fit the generic value and
// property-string rules: each encodes one piece of Proxmox behaviour,
// described in its comment and in the package doc.

// descriptionRule: what Proxmox keeps of a description (see
// descriptionTrim), CRLF taken as LF, and "0" as absent, since neither
// qemu-server nor pve-container writes a description that is "0" or "".
// Treating a read-back "0" as absent too keeps the rule symmetric: writing
// the "0" that was read removes the description, as in Proxmox itself.
type descriptionRule struct{ container bool }

func (r descriptionRule) Normalize(v string) string { return canonicalDescription(v, r.container) }
func (r descriptionRule) Equal(d, a string) bool {
	return d == a || descriptionEqual(d, a, r.container)
}
func (r descriptionRule) Explain(d, a string) []Diff { return explainWhole(r, d, a) }

// tagsRule: tags compare as sets; letter case is ignored unless the
// cluster's tag-style is case-sensitive.
type tagsRule struct{ caseSensitive bool }

func (r tagsRule) Normalize(v string) string { return canonicalTags(v, r.caseSensitive) }
func (r tagsRule) Equal(d, a string) bool {
	return d == a || listEqual(d, a, false, !r.caseSensitive)
}
func (r tagsRule) Explain(d, a string) []Diff { return explainWhole(r, d, a) }

// clampedIntRule: on cgroup v2 hosts Proxmox clamps cpuunits into [1, 10000]
// on create and update, so both sides are clamped before they compare.
type clampedIntRule struct{ lo, hi int64 }

func (r clampedIntRule) clamp(v string) (int64, bool) {
	n, ok := parseInt(v)
	if !ok {
		return 0, false
	}
	return min(max(n, r.lo), r.hi), true
}

func (r clampedIntRule) Normalize(v string) string {
	v = trimSpace(v)
	if n, ok := r.clamp(v); ok {
		return strconv.FormatInt(n, 10)
	}
	return v
}

func (r clampedIntRule) Equal(d, a string) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	x, ok1 := r.clamp(d)
	y, ok2 := r.clamp(a)
	return ok1 && ok2 && x == y
}

func (r clampedIntRule) Explain(d, a string) []Diff { return explainWhole(r, d, a) }

// hotplugRule: "0" is no feature, "1" and absence are the default
// network,disk,usb, anything else is a split_list set of features.
type hotplugRule struct{}

var hotplugFeatures = [...]string{"cloudinit", "cpu", "disk", "memory", "network", "usb"}

const hotplugDefault = 1<<2 | 1<<4 | 1<<5 // disk, network, usb

func hotplugSet(v string) (uint8, bool) {
	switch v = trimSpace(v); v {
	case "", "1":
		return hotplugDefault, true
	case "0":
		return 0, true
	}
	var set uint8
	for i := 0; ; {
		item, next, ok := nextListItem(v, i)
		if !ok {
			return set, true
		}
		found := false
		for b, name := range hotplugFeatures {
			if item == name {
				set |= 1 << b
				found = true
			}
		}
		if !found {
			return 0, false
		}
		i = next
	}
}

func (hotplugRule) Normalize(v string) string {
	set, ok := hotplugSet(v)
	if !ok || trimSpace(v) == "" {
		return trimSpace(v)
	}
	if set == 0 {
		return "0"
	}
	var names []string
	for b, name := range hotplugFeatures {
		if set&(1<<b) != 0 {
			names = append(names, name)
		}
	}
	return strings.Join(names, ",")
}

func (hotplugRule) Equal(d, a string) bool {
	if d == a {
		return true
	}
	x, ok1 := hotplugSet(d)
	y, ok2 := hotplugSet(a)
	if !ok1 || !ok2 {
		return trimSpace(d) == trimSpace(a)
	}
	return x == y
}

func (r hotplugRule) Explain(d, a string) []Diff { return explainWhole(r, d, a) }

// bootRule: the default key legacy (default "cdn", also what an absent boot
// means) and order, an ordered list that overrides legacy when given. A
// legacy value never equals an order list.
type bootRule struct{}

var bootFormat = &Format{
	DefaultKey: "legacy",
	Keys: map[string]Key{
		"legacy": {Default: "cdn"},
		"order":  {Type: TypeList},
	},
}

func (bootRule) Normalize(v string) string {
	v = trimSpace(v)
	items, perr := scanProps(bootFormat, v, nil)
	if perr.code != perrNone {
		return v
	}
	if _, ok := lookup(items, "order"); ok {
		// print_bootorder drops legacy when it re-prints an order.
		kept := items[:0:0]
		for _, it := range items {
			if it.key != "legacy" {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	return printProps(bootFormat, items)
}

func (r bootRule) Equal(d, a string) bool { return r.compare(d, a, nil) }

func (r bootRule) Explain(d, a string) []Diff { return explainBy(r.compare, d, a) }

func (r bootRule) compare(d, a string, diffs *[]Diff) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	var dbuf, abuf [8]kv
	dk, e1 := scanProps(bootFormat, d, dbuf[:0])
	ak, e2 := scanProps(bootFormat, a, abuf[:0])
	if e1.code != perrNone || e2.code != perrNone {
		return wholeDiff(r, d, a, diffs)
	}
	pc := propCompare{f: bootFormat, diffs: diffs}
	pc.skipKey("legacy", "order")
	dOrder, dHas := lookup(dk, "order")
	aOrder, aHas := lookup(ak, "order")
	switch {
	case dHas && aHas:
		if !listEqual(dOrder, aOrder, true, false) {
			pc.fail("order", dOrder, aOrder)
		}
	case dHas != aHas:
		// An order list against the legacy form: PVE boots differently.
		pc.fail("order", dOrder, aOrder)
	default:
		dl, _ := lookup(dk, "legacy")
		al, _ := lookup(ak, "legacy")
		pc.key("legacy", dl, dl != "", al, al != "")
	}
	if pc.done() {
		return false
	}
	return pc.run(dk, ak)
}

// vmgenidRule: a declared "1" asks Proxmox to generate an ID and is
// satisfied by any UUID; "0" (disabled) matches an absent value; UUIDs
// compare case-insensitively.
type vmgenidRule struct{}

func (vmgenidRule) Normalize(v string) string { return asciiLower(trimSpace(v)) }

func (vmgenidRule) Equal(d, a string) bool {
	d, a = trimSpace(d), trimSpace(a)
	switch {
	case d == a:
		return true
	case d == "1":
		return isUUID(a)
	case d == "0" || d == "":
		return a == "0" || a == ""
	}
	return asciiEqualFold(d, a)
}

func (r vmgenidRule) Explain(d, a string) []Diff { return explainWhole(r, d, a) }

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if _, ok := unhex(s[i]); !ok {
				return false
			}
		}
	}
	return true
}

// maskedRule: Proxmox masks cipassword as "**********" on read, so a masked
// value satisfies any non-empty declaration; it cannot show drift.
type maskedRule struct{}

func (maskedRule) Normalize(v string) string { return trimSpace(v) }

func (maskedRule) Equal(d, a string) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	if isMasked(a) {
		return d != ""
	}
	return false
}

func (r maskedRule) Explain(d, a string) []Diff {
	if r.Equal(d, a) {
		return nil
	}
	// Never show a declared secret.
	return []Diff{{Desired: mask(d), Actual: mask(a)}}
}

func isMasked(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '*' {
			return false
		}
	}
	return true
}

func mask(s string) string {
	if trimSpace(s) == "" {
		return ""
	}
	return "**********"
}

// sshKeysRule: sshkeys is stored URL-encoded exactly as each writer encoded
// it; the keys compare decoded, line by line, blanks collapsed.
type sshKeysRule struct{}

func (sshKeysRule) Normalize(v string) string { return canonicalSSHKeys(v) }
func (sshKeysRule) Equal(d, a string) bool    { return d == a || sshKeysEqual(d, a) }
func (r sshKeysRule) Explain(d, a string) []Diff {
	if r.Equal(d, a) {
		return nil
	}
	return []Diff{{Desired: decodedSSHKeys(d), Actual: decodedSSHKeys(a)}}
}
