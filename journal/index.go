package journal

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// opState is what an index holds for one operation.
type opState struct {
	e   Entry  // latest state, merged; e.Params is never mutated
	seq uint64 // when the operation started, in record order
}

// index is the latest state of every operation, by op ID, with the lookups
// the Journal methods need. It does no locking.
type index struct {
	ops      map[string]*opState
	keys     map[string]string // idempotency key → op ID
	inflight map[string]*opState
}

func newIndex() *index {
	return &index{
		ops:      make(map[string]*opState),
		keys:     make(map[string]string),
		inflight: make(map[string]*opState),
	}
}

func (x *index) latest(opID string) *Entry {
	if st := x.ops[opID]; st != nil {
		return &st.e
	}
	return nil
}

// apply makes e (already merged) the latest state of its operation.
func (x *index) apply(e Entry, seq uint64) {
	st := x.ops[e.OpID]
	if st == nil {
		st = &opState{seq: seq}
		x.ops[e.OpID] = st
	}
	st.e = e
	if e.IdempKey != "" {
		if _, ok := x.keys[e.IdempKey]; !ok {
			x.keys[e.IdempKey] = e.OpID
		}
	}
	if e.State.Terminal() {
		delete(x.inflight, e.OpID)
	} else {
		x.inflight[e.OpID] = st
	}
}

func (x *index) remove(opID string) {
	st := x.ops[opID]
	if st == nil {
		return
	}
	delete(x.ops, opID)
	delete(x.inflight, opID)
	if k := st.e.IdempKey; k != "" && x.keys[k] == opID {
		delete(x.keys, k)
	}
}

// replay applies one stored record, checking it against the history before
// it as Append would have. A snapshot record (written by compaction) is an
// operation's merged state and must be its first record.
func (x *index) replay(e *Entry, snapshot bool, seq uint64) error {
	st := x.ops[e.OpID]
	if snapshot {
		if st != nil {
			return fmt.Errorf("snapshot of op %q, which already has records", e.OpID)
		}
		if err := x.checkKey(e.OpID, e.IdempKey); err != nil {
			return err
		}
		x.apply(*e, seq)
		return nil
	}
	var prev *Entry
	if st != nil {
		prev = &st.e
	}
	merged, err := merge(prev, *e)
	if err != nil {
		return err
	}
	if prev == nil {
		if err := x.checkKey(e.OpID, e.IdempKey); err != nil {
			return err
		}
	}
	x.apply(merged, seq)
	return nil
}

func (x *index) checkKey(opID, key string) error {
	if key == "" {
		return nil
	}
	if owner, ok := x.keys[key]; ok && owner != opID {
		return keyConflict(opID, key, owner)
	}
	return nil
}

func keyConflict(opID, key, owner string) error {
	return fmt.Errorf("journal: op %q: %w: key %q belongs to op %q", opID, ErrKeyConflict, key, owner)
}

func (x *index) applied(key string) bool {
	if key == "" {
		return false
	}
	owner, ok := x.keys[key]
	return ok && x.ops[owner] != nil && x.ops[owner].e.State == Succeeded
}

func (x *index) byKey(key string) (Entry, bool) {
	if key == "" {
		return Entry{}, false
	}
	owner, ok := x.keys[key]
	if !ok {
		return Entry{}, false
	}
	st := x.ops[owner]
	if st == nil {
		return Entry{}, false
	}
	return st.e.Clone(), true
}

func sortedStates(m map[string]*opState) []*opState {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b *opState) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

func cloneAll(sts []*opState) []Entry {
	out := make([]Entry, len(sts))
	for i, st := range sts {
		out[i] = st.e.Clone()
	}
	return out
}

func (x *index) inFlight() []Entry { return cloneAll(sortedStates(x.inflight)) }

func (x *index) all() []Entry { return cloneAll(sortedStates(x.ops)) }

// retention decides which terminal operations compaction keeps.
type retention struct {
	ops  time.Duration // terminal operations; negative: forever
	keys time.Duration // succeeded operations that hold a key; negative: forever
}

// DefaultRetention is how long a terminal operation stays in a journal,
// counted from its last record, unless an option says otherwise.
const DefaultRetention = 7 * 24 * time.Hour

func (r retention) keep(e *Entry, now time.Time) bool {
	if !e.State.Terminal() {
		return true
	}
	d := r.ops
	if e.State == Succeeded && e.IdempKey != "" {
		d = r.keys
	}
	return d < 0 || now.Sub(e.At) < d
}
