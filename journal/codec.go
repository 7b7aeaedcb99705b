package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Binary encoding of an Entry, version 1. All integers are little-endian
// base-128 varints (encoding/binary), minimal length; strings are a length
// varint then UTF-8 bytes:
//
//	u8       version (1)
//	u8       state: 1 started, 2 task_running, 3 succeeded, 4 failed
//	u8       flags: bit 0 set when At is present
//	uvarint  VMID
//	varint   At as Unix nanoseconds (only when flag bit 0 is set)
//	string   OpID, Kind, UPID, IdempKey, Error
//	uvarint  number of params, then that many (key, value) string pairs
//	         in strictly increasing key order
//
// The encoding is canonical: each Entry has exactly one, and decoding
// rejects every other byte string.
const codecVersion = 1

const flagAt = 1

var stateCodes = [...]State{1: Started, 2: TaskRunning, 3: Succeeded, 4: Failed}

func stateCode(s State) byte {
	switch s {
	case Started:
		return 1
	case TaskRunning:
		return 2
	case Succeeded:
		return 3
	case Failed:
		return 4
	}
	return 0
}

// MarshalBinary encodes e in the journal's stable binary format, the one
// both built-in backends store. It fails, wrapping [ErrInvalidEntry], for an
// entry that does not pass [Entry.Validate].
func (e Entry) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(nil)
}

// AppendBinary appends the encoding of e (see [Entry.MarshalBinary]) to b.
func (e Entry) AppendBinary(b []byte) ([]byte, error) {
	if len(e.Params) > len(pairs{}) {
		if err := e.Validate(); err != nil {
			return b, err
		}
		return e.appendEncoding(b), nil
	}
	// The usual handful of params: Validate's checks, with one pass
	// over them that checks them, adds up their size and sorts them for
	// the encoding.
	if err := e.validateFields(true, false); err != nil {
		return b, err
	}
	size := e.encodedSize()
	var kvs pairs
	n := 0
	for k, v := range e.Params {
		if err := e.checkParam(k, v); err != nil {
			return b, err
		}
		size += paramSize(k, v)
		kvs.insert(n, k, v)
		n++
	}
	if size > MaxEntrySize {
		return b, e.tooLarge(size)
	}
	return kvs.append(e.appendHead(b), n), nil
}

// appendEncoding appends the encoding of an already validated entry.
func (e *Entry) appendEncoding(b []byte) []byte {
	b = e.appendHead(b)
	return appendParams(b, e.Params)
}

// appendEncodingRaw appends the encoding of an already validated entry
// whose Params are given encoded (see encodeParams) and whose Params field
// is ignored.
func (e *Entry) appendEncodingRaw(b []byte, params string) []byte {
	b = e.appendHead(b)
	if params == "" {
		return append(b, 0)
	}
	return append(b, params...)
}

// appendHead appends everything but the params.
func (e *Entry) appendHead(b []byte) []byte {
	var flags byte
	if !e.At.IsZero() {
		flags |= flagAt
	}
	b = append(b, codecVersion, stateCode(e.State), flags)
	b = binary.AppendUvarint(b, uint64(e.VMID))
	if flags&flagAt != 0 {
		b = binary.AppendVarint(b, e.At.UnixNano())
	}
	b = appendString(b, e.OpID)
	b = appendString(b, e.Kind)
	b = appendString(b, e.UPID)
	b = appendString(b, e.IdempKey)
	return appendString(b, e.Error)
}

