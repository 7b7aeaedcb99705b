package boltjournal

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/guestward/guestward/journal"
)

// TestModelWithRetention drives a journal with random starts, task
// records, ends, clock ticks, reopens and compactions, with short retention
// windows so that op IDs and keys are pruned and used again, and checks it
// against a model after every step. Pruning happens a few ops at a time,
// on later appends, so an op past its retention may or may not still be
// there; the model accepts both and learns which from what it sees.
func TestModelWithRetention(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := &retentionModel{dir: t.TempDir(), now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), ops: map[string]*modelOp{}}
		m.open(rt)
		defer func() { m.j.Close() }()
		rt.Repeat(map[string]func(*rapid.T){
			"start":   m.start,
			"task":    m.task,
			"end":     m.end,
			"tick":    m.tick,
			"reopen":  m.reopen,
			"compact": m.compact,
			"":        m.check,
		})
	})
}

const (
	modelRetention    = 10 * time.Second
	modelKeyRetention = 30 * time.Second
)

type modelOp struct {
	state journal.State
	key   string
	end   time.Time
	order int
}

type retentionModel struct {
	dir   string
	j     *Journal
	now   time.Time
	ops   map[string]*modelOp
	order int
}

func (m *retentionModel) open(t *rapid.T) {
	j, err := Open(filepath.Join(m.dir, "j.db"), WithClock(func() time.Time { return m.now }),
		WithRetention(modelRetention), WithKeyRetention(modelKeyRetention))
	if err != nil {
		t.Fatal(err)
	}
	m.j = j
}

// expired reports whether op may have been pruned.
func (m *retentionModel) expired(o *modelOp) bool {
	if !o.state.Terminal() {
		return false
	}
	keep := modelRetention
	if o.state == journal.Succeeded && o.key != "" {
		keep = modelKeyRetention
	}
	return o.end.Before(m.now.Add(-keep))
}

// forgetExpired drops every expired op: Open and Compact prune them all.
func (m *retentionModel) forgetExpired() {
	for id, o := range m.ops {
		if m.expired(o) {
			delete(m.ops, id)
		}
	}
}

var (
	modelIDs  = []string{"a", "b", "c", "d", "e"}
	modelKeys = []string{"", "", "k1", "k2", "k3"}
)

func (m *retentionModel) start(t *rapid.T) {
	id := rapid.SampledFrom(modelIDs).Draw(t, "id")
	key := rapid.SampledFrom(modelKeys).Draw(t, "key")
	err := m.j.Append(context.Background(), journal.Entry{OpID: id, VMID: 100, Kind: "start", State: journal.Started, IdempKey: key})

	// What may stand in the way: the op itself, and the key's holder.
	var blockers []string
	certain := false
	if o, ok := m.ops[id]; ok {
		blockers = append(blockers, id)
		certain = certain || !m.expired(o)
	}
	if key != "" {
		for hid, o := range m.ops {
			if o.key == key && hid != id {
				blockers = append(blockers, hid)
				certain = certain || !m.expired(o)
			}
		}
	}
	switch {
	case err == nil:
		if certain {
			t.Fatalf("start %s with key %q succeeded past %v", id, key, blockers)
		}
		for _, b := range blockers {
			delete(m.ops, b) // they must have been pruned
		}
		m.order++
		m.ops[id] = &modelOp{state: journal.Started, key: key, order: m.order}
	case errors.Is(err, journal.ErrKeyConflict), errors.Is(err, journal.ErrInvalidTransition), errors.Is(err, journal.ErrTerminal):
		if len(blockers) == 0 {
			t.Fatalf("start %s with key %q: %v, with nothing in the way", id, key, err)
		}
	default:
		t.Fatalf("start %s: %v", id, err)
	}
}

