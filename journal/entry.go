package journal

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"time"
	"unicode/utf8"
)

// State is the lifecycle state of an operation as of one of its records.
type State string

// The states of an operation, in lifecycle order. An operation starts in
// [Started], may pass through [TaskRunning] once its Proxmox task is known,
// and ends in [Succeeded] or [Failed]; the two last are terminal.
const (
	// Started: the operation is about to cause its side effect. A record in
	// this state is the first record of every operation and carries the
	// operation's identity: VMID, Kind, Params and IdempKey.
	Started State = "started"
	// TaskRunning: Proxmox accepted the request and runs it as the task
	// named by the record's UPID. An operation may record TaskRunning
	// again with a new UPID when it has to start the task anew.
	TaskRunning State = "task_running"
	// Succeeded: the side effect happened. Terminal.
	Succeeded State = "succeeded"
	// Failed: the operation ended without its effect (or with an unknown
	// one the caller gave up on); Error says why. Terminal.
	Failed State = "failed"
)

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case Started, TaskRunning, Succeeded, Failed:
		return true
	}
	return false
}

// Terminal reports whether s ends an operation: [Succeeded] or [Failed].
func (s State) Terminal() bool { return s == Succeeded || s == Failed }

// Limits on what one record may hold. They keep a damaged length field from
// being mistaken for a real record and bound the memory a record can claim.
const (
	// MaxIDLen is the longest OpID or IdempKey, in bytes.
	MaxIDLen = 1024
	// MaxEntrySize is the largest encoded entry, in bytes (see
	// [Entry.MarshalBinary]).
	MaxEntrySize = 1 << 20
)

// Entry is one record of an operation's lifecycle, and also the answer to
// "where is this operation now": [Journal.Latest] returns the operation's
// latest record merged with the identity its earlier records carried.
//
// An Entry is a value; the journal copies what it keeps (Params included), so
// the caller may reuse or change an Entry after Append and may change what
// Latest returned. Like any Go value with a map, it is not safe to change
// from one goroutine while another reads it.
type Entry struct {
	// OpID names the operation; all records of one operation share it.
	// Required; at most [MaxIDLen] bytes of UTF-8.
	OpID string
	// VMID is the guest the operation acts on. Required (positive) on the
	// Started record; later records may leave it zero, or repeat it.
	VMID int
	// Kind says what the operation does: "start", "stop", "set_config"...
	// Required on the Started record; later records may leave it empty, or
	// repeat it.
	Kind string
	// Params are the operation's arguments, as given on the Started
	// record. Later records may leave them nil, or repeat them exactly.
	// Keys must be non-empty.
	Params map[string]string
	// UPID is the Proxmox task the operation waits for. Required on
	// TaskRunning records; later records may leave it empty, which keeps
	// the last one recorded.
	UPID string
	// State is the lifecycle state this record enters. Required.
	State State
	// IdempKey, when set, makes the operation a one-shot that runs at most
	// once ever: the key belongs to the first operation that records it,
	// and is "applied" once that operation has Succeeded. Given on the
	// Started record; later records may leave it empty, or repeat it. At
	// most [MaxIDLen] bytes.
	IdempKey string
	// Error describes a failure. It belongs to its record only: it is not
	// carried forward to later records.
	Error string
	// At is when the record was made. Append sets it to the current time
	// when it is zero; journals keep it in UTC with nanosecond precision,
	// so it must lie between the years 1678 and 2262.
	At time.Time
}

// Clone returns a copy of e that shares no memory with it.
func (e Entry) Clone() Entry {
	e.Params = maps.Clone(e.Params)
	return e
}

// Validate checks the rules an entry must meet on its own, before the
// journal's history is considered: a non-empty OpID, a known State, a
// non-negative VMID, a Started record naming its guest and kind, a
// TaskRunning record naming its task, valid UTF-8 everywhere, non-empty
// Params keys, an At the journal can store, and the size limits. The error
// wraps [ErrInvalidEntry].
func (e Entry) Validate() error {
	if err := e.validateFields(true, false); err != nil {
		return err
	}
	// One pass over the params checks them and adds up their size.
	n := e.encodedSize()
	for k, v := range e.Params {
		if err := e.checkParam(k, v); err != nil {
			return err
		}
		n += paramSize(k, v)
	}
	if n > MaxEntrySize {
		return e.tooLarge(n)
	}
	return nil
}

