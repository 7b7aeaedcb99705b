package normalize

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Description returns the canonical form of a QEMU guest description:
// line endings converted to LF (a CR or a run of CRs before an LF is
// dropped) and all trailing white space removed, white space as Unicode
// defines it (NBSP, ideographic space, line separator, ...). That is what
// Proxmox keeps of a virtual machine's description: it reads the text back
// decoded and strips its trailing white space with Unicode rules. A
// description that is then "0" is returned as "": Proxmox writes no
// description for "0" (nor for ""), so it reads back absent.
//
// Leading white space and interior blank lines are kept: Proxmox preserves
// them. Percent escapes are not decoded; the API returns descriptions
// decoded already. Containers keep more of their descriptions (trailing
// white space other than line endings is content there); [Set.Normalize]
// applies the rule of the set's guest type.
func Description(v string) string {
	return canonicalDescription(v, false)
}

// canonicalDescription is the canonical description of either guest type:
// trailing white space (QEMU) or trailing line endings (LXC, container) cut,
// CR runs before LF folded, and a result of "0" made absent.
func canonicalDescription(v string, container bool) string {
	v = descriptionTrim(v, container)
	if v == "0" {
		return ""
	}
	if strings.IndexByte(v, '\r') < 0 {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' {
			j := i
			for j < len(v) && v[j] == '\r' {
				j++
			}
			if j < len(v) && v[j] == '\n' {
				i = j - 1 // the loop adds one; the LF is written next round
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// descriptionTrim cuts what Proxmox does not keep at the end of a
// description. A virtual machine's description loses its trailing white
// space: qemu-server strips it with Perl's \s on the decoded text, which is
// Unicode's White_Space, the set unicode.IsSpace reports. A container's
// loses only its trailing line endings: pve-container writes one comment
// line per LF-separated line (so trailing empty lines vanish) and reads
// each back with an LF, never trimming; a trailing CR is taken as part of
// that line ending, as CRLF equals LF everywhere in descriptions.
func descriptionTrim(v string, container bool) string {
	if container {
		i := len(v)
		for i > 0 && (v[i-1] == '\n' || v[i-1] == '\r') {
			i--
		}
		return v[:i]
	}
	for len(v) > 0 {
		c := v[len(v)-1]
		if c < utf8.RuneSelf {
			if !isSpace(c) {
				return v
			}
			v = v[:len(v)-1]
			continue
		}
		r, size := utf8.DecodeLastRuneInString(v)
		if !unicode.IsSpace(r) {
			return v
		}
		v = v[:len(v)-size]
	}
	return v
}

func trimRightSpace(s string) string {
	i := len(s)
	for i > 0 && isSpace(s[i-1]) {
		i--
	}
	return s[:i]
}

func trimSpace(s string) string {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return trimRightSpace(s[i:])
}

// descriptionEqual compares canonicalDescription(a) and
// canonicalDescription(b) without building either.
func descriptionEqual(a, b string, container bool) bool {
	a, b = descriptionTrim(a, container), descriptionTrim(b, container)
	if a == "0" {
		a = ""
	}
	if b == "0" {
		b = ""
	}
	if a == b {
		return true
	}
	i, j := 0, 0
	for {
		ca, ni := nextDescByte(a, i)
		cb, nj := nextDescByte(b, j)
		if ni < 0 || nj < 0 {
			return ni < 0 && nj < 0
		}
		if ca != cb {
			return false
		}
		i, j = ni, nj
	}
}

// nextDescByte returns the byte of the canonical description at raw offset
// i and the offset after it, folding CR+ LF into LF. It returns -1 at the
// end.
func nextDescByte(s string, i int) (byte, int) {
	if i >= len(s) {
		return 0, -1
	}
	if s[i] == '\r' {
		j := i
		for j < len(s) && s[j] == '\r' {
			j++
		}
		if j < len(s) && s[j] == '\n' {
			return '\n', j + 1
		}
	}
	return s[i], i + 1
}

// isListSep reports the separators of Proxmox's split_list: comma,
// semicolon and white space.
func isListSep(c byte) bool { return c == ',' || c == ';' || isSpace(c) }

// nextListItem returns the next non-empty split_list item of s at or after
// offset i, and the offset after it; ok is false when none is left.
func nextListItem(s string, i int) (item string, next int, ok bool) {
	for i < len(s) && isListSep(s[i]) {
		i++
	}
	if i >= len(s) {
		return "", len(s), false
	}
	j := i
	for j < len(s) && !isListSep(s[j]) {
		j++
	}
	return s[i:j], j, true
}

// splitList splits s like Proxmox's split_list, appending to dst.
func splitList(s string, dst []string) []string {
	for i := 0; ; {
		item, next, ok := nextListItem(s, i)
		if !ok {
			return dst
		}
		dst = append(dst, item)
		i = next
	}
}

// listEqual compares two split_list values, as ordered lists or as sets
// (duplicates ignored), optionally ignoring letter case. It does not
// allocate for up to 32 items a side.
func listEqual(a, b string, ordered, fold bool) bool {
	eq := asciiEqualFold
	if !fold {
		eq = func(x, y string) bool { return x == y }
	}
	if ordered {
		i, j := 0, 0
		for {
			x, ni, okx := nextListItem(a, i)
			y, nj, oky := nextListItem(b, j)
			if !okx || !oky {
				return okx == oky
			}
			if !eq(x, y) {
				return false
			}
			i, j = ni, nj
		}
	}
	var abuf, bbuf [32]string
	as := splitList(a, abuf[:0])
	bs := splitList(b, bbuf[:0])
	return subset(as, bs, eq) && subset(bs, as, eq)
}

func subset(xs, ys []string, eq func(string, string) bool) bool {
outer:
	for _, x := range xs {
		for _, y := range ys {
			if eq(x, y) {
				continue outer
			}
		}
		return false
	}
	return true
}

// asciiEqualFold compares ASCII letters without case and every other byte
// exactly. Proxmox tags are ASCII ([a-z0-9_][a-z0-9_+.-]*); Unicode case
// folding would make folding and lower-casing disagree (İ).
func asciiEqualFold(x, y string) bool {
	if len(x) != len(y) {
		return false
	}
	for i := 0; i < len(x); i++ {
		if lowerASCII(x[i]) != lowerASCII(y[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerASCII(b[j])
			}
			return string(b)
		}
	}
	return s
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// canonicalTags prints a tag list the way Proxmox's get_unique_tags does:
// split, de-duplicated, sorted and joined with ";". By default tags are
// lower-cased and sorted by their lower-case form; with case-sensitive tags
// they keep their case and sort as Perl's cmp does, by code point, which
// puts every upper-case ASCII letter before every lower-case one
// ("Web;Zeta;apple"). strings.Compare orders UTF-8 bytes by code point as
// well.
func canonicalTags(v string, caseSensitive bool) string {
	tags := splitList(v, nil)
	if !caseSensitive {
		for i, t := range tags {
			tags[i] = asciiLower(t)
		}
	}
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ";")
}

// sshKeyStream yields the canonical byte stream of an sshkeys value:
// percent-decoded, with each line trimmed, runs of blanks collapsed to one
// space, empty lines dropped and lines separated by a single LF.
type sshKeyStream struct {
	s       string
	i       int
	started bool
	pending byte // separator owed before the next byte: 0, ' ' or '\n'
	held    byte // a byte read ahead while a separator was returned
	hasHeld bool
}

// rawNext returns the next percent-decoded byte.
func (k *sshKeyStream) rawNext() (byte, bool) {
	if k.i >= len(k.s) {
		return 0, false
	}
	c := k.s[k.i]
	if c == '%' && k.i+2 < len(k.s) {
		if h, ok := unhex(k.s[k.i+1]); ok {
			if l, ok := unhex(k.s[k.i+2]); ok {
				k.i += 3
				return h<<4 | l, true
			}
		}
	}
	k.i++
	return c, true
}

func (k *sshKeyStream) next() (byte, bool) {
	if k.hasHeld {
		k.hasHeld = false
		return k.held, true
	}
	for {
		c, ok := k.rawNext()
		if !ok {
			return 0, false
		}
		switch c {
		case ' ', '\t', '\f', '\v':
			if k.pending == 0 {
				k.pending = ' '
			}
			continue
		case '\r', '\n':
			k.pending = '\n'
			continue
		}
		if k.pending != 0 && k.started {
			sep := k.pending
			k.pending = 0
			k.held, k.hasHeld = c, true
			return sep, true
		}
		k.pending = 0
		k.started = true
		return c, true
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func sshKeysEqual(a, b string) bool {
	x, y := sshKeyStream{s: a}, sshKeyStream{s: b}
	for {
		ca, oka := x.next()
		cb, okb := y.next()
		if !oka || !okb {
			return oka == okb
		}
		if ca != cb {
			return false
		}
	}
}

// canonicalSSHKeys returns the canonical sshkeys text, percent-encoded the
// way Proxmox's urlencoded format allows (unreserved characters kept, all
// others as upper-case %XX), lines separated by %0A.
func canonicalSSHKeys(v string) string {
	const unreserved = "-_.!~*'()"
	var b strings.Builder
	k := sshKeyStream{s: v}
	for {
		c, ok := k.next()
		if !ok {
			return b.String()
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || strings.IndexByte(unreserved, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		const hexdigits = "0123456789ABCDEF"
		b.WriteByte('%')
		b.WriteByte(hexdigits[c>>4])
		b.WriteByte(hexdigits[c&15])
	}
}

// decodedSSHKeys returns the canonical sshkeys text decoded, for showing a
// person.
func decodedSSHKeys(v string) string {
	var b strings.Builder
	k := sshKeyStream{s: v}
	for {
		c, ok := k.next()
		if !ok {
			return b.String()
		}
		b.WriteByte(c)
	}
}
