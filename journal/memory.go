package journal

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryJournal is a [Journal] that keeps everything in memory, for tests
// of code that uses a journal. It applies exactly the rules of the durable
// backends, but nothing survives the process, retention never drops
// anything, and Append never waits for a disk.
//
// To simulate a restart, close the journal and continue with
// [MemoryJournal.Reopen], which sees every record acknowledged before.
//
// A MemoryJournal is safe for concurrent use.
type MemoryJournal struct {
	s      *memStore
	closed atomic.Bool
}

type memStore struct {
	mu  sync.Mutex
	idx *index
	seq uint64
}

var (
	_ Journal   = (*MemoryJournal)(nil)
	_ KeyLookup = (*MemoryJournal)(nil)
	_ OpLister  = (*MemoryJournal)(nil)
)

// NewMemory returns an empty in-memory journal.
func NewMemory() *MemoryJournal {
	return &MemoryJournal{s: &memStore{idx: newIndex()}}
}

// Reopen returns a new open handle on the same records, as a process
// restarting on the same journal would see them. The receiver may be open or
// closed; both handles share the records.
func (m *MemoryJournal) Reopen() *MemoryJournal {
	return &MemoryJournal{s: m.s}
}

func (m *MemoryJournal) check(ctx context.Context) error {
	if m.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// Append implements [Journal].
func (m *MemoryJournal) Append(ctx context.Context, e Entry) error {
	if err := m.check(ctx); err != nil {
		return fmt.Errorf("journal: append op %q: %w", e.OpID, err)
	}
	e = normalizeAt(e, time.Now)
	if err := e.Validate(); err != nil {
		return err
	}
	params := encodeParams(e.Params)
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	x := m.s.idx
	prev := x.ops[e.OpID]
	next, err := nextState(prev, &e, params)
	if err != nil {
		return err
	}
	m.s.seq++
	if prev == nil {
		if err := x.checkKey(e.OpID, e.IdempKey); err != nil {
			return err
		}
		next.seq = m.s.seq
	}
	x.applyTo(prev, next, nil)
	return nil
}

// normalizeAt sets a zero At to now and keeps every At in UTC, without a
// monotonic clock reading.
func normalizeAt(e Entry, now func() time.Time) Entry {
	if e.At.IsZero() {
		e.At = now()
	}
	e.At = e.At.UTC()
	return e
}

// Latest implements [Journal].
func (m *MemoryJournal) Latest(ctx context.Context, opID string) (Entry, bool, error) {
	if err := m.check(ctx); err != nil {
		return Entry{}, false, fmt.Errorf("journal: latest of op %q: %w", opID, err)
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	e, ok := m.s.idx.latest(opID)
	return e, ok, nil
}

// InFlight implements [Journal].
func (m *MemoryJournal) InFlight(ctx context.Context) ([]Entry, error) {
	if err := m.check(ctx); err != nil {
		return nil, fmt.Errorf("journal: in-flight ops: %w", err)
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	return m.s.idx.inFlight(), nil
}

// AlreadyApplied implements [Journal].
func (m *MemoryJournal) AlreadyApplied(ctx context.Context, idempKey string) (bool, error) {
	if err := m.check(ctx); err != nil {
		return false, fmt.Errorf("journal: key %q: %w", idempKey, err)
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	return m.s.idx.applied(idempKey), nil
}

// LatestByKey implements [KeyLookup].
func (m *MemoryJournal) LatestByKey(ctx context.Context, idempKey string) (Entry, bool, error) {
	if err := m.check(ctx); err != nil {
		return Entry{}, false, fmt.Errorf("journal: key %q: %w", idempKey, err)
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	e, ok := m.s.idx.byKey(idempKey)
	return e, ok, nil
}

// Ops returns the latest state of every operation the journal holds, in the
// order they started.
func (m *MemoryJournal) Ops(ctx context.Context) ([]Entry, error) {
	if err := m.check(ctx); err != nil {
		return nil, fmt.Errorf("journal: ops: %w", err)
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	return m.s.idx.all(), nil
}

// Close implements [Journal]. The records stay reachable through
// [MemoryJournal.Reopen].
func (m *MemoryJournal) Close() error {
	m.closed.Store(true)
	return nil
}