func (e *Entry) tooLarge(n int) error {
	return e.invalid("encodes to %d bytes, more than the limit of %d", n, MaxEntrySize)
}

// validateFields is Validate without the size check, which the decoder gets
// for free from its input's length. The decoder checks the op ID (when it
// keeps it as bytes) and Params as it reads them, and passes false for
// those.
func (e *Entry) validateFields(opID, params bool) error {
	if opID {
		if err := checkOpID(e.OpID); err != nil {
			return err
		}
	}
	if !e.State.Valid() {
		return e.invalid("unknown state %q", e.State)
	}
	if e.VMID < 0 {
		return e.invalid("negative VMID %d", e.VMID)
	}
	switch e.State {
	case Started:
		if e.VMID == 0 {
			return e.invalid("a started record must name its guest (VMID > 0)")
		}
		if e.Kind == "" {
			return e.invalid("a started record must name its kind")
		}
	case TaskRunning:
		if e.UPID == "" {
			return e.invalid("a task_running record must carry the task's UPID")
		}
	}
	if len(e.IdempKey) > MaxIDLen {
		return e.invalid("idempotency key of %d bytes, longer than %d", len(e.IdempKey), MaxIDLen)
	}
	for _, f := range [...]struct{ name, v string }{
		{"kind", e.Kind}, {"UPID", e.UPID}, {"idempotency key", e.IdempKey}, {"error", e.Error},
	} {
		if !utf8.ValidString(f.v) {
			return e.invalid("%s is not valid UTF-8", f.name)
		}
	}
	if params {
		for k, v := range e.Params {
			if err := e.checkParam(k, v); err != nil {
				return err
			}
		}
	}
	if !e.At.IsZero() && !timeRepresentable(e.At) {
		return e.invalid("time %s is outside the years 1678 to 2262", e.At)
	}
	return nil
}

func checkOpID[S string | []byte](id S) error {
	switch {
	case len(id) == 0:
		return fmt.Errorf("%w: empty op ID", ErrInvalidEntry)
	case len(id) > MaxIDLen:
		return fmt.Errorf("%w: op ID of %d bytes, longer than %d", ErrInvalidEntry, len(id), MaxIDLen)
	case !utf8.Valid([]byte(id)):
		return fmt.Errorf("%w: op ID %q is not valid UTF-8", ErrInvalidEntry, id)
	}
	return nil
}

func (e *Entry) checkParam(k, v string) error {
	if k == "" {
		return e.invalid("empty parameter name")
	}
	if !utf8.ValidString(k) || !utf8.ValidString(v) {
		return e.invalid("parameter %q is not valid UTF-8", k)
	}
	return nil
}

func (e *Entry) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: op %q: %s", ErrInvalidEntry, e.OpID, fmt.Sprintf(format, args...))
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func timeRepresentable(t time.Time) bool {
	return !t.Before(minTime) && !t.After(maxTime)
}

