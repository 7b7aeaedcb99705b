package normalize

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrSyntax is returned (wrapped, with the offending input) by [ParseProperty]
// and [ParseSize] when a value does not follow Proxmox's grammar: an item
// with an empty key or value, a key given twice, a bare value in a format
// without a default key, or a malformed size.
var ErrSyntax = errors.New("normalize: syntax error")

// Type says how the values of one property-string key (or of a scalar
// field, see [ValueRule]) compare.
type Type uint8

// The value types of property-string keys.
const (
	// TypeText values compare byte for byte.
	TypeText Type = iota
	// TypeBool values are Proxmox booleans: 1, on, yes, true and 0, off, no,
	// false, in any letter case. They print as 1 and 0.
	TypeBool
	// TypeInt values compare as integers ("010" equals "10").
	TypeInt
	// TypeNumber values compare as decimal numbers ("1.50" equals "1.5").
	TypeNumber
	// TypeSize values are disk sizes compared in bytes (see [ParseSize]);
	// they print through [FormatSize].
	TypeSize
	// TypeSet values are lists whose order carries no meaning (";"-separated
	// in a property string), compared as sets and printed sorted.
	TypeSet
	// TypeList values are ordered lists (";"-separated), compared item by
	// item.
	TypeList
	// TypeFold values compare ignoring the case of ASCII letters (MAC
	// addresses, UUIDs). They print in upper case, as Proxmox generates
	// MAC addresses.
	TypeFold
)

// Key describes one key of a property-string [Format]. It is a plain value,
// safe to copy and share.
type Key struct {
	// Type says how values of the key compare.
	Type Type
	// Default is the value an absent key stands for, as the Proxmox schema
	// declares it. Empty means the key has no default: absent differs from
	// every explicit value.
	Default string
	// Required keys are printed right after the default key, as Proxmox
	// prints required schema keys.
	Required bool
	// Generated marks a value Proxmox fills in by itself (a MAC address, a
	// disk's size). It is compared only when the desired value declares it.
	Generated bool
}

// Format is the schema of one kind of Proxmox property string, the
// "key=value,key=value" values of options such as net0, scsi0, rootfs, agent
// or cpu. It mirrors the parts of a Proxmox JSON schema format that matter
// for reading and comparing values.
//
// A Format is read-only once it is in use; it is safe for concurrent use as
// long as nobody modifies it.
type Format struct {
	// DefaultKey names the key whose value may be written bare, without
	// "key=" ("virtio" for model=virtio, "local-lvm:32" for file=...). It is
	// printed first. Empty means the format has none.
	DefaultKey string
	// Keys describes the known keys. Keys not listed are still accepted
	// (newer Proxmox versions add keys); they are text without a default.
	Keys map[string]Key
	// Aliases maps alternative key names to the key they stand for
	// ("volume" to "file").
	Aliases map[string]string
	// FoldKey, with FoldValues, describes Proxmox's keyAlias: an item
	// "<v>=<x>" where v is one of FoldValues means DefaultKey=v and
	// FoldKey=x. A QEMU NIC "virtio=BC:24:11:5E:7A:01" is model=virtio,
	// macaddr=BC:24:11:5E:7A:01. The pair is printed folded again.
	FoldKey string
	// FoldValues lists the values of DefaultKey that may fold FoldKey.
	FoldValues []string
}

func (f *Format) key(name string) Key {
	if f == nil {
		return Key{}
	}
	return f.Keys[name]
}

func (f *Format) folds(v string) bool {
	return f.FoldKey != "" && slices.Contains(f.FoldValues, v)
}

func (f *Format) clone() *Format {
	if f == nil {
		return &Format{}
	}
	c := *f
	c.Keys = make(map[string]Key, len(f.Keys))
	for k, v := range f.Keys {
		c.Keys[k] = v
	}
	c.Aliases = make(map[string]string, len(f.Aliases))
	for k, v := range f.Aliases {
		c.Aliases[k] = v
	}
	c.FoldValues = slices.Clone(f.FoldValues)
	return &c
}

// Item is one key and its value in a parsed [Property]. Keys are canonical:
// aliases are resolved and a folded item is split in two. It is a plain
// value, safe to copy and share.
type Item struct {
	Key   string
	Value string
}

// Property is a parsed property string. Its zero value is an empty property
// string. A Property is immutable and safe for concurrent use.
type Property struct {
	format *Format
	items  []Item
}

// ParseProperty parses s according to f, following Proxmox's
// parse_property_string: items are separated by commas, blank items are
// skipped, the default key may be written bare anywhere, aliases are
// resolved and a folded "<model>=<MAC>" item is split into its two keys.
// Values are kept as written; comparison and printing interpret them by
// their [Type].
//
// ParseProperty is more lenient than Proxmox in two ways, both so that
// declared values compare by what they mean: it trims white space around
// keys and values (Proxmox would reject such an item), and it accepts keys
// the format does not list, so that values written by newer Proxmox
// versions can still be compared. It returns an error wrapping [ErrSyntax]
// for an item with an empty key or value, a key given twice, or a bare
// value when f has no default key.
func ParseProperty(f *Format, s string) (Property, error) {
	if f == nil {
		f = &Format{}
	}
	items, perr := scanProps(f, s, nil)
	if perr.code != 0 {
		return Property{}, fmt.Errorf("normalize: property string %q: %s: %w", s, perr, ErrSyntax)
	}
	out := make([]Item, len(items))
	for i, it := range items {
		out[i] = Item{Key: it.key, Value: it.val}
	}
	return Property{format: f, items: out}, nil
}