// appendParams appends the canonical encoding of m: the number of pairs,
// then the pairs in increasing key order.
func appendParams(b []byte, m map[string]string) []byte {
	if len(m) <= len(pairs{}) {
		// The usual handful of params: sort the pairs on the stack.
		var kvs pairs
		n := 0
		for k, v := range m {
			kvs.insert(n, k, v)
			n++
		}
		return kvs.append(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = appendString(appendString(b, k), m[k])
	}
	return b
}

// pairs holds up to eight params, sorted by name, on the stack.
type pairs [8][2]string

// insert adds k=v to the first n pairs, keeping them sorted.
func (p *pairs) insert(n int, k, v string) {
	i := n
	for ; i > 0 && p[i-1][0] > k; i-- {
		p[i] = p[i-1]
	}
	p[i] = [2]string{k, v}
}

// append appends the encoding of params made of the first n pairs.
func (p *pairs) append(b []byte, n int) []byte {
	b = binary.AppendUvarint(b, uint64(n))
	for _, kv := range p[:n] {
		b = appendString(appendString(b, kv[0]), kv[1])
	}
	return b
}

// encodeParams returns the canonical encoding of m, or "" when m is empty.
// The index keeps an op's Params in this form: a single pointer-free string
// instead of a map costs the garbage collector far less, and equal Params
// have equal encodings.
func encodeParams(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	return string(appendParams(nil, m))
}

// decodeParams returns a new map holding the Params encoded in s, which
// encodeParams or the decoder produced (so it is well-formed).
func decodeParams(s string) map[string]string {
	if s == "" {
		return nil
	}
	d := decoder{b: []byte(s)}
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	m := make(map[string]string, int(n))
	for range n {
		k := d.bytes()
		v := d.bytes()
		if d.err != nil {
			break
		}
		m[string(k)] = string(v)
	}
	return m
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// encodedSize returns (an upper bound on) the size of e's encoding, not
// counting the params, whose share validateFields adds up as it checks
// them.
func (e *Entry) encodedSize() int {
	n := 3 + uvarintLen(uint64(e.VMID))
	if !e.At.IsZero() {
		n += binary.MaxVarintLen64 // an upper bound is enough here
	}
	for _, s := range [...]string{e.OpID, e.Kind, e.UPID, e.IdempKey, e.Error} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n + uvarintLen(uint64(len(e.Params)))
}

func paramSize(k, v string) int {
	return uvarintLen(uint64(len(k))) + len(k) + uvarintLen(uint64(len(v))) + len(v)
}

// UnmarshalBinary decodes data, which must hold exactly one entry in the
// format of [Entry.MarshalBinary]. Anything else (an unknown version, a
// truncated or overlong field, trailing bytes, a non-canonical encoding, or
// an entry that fails [Entry.Validate]) is an error wrapping [ErrCorrupt].
// On error *e is unchanged.
func (e *Entry) UnmarshalBinary(data []byte) error {
	var out Entry
	if err := decodeEntry(data, &out, nil, nil); err != nil {
		return fmt.Errorf("journal: %w: %w", ErrCorrupt, err)
	}
	*e = out
	return nil
}

// interner shares the backing memory of short strings that repeat from
// record to record (kinds, parameter names and values), through a bounded
// table, which makes replaying a long journal allocate far less. A nil
// *interner shares nothing.
type interner struct {
	short map[string]string
}

const (
	internMaxLen     = 64
	internMaxEntries = 4096
)

func (in *interner) bytes(b []byte) string {
	if in == nil || in.short == nil || len(b) > internMaxLen {
		return string(b)
	}
	if s, ok := in.short[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.short) < internMaxEntries {
		in.short[s] = s
	}
	return s
}

var (
	errShort     = errors.New("entry truncated")
	errVarint    = errors.New("malformed or non-minimal varint")
	errTrailing  = errors.New("trailing bytes after entry")
	errParamSort = errors.New("parameters not in strictly increasing key order")
)

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		if n == 0 {
			d.err = errShort
		} else {
			d.err = errVarint
		}
		return 0
	}
	d.b = d.b[n:]
	return x
}

// varint reads a signed varint: the zig-zag form of an unsigned one, as
// binary.AppendVarint writes it.
func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string(in *interner) string {
	b := d.bytes()
	if d.err != nil || len(b) == 0 {
		return ""
	}
	return in.bytes(b)
}

