package journal

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// opState is what an index holds for one operation: its latest merged
// state, with the Params kept encoded.
type opState struct {
	e      Entry  // latest state, merged; e.Params is always nil
	params string // the op's Params, encoded (see encodeParams)
	seq    uint64 // when the operation started, in record order
}

// entry returns the op's latest state as an Entry the caller owns.
func (st *opState) entry() Entry {
	e := st.e
	e.Params = decodeParams(st.params)
	return e
}

// nextState checks that the valid record e may follow prev, the op's state
// (nil for an op the journal does not hold), and returns the op's state
// after it. params is e.Params encoded; e.Params itself is not used. For a
// new op the caller sets seq.
func nextState(prev *opState, e *Entry, params string) (opState, error) {
	var pe *Entry
	if prev != nil {
		pe = &prev.e
	}
	if err := checkNext(pe, e, params != "", func() bool { return params == prev.params }); err != nil {
		return opState{}, err
	}
	next := opState{e: carry(pe, *e), params: params}
	if prev != nil {
		next.params, next.seq = prev.params, prev.seq
	}
	return next, nil
}

// index is the latest state of every operation, by op ID, with the lookups
// the Journal methods need. It does no locking.
type index struct {
	ops      map[string]*opState
	keys     map[string]string // idempotency key → op ID
	inflight map[string]*opState

	// replaying is set while the index is built from a log: the upkeep
	// of inflight waits for buildInflight (saving an insert and a delete
	// per op), and an op's later records update its state in place.
	replaying bool
}

// buildInflight rebuilds inflight from ops and ends replaying.
func (x *index) buildInflight() {
	x.replaying = false
	clear(x.inflight)
	for id, st := range x.ops {
		if !st.e.State.Terminal() {
			x.inflight[id] = st
		}
	}
}

func newIndex() *index { return newIndexSized(0) }

// newIndexSized returns an empty index with room for about hint ops.
func newIndexSized(hint int) *index {
	return &index{
		ops:      make(map[string]*opState, hint),
		keys:     make(map[string]string, hint),
		inflight: make(map[string]*opState),
	}
}

// apply makes next the state of its op.
func (x *index) apply(next opState) { x.applyTo(x.ops[next.e.OpID], next, nil) }

// applyTo is apply for the op whose state the caller already looked up: st,
// or nil for an op the index does not hold, which then gets fresh (or a new
// opState when fresh is nil). It returns the op's state.
func (x *index) applyTo(st *opState, next opState, fresh *opState) *opState {
	id := next.e.OpID
	wasLive := false
	if st == nil {
		st = fresh
		if st == nil {
			st = new(opState)
		}
		x.ops[id] = st
		// Only an op's first record can bring its key (see checkNext);
		// the caller checked that no other op holds it.
		if k := next.e.IdempKey; k != "" {
			x.keys[k] = id
		}
	} else {
		wasLive = !st.e.State.Terminal()
	}
	*st = next
	switch {
	case x.replaying:
	case next.e.State.Terminal():
		if wasLive {
			delete(x.inflight, id)
		}
	case !wasLive:
		x.inflight[id] = st
	}
	return st
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

// replay applies one stored record (its Params encoded in params), checking
// it against the history before it as Append would have. A snapshot record
// (written by compaction) is an op's merged state and must be its first
// record.
func (x *index) replay(e *Entry, params string, snapshot bool, seq uint64) error {
	_, err := x.replayAt(x.ops[e.OpID], nil, e, params, snapshot, seq)
	return err
}

// replayAt is replay for the op whose state st the caller looked up (nil:
// the index does not hold it); a new op gets fresh when it is not nil. It
// returns the op's state.
func (x *index) replayAt(st, fresh *opState, e *Entry, params string, snapshot bool, seq uint64) (*opState, error) {
	if snapshot {
		if st != nil {
			return nil, fmt.Errorf("snapshot of op %q, which already has records", e.OpID)
		}
		if err := x.checkKey(e.OpID, e.IdempKey); err != nil {
			return nil, err
		}
		first := *e
		first.Params = nil
		return x.applyTo(nil, opState{e: first, params: params, seq: seq}, fresh), nil
	}
	if st != nil && !x.replaying {
		next, err := nextState(st, e, params)
		if err != nil {
			return nil, err
		}
		return x.applyTo(st, next, fresh), nil
	}
	if st != nil {
		// Replay of an op's later record: change in place only what
		// such a record can change (see carry), rather than copying the
		// whole state.
		if err := checkNext(&st.e, e, params != "", func() bool { return params == st.params }); err != nil {
			return nil, err
		}
		st.e.State, st.e.Error, st.e.At = e.State, e.Error, e.At
		if e.UPID != "" {
			st.e.UPID = e.UPID
		}
		return st, nil
	}
	next, err := nextState(nil, e, params)
	if err != nil {
		return nil, err
	}
	if err := x.checkKey(e.OpID, e.IdempKey); err != nil {
		return nil, err
	}
	next.seq = seq
	return x.applyTo(nil, next, fresh), nil
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
	return fmt.Errorf("%w: op %q: key %q belongs to op %q", ErrKeyConflict, opID, key, owner)
}

func (x *index) latest(opID string) (Entry, bool) {
	if st := x.ops[opID]; st != nil {
		return st.entry(), true
	}
	return Entry{}, false
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
	return x.latest(owner)
}

func sortedStates(m map[string]*opState) []*opState {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b *opState) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

func entries(sts []*opState) []Entry {
	out := make([]Entry, len(sts))
	for i, st := range sts {
		out[i] = st.entry()
	}
	return out
}

func (x *index) inFlight() []Entry { return entries(sortedStates(x.inflight)) }

func (x *index) all() []Entry { return entries(sortedStates(x.ops)) }

// recentOps remembers the states of the ops started most recently, in two
// generations of a bounded size: a lookup that misses both goes to the
// index. Entries stay valid as long as the index removes nothing.
type recentOps struct {
	cur, prev map[string]*opState
	max       int
}

func newRecentOps(max int) *recentOps {
	return &recentOps{cur: make(map[string]*opState, max), prev: make(map[string]*opState, max), max: max}
}

func (r *recentOps) put(st *opState) {
	if len(r.cur) >= r.max {
		clear(r.prev)
		r.cur, r.prev = r.prev, r.cur
	}
	r.cur[st.e.OpID] = st
}

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