// Lookup returns the value of key (a canonical key name) and whether the
// property string sets it.
func (p Property) Lookup(key string) (string, bool) {
	for _, it := range p.items {
		if it.Key == key {
			return it.Value, true
		}
	}
	return "", false
}

// Items returns the items in the order they were written. The slice is a
// copy.
func (p Property) Items() []Item { return slices.Clone(p.items) }

// String prints the property string the way Proxmox's print_property_string
// does: the default key first and bare (folded with its FoldKey when both
// are set), then required keys sorted, then the remaining keys sorted.
// Values are printed canonically for their [Type]: booleans as 1 or 0,
// sizes through [FormatSize], numbers without redundant digits, sets sorted
// without duplicates, lists joined with ";". A value that does not parse as
// its type is printed as written.
func (p Property) String() string {
	kvs := make([]kv, len(p.items))
	for i, it := range p.items {
		kvs[i] = kv{it.Key, it.Value}
	}
	f := p.format
	if f == nil {
		f = &Format{}
	}
	return printProps(f, kvs)
}

// kv is the internal, allocation-free form of an Item: both strings are
// substrings of the parsed input or constants of the Format.
type kv struct{ key, val string }

type parseErrCode uint8

const (
	perrNone parseErrCode = iota
	perrEmptyKey
	perrEmptyValue
	perrDuplicate
	perrNoDefaultKey
)

type parseErr struct {
	code parseErrCode
	part string
}

func (e parseErr) String() string {
	switch e.code {
	case perrEmptyKey:
		return fmt.Sprintf("item %q has no key", e.part)
	case perrEmptyValue:
		return fmt.Sprintf("item %q has no value", e.part)
	case perrDuplicate:
		return fmt.Sprintf("key %q given twice", e.part)
	case perrNoDefaultKey:
		return fmt.Sprintf("value %q has no key and the format has no default key", e.part)
	}
	return "ok"
}

// scanProps parses s into dst without allocating while dst has room. The
// returned items reference s.
func scanProps(f *Format, s string, dst []kv) ([]kv, parseErr) {
	for len(s) > 0 {
		part := s
		if i := strings.IndexByte(s, ','); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		part = trimSpace(part)
		if part == "" {
			continue
		}
		eq := strings.IndexByte(part, '=')
		if eq < 0 {
			if f.DefaultKey == "" {
				return dst, parseErr{perrNoDefaultKey, part}
			}
			if hasKey(dst, f.DefaultKey) {
				return dst, parseErr{perrDuplicate, f.DefaultKey}
			}
			dst = append(dst, kv{f.DefaultKey, part})
			continue
		}
		k, v := trimSpace(part[:eq]), trimSpace(part[eq+1:])
		if k == "" {
			return dst, parseErr{perrEmptyKey, part}
		}
		if v == "" {
			return dst, parseErr{perrEmptyValue, part}
		}
		if f.folds(k) {
			if hasKey(dst, f.DefaultKey) {
				return dst, parseErr{perrDuplicate, f.DefaultKey}
			}
			if hasKey(dst, f.FoldKey) {
				return dst, parseErr{perrDuplicate, f.FoldKey}
			}
			dst = append(dst, kv{f.DefaultKey, k}, kv{f.FoldKey, v})
			continue
		}
		if a, ok := f.Aliases[k]; ok {
			k = a
		}
		if hasKey(dst, k) {
			return dst, parseErr{perrDuplicate, k}
		}
		dst = append(dst, kv{k, v})
	}
	return dst, parseErr{}
}

func hasKey(kvs []kv, k string) bool {
	_, ok := lookup(kvs, k)
	return ok
}

func lookup(kvs []kv, k string) (string, bool) {
	for i := range kvs {
		if kvs[i].key == k {
			return kvs[i].val, true
		}
	}
	return "", false
}

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isSpace(s[i]) {
			return false
		}
	}
	return true
}

// isSpace reports whether c is white space as Perl's \s sees it in ASCII.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\f', '\v':
		return true
	}
	return false
}

