package etcdjournal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
)

func openT(t testing.TB, prefix string, opts ...Option) *Journal {
	t.Helper()
	j, err := Open(context.Background(), newClient(t), prefix, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", prefix, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func started(op string, vmid int, key string) journal.Entry {
	return journal.Entry{OpID: op, VMID: vmid, Kind: "start", State: journal.Started, IdempKey: key}
}

// Two handles on two clients race to end the same operations and to claim
// the same keys: for each, exactly one wins and the other gets the
// journal's error, whatever the interleaving.
func TestRacingHandlesOnTwoClients(t *testing.T) {
	prefix := newPrefix(t)
	a, b := openT(t, prefix), openT(t, prefix)
	ctx := t.Context()
	const n = 40
	for i := range n {
		if err := a.Append(ctx, started(fmt.Sprintf("op%d", i), 100+i, "")); err != nil {
			t.Fatal(err)
		}
	}
	type res struct{ errA, errB error }
	results := make([]res, n)
	keyResults := make([]res, n)
	var wg sync.WaitGroup
	for i := range n {
		op := fmt.Sprintf("op%d", i)
		wg.Go(func() { results[i].errA = a.Append(ctx, journal.Entry{OpID: op, State: journal.Succeeded}) })
		wg.Go(func() { results[i].errB = b.Append(ctx, journal.Entry{OpID: op, State: journal.Failed, Error: "b"}) })
		key := fmt.Sprintf("key%d", i)
		wg.Go(func() { keyResults[i].errA = a.Append(ctx, started("ka"+key, 1, key)) })
		wg.Go(func() { keyResults[i].errB = b.Append(ctx, started("kb"+key, 1, key)) })
	}
	wg.Wait()
	for i, r := range results {
		op := fmt.Sprintf("op%d", i)
		got, _, err := b.Latest(ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.errA == nil && errors.Is(r.errB, journal.ErrTerminal):
			if got.State != journal.Succeeded {
				t.Errorf("%s: a won but the op is %s", op, got.State)
			}
		case r.errB == nil && errors.Is(r.errA, journal.ErrTerminal):
			if got.State != journal.Failed {
				t.Errorf("%s: b won but the op is %s", op, got.State)
			}
		default:
			t.Errorf("%s: a: %v, b: %v; want exactly one winner and ErrTerminal", op, r.errA, r.errB)
		}
	}
	for i, r := range keyResults {
		key := fmt.Sprintf("key%d", i)
		owner, ok, err := a.LatestByKey(ctx, key)
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", key, ok, err)
		}
		switch {
		case r.errA == nil && errors.Is(r.errB, journal.ErrKeyConflict):
			if owner.OpID != "ka"+key {
				t.Errorf("%s: a won but %s holds it", key, owner.OpID)
			}
			if _, ok, _ := a.Latest(ctx, "kb"+key); ok {
				t.Errorf("%s: the loser's op was recorded", key)
			}
		case r.errB == nil && errors.Is(r.errA, journal.ErrKeyConflict):
			if owner.OpID != "kb"+key {
				t.Errorf("%s: b won but %s holds it", key, owner.OpID)
			}
			if _, ok, _ := a.Latest(ctx, "ka"+key); ok {
				t.Errorf("%s: the loser's op was recorded", key)
			}
		default:
			t.Errorf("%s: a: %v, b: %v; want exactly one winner and ErrKeyConflict", key, r.errA, r.errB)
		}
	}
}

// A handle's memory of what it wrote never overrides what another handle
// wrote since: the transaction's compare catches it, and the append is
// decided on etcd's state.
func TestStaleHandleIsCorrected(t *testing.T) {
	prefix := newPrefix(t)
	a, b := openT(t, prefix), openT(t, prefix)
	ctx := t.Context()
	if err := a.Append(ctx, started("op", 100, "k")); err != nil {
		t.Fatal(err)
	}
	if err := a.Append(ctx, journal.Entry{OpID: "op", State: journal.TaskRunning, UPID: "UPID:1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, journal.Entry{OpID: "op", State: journal.Succeeded}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		e      journal.Entry
		want   error
		reason string
	}{
		{"new task", journal.Entry{OpID: "op", State: journal.TaskRunning, UPID: "UPID:2"}, journal.ErrTerminal, "a remembers the op running, b ended it"},
		{"fail", journal.Entry{OpID: "op", State: journal.Failed}, journal.ErrTerminal, "an ended op cannot fail"},
		{"restart", started("op", 100, "k"), journal.ErrTerminal, "a Started record assumes a new op; etcd knows it ended"},
		{"steal key", started("other", 100, "k"), journal.ErrKeyConflict, "the key is held"},
		{"unknown op", journal.Entry{OpID: "nobody", State: journal.Succeeded}, journal.ErrInvalidTransition, "no record of it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Append(ctx, tc.e); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v: %s", err, tc.want, tc.reason)
			}
		})
	}
	if got, _, _ := a.Latest(ctx, "op"); got.State != journal.Succeeded || got.UPID != "UPID:1" {
		t.Fatalf("op = %+v, want b's succeeded with the first task", got)
	}
	if ok, _ := a.AlreadyApplied(ctx, "k"); !ok {
		t.Fatal("key not applied")
	}
}