func (m *retentionModel) record(t *rapid.T, e journal.Entry) {
	err := m.j.Append(context.Background(), e)
	o, ok := m.ops[e.OpID]
	switch {
	case err == nil:
		if !ok || o.state.Terminal() {
			t.Fatalf("%s for op %s (%v) succeeded", e.State, e.OpID, o)
		}
		o.state = e.State
		if e.State.Terminal() {
			o.end = m.now
		}
	case !ok && errors.Is(err, journal.ErrInvalidTransition):
	case ok && o.state.Terminal() && errors.Is(err, journal.ErrTerminal):
	case ok && m.expired(o) && errors.Is(err, journal.ErrInvalidTransition):
		delete(m.ops, e.OpID) // pruned
	default:
		t.Fatalf("%s for op %s (%v): %v", e.State, e.OpID, o, err)
	}
}

func (m *retentionModel) task(t *rapid.T) {
	id := rapid.SampledFrom(modelIDs).Draw(t, "id")
	m.record(t, journal.Entry{OpID: id, State: journal.TaskRunning, UPID: "UPID:pve1:00000001:00000002:65A1B2C3:qmstart:100:root@pam:"})
}

func (m *retentionModel) end(t *rapid.T) {
	id := rapid.SampledFrom(modelIDs).Draw(t, "id")
	state := rapid.SampledFrom([]journal.State{journal.Succeeded, journal.Failed}).Draw(t, "state")
	m.record(t, journal.Entry{OpID: id, State: state})
}

func (m *retentionModel) tick(t *rapid.T) {
	m.now = m.now.Add(rapid.SampledFrom([]time.Duration{time.Second, 6 * time.Second, 25 * time.Second}).Draw(t, "d"))
}

func (m *retentionModel) reopen(t *rapid.T) {
	if err := m.j.Close(); err != nil {
		t.Fatal(err)
	}
	m.open(t)
	m.forgetExpired()
}

func (m *retentionModel) compact(t *rapid.T) {
	if err := m.j.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.forgetExpired()
}

func (m *retentionModel) check(t *rapid.T) {
	ctx := context.Background()
	var inFlight []string
	for id, o := range m.ops {
		e, ok, err := m.j.Latest(ctx, id)
		switch {
		case err != nil:
			t.Fatal(err)
		case !ok && m.expired(o):
			delete(m.ops, id) // pruned
			continue
		case !ok:
			t.Fatalf("op %s (%v) missing", id, o)
		case e.State != o.state || e.IdempKey != o.key:
			t.Fatalf("op %s is %s with key %q, want %s with key %q", id, e.State, e.IdempKey, o.state, o.key)
		}
		if !o.state.Terminal() {
			inFlight = append(inFlight, id)
		}
	}
	slices.SortFunc(inFlight, func(a, b string) int { return m.ops[a].order - m.ops[b].order })
	got, err := m.j.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, e := range got {
		gotIDs = append(gotIDs, e.OpID)
	}
	if !slices.Equal(gotIDs, inFlight) {
		t.Fatalf("InFlight = %v, want %v", gotIDs, inFlight)
	}
	keys := 0
	for _, key := range modelKeys[2:] {
		var holder string
		for id, o := range m.ops {
			if o.key == key {
				holder = id
				keys++
			}
		}
		e, ok, err := m.j.LatestByKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if gotHolder := map[bool]string{true: e.OpID}[ok]; gotHolder != holder {
			t.Fatalf("LatestByKey(%s) = %q, want %q", key, gotHolder, holder)
		}
	}
	st, err := m.j.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops != len(m.ops) || st.InFlight != len(inFlight) || st.Keys != keys {
		t.Fatalf("Verify = %+v; want %d ops, %d in flight, %d keys", st, len(m.ops), len(inFlight), keys)
	}
	if st2, err := m.j.Stats(ctx); err != nil || st2.InFlight != st.InFlight || st2.Keys != st.Keys || st2.Ops != st.Ops {
		t.Fatalf("Stats = %+v, %v; Verify said %+v", st2, err, st)
	}
}