// Merge checks that e may follow prev in an operation's history, and returns
// the operation's new latest state: e with the operation's identity (VMID,
// Kind, Params, IdempKey, and the last UPID when e has none) carried forward
// from prev. prev is the operation's current latest state as returned by a
// previous Merge, or nil when the journal holds no record of the operation.
//
// The rules, which every backend applies in Append:
//
//   - an operation's first record is [Started];
//   - after Started: TaskRunning, Succeeded or Failed;
//   - after TaskRunning: TaskRunning (a new task), Succeeded or Failed;
//   - nothing follows Succeeded or Failed: error wrapping [ErrTerminal];
//   - VMID, Kind, IdempKey and Params, when a later record repeats them,
//     must equal the operation's;
//
// Other violations wrap [ErrInvalidTransition]; an entry that fails
// [Entry.Validate] gives that error. Merge does not check idempotency-key
// ownership across operations, which needs the journal's key index; backends
// check that themselves ([ErrKeyConflict]).
//
// Merge never retains e.Params: the result holds prev's Params or a copy.
// Backends written outside this module use Merge so that they enforce the
// same rules as the built-in ones.
func Merge(prev *Entry, e Entry) (Entry, error) {
	if err := e.Validate(); err != nil {
		return Entry{}, err
	}
	hasParams := len(e.Params) > 0
	if err := checkNext(prev, &e, hasParams, func() bool { return maps.Equal(e.Params, prev.Params) }); err != nil {
		return Entry{}, err
	}
	out := carry(prev, e)
	switch {
	case prev != nil:
		out.Params = prev.Params
	case hasParams:
		out.Params = maps.Clone(e.Params)
	}
	return out, nil
}

// checkNext applies the lifecycle rules of Merge to a valid record e of the
// op whose latest state is prev (nil: none). hasParams says whether e
// carries Params; sameParams, called only for a known op and a record with
// Params, says whether they equal the op's.
func checkNext(prev, e *Entry, hasParams bool, sameParams func() bool) error {
	if prev == nil {
		if e.State != Started {
			return fmt.Errorf("journal: op %q: %w: the journal holds no record of the op, so its first record must be %q, not %q",
				e.OpID, ErrInvalidTransition, Started, e.State)
		}
		return nil
	}
	switch {
	case prev.State.Terminal():
		return fmt.Errorf("%w: op %q: it already %s; cannot record %q", ErrTerminal, e.OpID, prev.State, e.State)
	case e.State == Started:
		return fmt.Errorf("%w: op %q: already started (now %s)", ErrInvalidTransition, e.OpID, prev.State)
	case e.VMID != 0 && e.VMID != prev.VMID:
		return fmt.Errorf("%w: op %q: VMID %d differs from the op's VMID %d", ErrInvalidTransition, e.OpID, e.VMID, prev.VMID)
	case e.Kind != "" && e.Kind != prev.Kind:
		return fmt.Errorf("%w: op %q: kind %q differs from the op's kind %q", ErrInvalidTransition, e.OpID, e.Kind, prev.Kind)
	case e.IdempKey != "" && e.IdempKey != prev.IdempKey:
		return fmt.Errorf("%w: op %q: idempotency key %q differs from the op's key %q", ErrInvalidTransition, e.OpID, e.IdempKey, prev.IdempKey)
	case hasParams && !sameParams():
		return fmt.Errorf("%w: op %q: params differ from the op's params", ErrInvalidTransition, e.OpID)
	}
	return nil
}

// carry returns e with the identity of its op (VMID, Kind, IdempKey, and
// the last UPID when e has none) carried forward from prev. Params are left
// to the caller: carry returns none.
func carry(prev *Entry, e Entry) Entry {
	e.Params = nil
	if prev == nil {
		return e
	}
	// The op's own strings are kept (equal values, one copy in memory).
	e.OpID, e.VMID, e.Kind, e.IdempKey = prev.OpID, prev.VMID, prev.Kind, prev.IdempKey
	if e.UPID == "" {
		e.UPID = prev.UPID
	}
	return e
}

// Errors returned by Append (and [Merge]) for input that breaks the rules.
// In each case nothing was written.
var (
	// ErrInvalidEntry: the entry is malformed on its own (see
	// [Entry.Validate]).
	ErrInvalidEntry = errors.New("journal: invalid entry")
	// ErrInvalidTransition: the entry cannot follow the operation's latest
	// record (see [Merge]).
	ErrInvalidTransition = errors.New("journal: invalid transition")
	// ErrTerminal: the operation already Succeeded or Failed; nothing may
	// follow.
	ErrTerminal = errors.New("journal: operation already terminal")
	// ErrKeyConflict: the entry's idempotency key belongs to another
	// operation.
	ErrKeyConflict = errors.New("journal: idempotency key held by another operation")
)