// Listings come in start order across pages, whatever the op IDs' order,
// and prefixes that share a beginning do not see each other.
func TestListingsArePagedInStartOrder(t *testing.T) {
	prefix := newPrefix(t)
	j := openT(t, prefix, WithPageSize(3))
	other := openT(t, prefix+"x", WithPageSize(3))
	ctx := t.Context()
	ids := []string{"m", "z", "a", "q", "b", "y", "c", "x", "d", "w"}
	for i, id := range ids {
		if err := j.Append(ctx, started(id, 100+i, "")); err != nil {
			t.Fatal(err)
		}
		if err := other.Append(ctx, started("o"+id, 100+i, "")); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"z", "b", "x"} {
		if err := j.Append(ctx, journal.Entry{OpID: id, State: journal.Succeeded}); err != nil {
			t.Fatal(err)
		}
	}
	ops, err := j.Ops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := opIDs(ops); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("Ops = %v, want start order %v", got, ids)
	}
	fl, err := j.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(opIDs(fl)), "[m a q y c d w]"; got != want {
		t.Fatalf("InFlight = %v, want %v", got, want)
	}
}

func opIDs(es []journal.Entry) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.OpID)
	}
	return ids
}

// Retention drops terminal operations, with their keys, and keeps applied
// keys for their own retention; in-flight operations are never dropped.
func TestCompactRetention(t *testing.T) {
	prefix := newPrefix(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	j := openT(t, prefix, WithClock(clock), WithRetention(time.Hour), WithKeyRetention(48*time.Hour), WithCompactInterval(0))
	ctx := t.Context()
	for _, e := range []journal.Entry{
		started("ok", 100, ""), {OpID: "ok", State: journal.Succeeded},
		started("failed-key", 100, "fk"), {OpID: "failed-key", State: journal.Failed},
		started("applied", 100, "ak"), {OpID: "applied", State: journal.Succeeded},
		started("running", 100, "rk"),
	} {
		if err := j.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	advance(30 * time.Minute)
	if n, err := j.Compact(ctx); err != nil || n != 0 {
		t.Fatalf("Compact within retention dropped %d (%v)", n, err)
	}
	advance(time.Hour)
	if n, err := j.Compact(ctx); err != nil || n != 2 {
		t.Fatalf("Compact past retention dropped %d (%v), want ok and failed-key", n, err)
	}
	if ops, _ := j.Ops(ctx); fmt.Sprint(opIDs(ops)) != "[applied running]" {
		t.Fatalf("ops left: %v", opIDs(ops))
	}
	// A failed op's key is free again once the op is dropped.
	if err := j.Append(ctx, started("again", 100, "fk")); err != nil {
		t.Fatalf("reusing a dropped failed op's key: %v", err)
	}
	advance(48 * time.Hour)
	// Open compacts too.
	j2 := openT(t, prefix, WithClock(clock), WithRetention(time.Hour), WithKeyRetention(48*time.Hour))
	if ok, _ := j2.AlreadyApplied(ctx, "ak"); ok {
		t.Fatal("applied key kept past its retention")
	}
	if ops, _ := j2.Ops(ctx); fmt.Sprint(opIDs(ops)) != "[running again]" {
		t.Fatalf("ops left: %v", opIDs(ops))
	}
}

// Damage in a stored record is reported as journal.ErrCorrupt, by Open
// and by reads, never skipped.
func TestCorruptRecords(t *testing.T) {
	for _, tc := range []struct {
		name, key, val string
	}{
		{"garbage", "/op/bad", "not an entry"},
		{"wrong op", "/op/bad", ""}, // filled below with another op's record
		{"dangling key", "/key/k", "nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := newPrefix(t)
			cli := newClient(t)
			val := tc.val
			if tc.name == "wrong op" {
				b, _ := started("good", 100, "").MarshalBinary()
				val = string(b)
			}
			if _, err := cli.Put(t.Context(), prefix+tc.key, val); err != nil {
				t.Fatal(err)
			}
			if tc.key == "/key/k" {
				j := openT(t, prefix)
				if _, _, err := j.LatestByKey(t.Context(), "k"); !errors.Is(err, journal.ErrCorrupt) {
					t.Fatalf("LatestByKey: %v, want ErrCorrupt", err)
				}
				return
			}
			if _, err := Open(t.Context(), cli, prefix); !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestOpenRejectsBadInput(t *testing.T) {
	cli := newClient(t)
	if _, err := Open(t.Context(), nil, "/p"); err == nil {
		t.Error("Open accepted a nil client")
	}
	for _, p := range []string{"", "/", "//"} {
		if _, err := Open(t.Context(), cli, p); err == nil {
			t.Errorf("Open accepted prefix %q, which would own the whole key space", p)
		}
	}
}