// decodeEntry decodes exactly one entry from b into *e. With raw nil it
// builds e.Params; otherwise it leaves e.Params nil and stores the Params'
// canonical encoding (see encodeParams) in *raw, which spares the map.
func decodeEntry(b []byte, e *Entry, in *interner, raw *string) error {
	return decodeEntryID(b, e, in, raw, nil)
}

// decodeEntryID is decodeEntry that, when id is not nil and the record is
// not a started one, leaves e.OpID empty and points *id at the op ID's
// bytes in b instead: the op's later records need the ID only to find the
// op, whose state already holds it as a string.
func decodeEntryID(b []byte, e *Entry, in *interner, raw *string, id *[]byte) error {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != codecVersion {
		return fmt.Errorf("unknown entry version %d", v)
	}
	code := d.byte()
	flags := d.byte()
	if d.err != nil {
		return d.err
	}
	if int(code) >= len(stateCodes) || stateCodes[code] == "" {
		return fmt.Errorf("unknown state code %d", code)
	}
	if flags&^flagAt != 0 {
		return fmt.Errorf("unknown flags %#x", flags)
	}
	e.State = stateCodes[code]
	vmid := d.uvarint()
	if vmid > uint64(maxInt) {
		return fmt.Errorf("VMID %d out of range", vmid)
	}
	e.VMID = int(vmid)
	if flags&flagAt != 0 {
		e.At = time.Unix(0, d.varint()).UTC()
	}
	byID := id != nil && e.State != Started
	var opID []byte
	if byID {
		*id = d.bytes()
		if d.err != nil {
			return d.err
		}
		if err := checkOpID(*id); err != nil {
			return err
		}
	} else {
		opID = d.bytes()
	}
	e.Kind = d.string(in)
	upid := d.bytes()
	key := d.bytes()
	e.Error = d.string(in) // failure messages repeat
	params := d.b
	np := d.uvarint()
	if d.err != nil {
		return d.err
	}
	if np > uint64(len(d.b)/2) { // each pair takes at least two bytes
		return errShort
	}
	if np > 0 && raw == nil {
		e.Params = make(map[string]string, int(np))
	}
	var last []byte
	for i := uint64(0); i < np; i++ {
		k := d.bytes()
		v := d.bytes()
		if d.err != nil {
			return d.err
		}
		if i > 0 && string(k) <= string(last) {
			return errParamSort
		}
		last = k
		if raw != nil {
			if len(k) == 0 {
				return e.invalid("empty parameter name")
			}
			if !utf8.Valid(k) || !utf8.Valid(v) {
				return e.invalid("parameter %q is not valid UTF-8", k)
			}
			continue
		}
		ks, vs := in.bytes(k), in.bytes(v)
		if err := e.checkParam(ks, vs); err != nil {
			return err
		}
		e.Params[ks] = vs
	}
	if len(d.b) != 0 {
		return errTrailing
	}
	var rawLong []byte
	if raw != nil {
		*raw = ""
		if params = params[:len(params)-len(d.b)]; np > 0 {
			if len(params) <= internMaxLen {
				*raw = in.bytes(params)
			} else {
				rawLong = params
			}
		}
	}
	// The record's own strings share one allocation: they belong to one
	// op and live as long as its state does.
	if n := len(opID) + len(upid) + len(key) + len(rawLong); n > 0 {
		var sb strings.Builder
		sb.Grow(n)
		sb.Write(opID)
		sb.Write(upid)
		sb.Write(key)
		sb.Write(rawLong)
		all, off := sb.String(), 0
		take := func(b []byte) string {
			if len(b) == 0 {
				return ""
			}
			off += len(b)
			return all[off-len(b) : off]
		}
		e.OpID, e.UPID, e.IdempKey = take(opID), take(upid), take(key)
		if len(rawLong) > 0 {
			*raw = take(rawLong)
		}
	}
	if err := e.validateFields(!byID, false); err != nil {
		return err
	}
	return nil
}

const maxInt = int(^uint(0) >> 1)