// printProps prints items in Proxmox's order with canonical values.
func printProps(f *Format, items []kv) string {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
	}
	done := make([]bool, len(items))
	mark := func(k string) {
		for i := range items {
			if items[i].key == k {
				done[i] = true
			}
		}
	}
	if f.DefaultKey != "" {
		if v, ok := lookup(items, f.DefaultKey); ok {
			mark(f.DefaultKey)
			dv := canonicalValue(f.key(f.DefaultKey).Type, v)
			switch fv, fok := lookup(items, f.FoldKey); {
			case fok && f.folds(v):
				mark(f.FoldKey)
				b.WriteString(dv + "=" + canonicalValue(f.key(f.FoldKey).Type, fv))
			case strings.IndexByte(dv, '=') >= 0 || isBlank(dv):
				// Written bare it would read back as another key or be
				// skipped as blank; keep the key.
				b.WriteString(f.DefaultKey + "=" + dv)
			default:
				b.WriteString(dv)
			}
		}
	}
	order := make([]int, 0, len(items))
	for i := range items {
		if !done[i] {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(x, y int) int {
		rx, ry := f.key(items[x].key).Required, f.key(items[y].key).Required
		if rx != ry {
			if rx {
				return -1
			}
			return 1
		}
		return strings.Compare(items[x].key, items[y].key)
	})
	for _, i := range order {
		sep()
		b.WriteString(items[i].key + "=" + canonicalValue(f.key(items[i].key).Type, items[i].val))
	}
	return b.String()
}

// canonicalValue prints v canonically for t, or returns v unchanged when it
// does not parse as t or would print empty.
func canonicalValue(t Type, v string) string {
	if c := canonical(t, v); c != "" {
		return c
	}
	return v
}

func canonical(t Type, v string) string {
	switch t {
	case TypeBool:
		if b, ok := parseBool(v); ok {
			if b {
				return "1"
			}
			return "0"
		}
	case TypeInt:
		if n, ok := parseInt(v); ok {
			return strconv.FormatInt(n, 10)
		}
	case TypeNumber:
		if x, ok := parseNumber(v); ok {
			return strconv.FormatFloat(x, 'f', -1, 64)
		}
	case TypeSize:
		if n, ok := parseSize(v); ok {
			return FormatSize(n)
		}
	case TypeSet:
		items := splitList(v, nil)
		slices.Sort(items)
		return strings.Join(slices.Compact(items), ";")
	case TypeList:
		return strings.Join(splitList(v, nil), ";")
	case TypeFold:
		return asciiUpper(v)
	}
	return v
}

// valueEqual compares two present values of type t without allocating for
// lists of up to 32 items. Values that do not parse as t compare exactly.
func valueEqual(t Type, a, b string) bool {
	if a == b {
		return true
	}
	switch t {
	case TypeBool:
		x, ok1 := parseBool(a)
		y, ok2 := parseBool(b)
		if ok1 && ok2 {
			return x == y
		}
	case TypeInt:
		x, ok1 := parseInt(a)
		y, ok2 := parseInt(b)
		if ok1 && ok2 {
			return x == y
		}
	case TypeNumber:
		x, ok1 := parseNumber(a)
		y, ok2 := parseNumber(b)
		if ok1 && ok2 {
			return x == y
		}
	case TypeSize:
		x, ok1 := parseSize(a)
		y, ok2 := parseSize(b)
		if ok1 && ok2 {
			return x == y
		}
	case TypeSet:
		return listEqual(a, b, false, false)
	case TypeList:
		return listEqual(a, b, true, false)
	case TypeFold:
		return asciiEqualFold(a, b)
	}
	return false
}

// parseBool follows Proxmox's parse_boolean.
func parseBool(s string) (bool, bool) {
	switch len(s) {
	case 1:
		switch s[0] {
		case '1':
			return true, true
		case '0':
			return false, true
		}
	case 2:
		if strings.EqualFold(s, "on") {
			return true, true
		}
		if strings.EqualFold(s, "no") {
			return false, true
		}
	case 3:
		if strings.EqualFold(s, "yes") {
			return true, true
		}
		if strings.EqualFold(s, "off") {
			return false, true
		}
	case 4:
		if strings.EqualFold(s, "true") {
			return true, true
		}
	case 5:
		if strings.EqualFold(s, "false") {
			return false, true
		}
	}
	return false, false
}

// parseInt accepts Proxmox integers ([+-]?\d+) without allocating on
// failure.
func parseInt(s string) (int64, bool) {
	t := s
	if len(t) > 0 && (t[0] == '+' || t[0] == '-') {
		t = t[1:]
	}
	if t == "" || len(t) > 18 {
		return 0, false
	}
	for i := 0; i < len(t); i++ {
		if !isDigit(t[i]) {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// parseNumber accepts Proxmox numbers (see is_number in PVE::JSONSchema)
// without allocating on failure.
func parseNumber(s string) (float64, bool) {
	t := s
	if len(t) > 0 && (t[0] == '+' || t[0] == '-') {
		t = t[1:]
	}
	digits, dot := 0, 0
	i := 0
	for ; i < len(t); i++ {
		c := t[i]
		switch {
		case isDigit(c):
			digits++
		case c == '.':
			dot++
		default:
			goto exp
		}
	}
exp:
	if digits == 0 || dot > 1 {
		return 0, false
	}
	if i < len(t) {
		if t[i] != 'e' && t[i] != 'E' {
			return 0, false
		}
		j := i + 1
		if j < len(t) && (t[j] == '+' || t[j] == '-') {
			j++
		}
		if j == len(t) {
			return 0, false
		}
		for ; j < len(t); j++ {
			if !isDigit(t[j]) {
				return 0, false
			}
		}
	}
	x, err := strconv.ParseFloat(s, 64)
	return x, err == nil
}
