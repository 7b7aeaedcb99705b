package journaltest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/guestward/guestward/journal"
)

// Run runs the conformance suite as subtests of t against the journals that
// open returns. See the package documentation for what open must do.
func Run(t *testing.T, open func(t *testing.T, dir string) journal.Journal) {
	t.Helper()
	s := suite{open: open}
	t.Run("Lifecycle", s.lifecycle)
	t.Run("DirectTerminal", s.directTerminal)
	t.Run("NewTask", s.newTask)
	t.Run("LatestUnknown", s.latestUnknown)
	t.Run("MergedView", s.mergedView)
	t.Run("InFlight", s.inFlight)
	t.Run("Ops", s.ops)
	t.Run("AlreadyApplied", s.alreadyApplied)
	t.Run("KeyConflict", s.keyConflict)
	t.Run("RejectsBadInput", s.rejects)
	t.Run("At", s.at)
	t.Run("Isolation", s.isolation)
	t.Run("Reopen", s.reopen)
	t.Run("Closed", s.closed)
	t.Run("Context", s.context)
	t.Run("ConcurrentAppenders", s.concurrent)
	t.Run("RacingTerminalAppends", s.racingTerminal)
	t.Run("RacingKeyClaims", s.racingKey)
	t.Run("Model", s.model)
}

type suite struct {
	open func(t *testing.T, dir string) journal.Journal
}

// fresh opens a journal in a new directory.
func (s suite) fresh(t *testing.T) (journal.Journal, string) {
	t.Helper()
	dir := t.TempDir()
	return s.reopen1(t, dir), dir
}

// reopen1 opens the journal in dir and closes it when the test ends.
func (s suite) reopen1(t *testing.T, dir string) journal.Journal {
	t.Helper()
	j := s.open(t, dir)
	if j == nil {
		t.Fatal("open returned a nil journal")
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return j
}

// checkTwice runs check on j, then on the journal reopened from dir.
func (s suite) checkTwice(t *testing.T, j journal.Journal, dir string, check func(journal.Journal)) {
	t.Helper()
	check(j)
	check(s.cycle(t, j, dir))
}

// cycle closes j and opens the journal in dir again.
func (s suite) cycle(t *testing.T, j journal.Journal, dir string) journal.Journal {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatalf("Close before reopening: %v", err)
	}
	return s.reopen1(t, dir)
}

func appendOK(t *testing.T, j journal.Journal, e journal.Entry) {
	t.Helper()
	if err := j.Append(t.Context(), e); err != nil {
		t.Fatalf("Append(%s %s): %v", e.OpID, e.State, err)
	}
}

func latest(t *testing.T, j journal.Journal, opID string) (journal.Entry, bool) {
	t.Helper()
	e, ok, err := j.Latest(t.Context(), opID)
	if err != nil {
		t.Fatalf("Latest(%q): %v", opID, err)
	}
	return e, ok
}

func mustLatest(t *testing.T, j journal.Journal, opID string) journal.Entry {
	t.Helper()
	e, ok := latest(t, j, opID)
	if !ok {
		t.Fatalf("Latest(%q): not found", opID)
	}
	return e
}

func inFlight(t *testing.T, j journal.Journal) []journal.Entry {
	t.Helper()
	es, err := j.InFlight(t.Context())
	if err != nil {
		t.Fatalf("InFlight: %v", err)
	}
	return es
}

func applied(t *testing.T, j journal.Journal, key string) bool {
	t.Helper()
	ok, err := j.AlreadyApplied(t.Context(), key)
	if err != nil {
		t.Fatalf("AlreadyApplied(%q): %v", key, err)
	}
	return ok
}

// entryOpts compares entries ignoring At, which backends set; nil and empty
// Params are the same.
var entryOpts = cmp.Options{
	cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".At" }, cmp.Ignore()),
	cmp.Transformer("params", func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		return m
	}),
}

func diffEntry(t *testing.T, what string, want, got journal.Entry) {
	t.Helper()
	if d := cmp.Diff(want, got, entryOpts); d != "" {
		t.Errorf("%s: entry mismatch (-want +got):\n%s", what, d)
	}
}

func started(op string, vmid int, kind string) journal.Entry {
	return journal.Entry{OpID: op, VMID: vmid, Kind: kind, State: journal.Started}
}

func (s suite) lifecycle(t *testing.T) {
	j, _ := s.fresh(t)
	st := journal.Entry{OpID: "op-1", VMID: 101, Kind: "set_config", State: journal.Started,
		Params: map[string]string{"memory": "2048", "cores": "2"}, IdempKey: "req-1"}
	appendOK(t, j, st)
	diffEntry(t, "after started", st, mustLatest(t, j, "op-1"))

	appendOK(t, j, journal.Entry{OpID: "op-1", State: journal.TaskRunning, UPID: "UPID:pve1:0001:0002:0003:qmconfig:101:root@pam:"})
	want := st
	want.State, want.UPID = journal.TaskRunning, "UPID:pve1:0001:0002:0003:qmconfig:101:root@pam:"
	diffEntry(t, "after task_running", want, mustLatest(t, j, "op-1"))

	appendOK(t, j, journal.Entry{OpID: "op-1", State: journal.Succeeded})
	want.State = journal.Succeeded
	diffEntry(t, "after succeeded", want, mustLatest(t, j, "op-1"))
	if got := inFlight(t, j); len(got) != 0 {
		t.Errorf("InFlight after success = %v, want none", got)
	}
	if !applied(t, j, "req-1") {
		t.Error("AlreadyApplied(req-1) = false after the op succeeded")
	}
}

func (s suite) directTerminal(t *testing.T) {
	// Synchronous operations (an LXC config change) have no task.
	j, _ := s.fresh(t)
	appendOK(t, j, started("sync-ok", 200, "set_config"))
	appendOK(t, j, journal.Entry{OpID: "sync-ok", State: journal.Succeeded})
	appendOK(t, j, started("sync-bad", 200, "set_config"))
	appendOK(t, j, journal.Entry{OpID: "sync-bad", State: journal.Failed, Error: "403 permission denied"})
	if e := mustLatest(t, j, "sync-ok"); e.State != journal.Succeeded || e.UPID != "" {
		t.Errorf("sync-ok = %+v, want succeeded without UPID", e)
	}
	if e := mustLatest(t, j, "sync-bad"); e.State != journal.Failed || e.Error != "403 permission denied" {
		t.Errorf("sync-bad = %+v, want failed with its error", e)
	}
}

func (s suite) newTask(t *testing.T) {
	j, _ := s.fresh(t)
	appendOK(t, j, started("op", 100, "start"))
	appendOK(t, j, journal.Entry{OpID: "op", State: journal.TaskRunning, UPID: "UPID:a"})
	appendOK(t, j, journal.Entry{OpID: "op", State: journal.TaskRunning, UPID: "UPID:b"})
	if e := mustLatest(t, j, "op"); e.UPID != "UPID:b" || e.State != journal.TaskRunning {
		t.Errorf("after a second task_running, Latest = %+v, want UPID:b", e)
	}
	appendOK(t, j, journal.Entry{OpID: "op", State: journal.Failed, Error: "task failed"})
	if e := mustLatest(t, j, "op"); e.UPID != "UPID:b" {
		t.Errorf("the terminal record must keep the last UPID; Latest = %+v", e)
	}
}

func (s suite) latestUnknown(t *testing.T) {
	j, _ := s.fresh(t)
	if e, ok := latest(t, j, "nope"); ok {
		t.Errorf("Latest of an unknown op = %+v, true; want not found", e)
	}
	appendOK(t, j, started("known", 100, "start"))
	if _, ok := latest(t, j, "nope"); ok {
		t.Error("Latest of an unknown op found after another op was appended")
	}
	if _, ok := latest(t, j, ""); ok {
		t.Error(`Latest("") found an op`)
	}
}

func (s suite) mergedView(t *testing.T) {
	j, _ := s.fresh(t)
	st := journal.Entry{OpID: "m", VMID: 300, Kind: "stop", State: journal.Started,
		Params: map[string]string{"timeout": "60"}, IdempKey: "k-m"}
	appendOK(t, j, st)
	// A later record may repeat the identity exactly.
	appendOK(t, j, journal.Entry{OpID: "m", VMID: 300, Kind: "stop", IdempKey: "k-m",
		Params: map[string]string{"timeout": "60"}, State: journal.TaskRunning, UPID: "UPID:m", Error: "slow"})
	appendOK(t, j, journal.Entry{OpID: "m", State: journal.Succeeded})
	want := st
	want.State, want.UPID = journal.Succeeded, "UPID:m"
	// Error belongs to its record: the "slow" of task_running is gone.
	diffEntry(t, "merged", want, mustLatest(t, j, "m"))
}

func (s suite) inFlight(t *testing.T) {
	j, _ := s.fresh(t)
	appendOK(t, j, started("c", 3, "start"))
	appendOK(t, j, started("a", 1, "start"))
	appendOK(t, j, started("b", 2, "stop"))
	appendOK(t, j, started("d", 4, "stop"))
	appendOK(t, j, journal.Entry{OpID: "a", State: journal.TaskRunning, UPID: "UPID:a"})
	appendOK(t, j, journal.Entry{OpID: "b", State: journal.Succeeded})
	appendOK(t, j, journal.Entry{OpID: "d", State: journal.Failed, Error: "x"})
	got := inFlight(t, j)
	want := []journal.Entry{
		started("c", 3, "start"),
		{OpID: "a", VMID: 1, Kind: "start", State: journal.TaskRunning, UPID: "UPID:a"},
	}
	if d := cmp.Diff(want, got, entryOpts); d != "" {
		t.Errorf("InFlight: want the ops not terminal, in start order (-want +got):\n%s", d)
	}
}

// ops checks journal.OpLister, which the reconcile engine requires: every
// operation, terminal or not, in start order, as Latest shows it, also after
// reopening and never after Close.
func (s suite) ops(t *testing.T) {
	j, dir := s.fresh(t)
	if _, ok := j.(journal.OpLister); !ok {
		t.Fatalf("%T does not implement journal.OpLister; the reconcile engine refuses such a journal", j)
	}
	list := func(j journal.Journal) []journal.Entry {
		t.Helper()
		got, err := j.(journal.OpLister).Ops(t.Context())
		if err != nil {
			t.Fatalf("Ops: %v", err)
		}
		return got
	}
	if got := list(j); len(got) != 0 {
		t.Fatalf("Ops on an empty journal = %+v, want none", got)
	}
	appendOK(t, j, started("c", 3, "start"))
	appendOK(t, j, started("a", 1, "start"))
	appendOK(t, j, started("b", 2, "stop"))
	appendOK(t, j, journal.Entry{OpID: "a", State: journal.TaskRunning, UPID: "UPID:a"})
	appendOK(t, j, journal.Entry{OpID: "c", State: journal.Succeeded})
	appendOK(t, j, journal.Entry{OpID: "b", State: journal.Failed, Error: "x"})
	want := []journal.Entry{
		{OpID: "c", VMID: 3, Kind: "start", State: journal.Succeeded},
		{OpID: "a", VMID: 1, Kind: "start", State: journal.TaskRunning, UPID: "UPID:a"},
		{OpID: "b", VMID: 2, Kind: "stop", State: journal.Failed, Error: "x"},
	}
	if d := cmp.Diff(want, list(j), entryOpts); d != "" {
		t.Errorf("Ops: want every op's latest state, in start order (-want +got):\n%s", d)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := j.(journal.OpLister).Ops(t.Context())
	wantErr(t, "Ops after Close", err, journal.ErrClosed)
	if d := cmp.Diff(want, list(s.reopen1(t, dir)), entryOpts); d != "" {
		t.Errorf("Ops after reopening (-want +got):\n%s", d)
	}
}

func (s suite) alreadyApplied(t *testing.T) {
	j, _ := s.fresh(t)
	lk, _ := j.(journal.KeyLookup)
	byKey := func(key string) (journal.Entry, bool) {
		t.Helper()
		e, ok, err := lk.LatestByKey(t.Context(), key)
		if err != nil {
			t.Fatalf("LatestByKey(%q): %v", key, err)
		}
		return e, ok
	}
	if applied(t, j, "k1") || applied(t, j, "") {
		t.Fatal("AlreadyApplied true on an empty journal")
	}
	e := started("one", 100, "start")
	e.IdempKey = "k1"
	appendOK(t, j, e)
	if applied(t, j, "k1") {
		t.Error("key applied while its op is only started")
	}
	if lk != nil {
		if got, ok := byKey("k1"); !ok || got.OpID != "one" || got.State != journal.Started {
			t.Errorf("LatestByKey(k1) = %+v, %v; want op one, started", got, ok)
		}
		if _, ok := byKey("missing"); ok {
			t.Error("LatestByKey found a key nobody holds")
		}
	}
	appendOK(t, j, journal.Entry{OpID: "one", State: journal.TaskRunning, UPID: "UPID:1"})
	if applied(t, j, "k1") {
		t.Error("key applied while its task is running")
	}
	appendOK(t, j, journal.Entry{OpID: "one", State: journal.Succeeded})
	if !applied(t, j, "k1") {
		t.Error("key not applied after its op succeeded")
	}

	f := started("two", 100, "stop")
	f.IdempKey = "k2"
	appendOK(t, j, f)
	appendOK(t, j, journal.Entry{OpID: "two", State: journal.Failed, Error: "boom"})
	if applied(t, j, "k2") {
		t.Error("key applied although its op failed")
	}
	if lk != nil {
		if got, ok := byKey("k2"); !ok || got.State != journal.Failed || got.Error != "boom" {
			t.Errorf("LatestByKey(k2) = %+v, %v; want the failed op with its error", got, ok)
		}
	}
	if applied(t, j, "") {
		t.Error(`AlreadyApplied("") = true`)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error = %v, want one wrapping %v", what, err, target)
	}
}

func (s suite) keyConflict(t *testing.T) {
	j, dir := s.fresh(t)
	a := started("a", 100, "start")
	a.IdempKey = "shared"
	appendOK(t, j, a)
	b := started("b", 100, "start")
	b.IdempKey = "shared"
	wantErr(t, "second op claiming a key held by an op in flight", j.Append(t.Context(), b), journal.ErrKeyConflict)
	appendOK(t, j, journal.Entry{OpID: "a", State: journal.Failed, Error: "x"})
	wantErr(t, "claiming the key of a failed op", j.Append(t.Context(), b), journal.ErrKeyConflict)
	c := started("c", 100, "start")
	c.IdempKey = "applied"
	appendOK(t, j, c)
	appendOK(t, j, journal.Entry{OpID: "c", State: journal.Succeeded})
	d := started("d", 100, "start")
	d.IdempKey = "applied"
	wantErr(t, "claiming an applied key", j.Append(t.Context(), d), journal.ErrKeyConflict)
	s.checkTwice(t, j, dir, func(j journal.Journal) {
		for _, id := range []string{"b", "d"} {
			if e, ok := latest(t, j, id); ok {
				t.Errorf("rejected op %s was recorded: %+v", id, e)
			}
		}
		wantErr(t, "claiming an applied key", j.Append(t.Context(), d), journal.ErrKeyConflict)
	})
}

// state captures everything observable about a set of ops and keys.
type state struct {
	Latest   map[string]journal.Entry
	InFlight []journal.Entry
	Applied  map[string]bool
}

func capture(t *testing.T, j journal.Journal, ops, keys []string) state {
	t.Helper()
	st := state{Latest: map[string]journal.Entry{}, Applied: map[string]bool{}}
	for _, id := range ops {
		if e, ok := latest(t, j, id); ok {
			st.Latest[id] = e
		}
	}
	st.InFlight = inFlight(t, j)
	for _, k := range keys {
		st.Applied[k] = applied(t, j, k)
	}
	return st
}

var stateOpts = cmp.Options{
	cmp.Transformer("params", func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		return m
	}),
}

func (s suite) rejects(t *testing.T) {
	j, dir := s.fresh(t)
	run := started("run", 100, "start")
	run.IdempKey = "k-run"
	appendOK(t, j, run)
	appendOK(t, j, journal.Entry{OpID: "run", State: journal.TaskRunning, UPID: "UPID:r"})
	appendOK(t, j, started("done", 101, "stop"))
	appendOK(t, j, journal.Entry{OpID: "done", State: journal.Succeeded})
	appendOK(t, j, started("failed", 101, "stop"))
	appendOK(t, j, journal.Entry{OpID: "failed", State: journal.Failed, Error: "x"})
	ops := []string{"run", "done", "failed", "new", ""}
	keys := []string{"k-run", "k-new"}
	before := capture(t, j, ops, keys)

	long := make([]byte, journal.MaxIDLen+1)
	for i := range long {
		long[i] = 'x'
	}
	cases := []struct {
		name   string
		e      journal.Entry
		target error
	}{
		{"empty op ID", journal.Entry{VMID: 1, Kind: "start", State: journal.Started}, journal.ErrInvalidEntry},
		{"op ID too long", journal.Entry{OpID: string(long), VMID: 1, Kind: "start", State: journal.Started}, journal.ErrInvalidEntry},
		{"op ID not UTF-8", journal.Entry{OpID: "bad\xff", VMID: 1, Kind: "start", State: journal.Started}, journal.ErrInvalidEntry},
		{"empty state", journal.Entry{OpID: "new", VMID: 1, Kind: "start"}, journal.ErrInvalidEntry},
		{"unknown state", journal.Entry{OpID: "new", VMID: 1, Kind: "start", State: "paused"}, journal.ErrInvalidEntry},
		{"zero VMID on start", journal.Entry{OpID: "new", Kind: "start", State: journal.Started}, journal.ErrInvalidEntry},
		{"negative VMID", journal.Entry{OpID: "new", VMID: -5, Kind: "start", State: journal.Started}, journal.ErrInvalidEntry},
		{"no kind on start", journal.Entry{OpID: "new", VMID: 1, State: journal.Started}, journal.ErrInvalidEntry},
		{"task_running without UPID", journal.Entry{OpID: "run", State: journal.TaskRunning}, journal.ErrInvalidEntry},
		{"empty param name", journal.Entry{OpID: "new", VMID: 1, Kind: "start", State: journal.Started, Params: map[string]string{"": "x"}}, journal.ErrInvalidEntry},
		{"param value not UTF-8", journal.Entry{OpID: "new", VMID: 1, Kind: "start", State: journal.Started, Params: map[string]string{"a": "\xc3"}}, journal.ErrInvalidEntry},
		{"key not UTF-8", journal.Entry{OpID: "new", VMID: 1, Kind: "start", State: journal.Started, IdempKey: "\xff"}, journal.ErrInvalidEntry},
		{"time out of range", journal.Entry{OpID: "new", VMID: 1, Kind: "start", State: journal.Started, At: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}, journal.ErrInvalidEntry},
		{"first record not started", journal.Entry{OpID: "new", State: journal.Succeeded}, journal.ErrInvalidTransition},
		{"first record task_running", journal.Entry{OpID: "new", State: journal.TaskRunning, UPID: "UPID:x"}, journal.ErrInvalidTransition},
		{"started twice", started("run", 100, "start"), journal.ErrInvalidTransition},
		{"after succeeded", journal.Entry{OpID: "done", State: journal.Failed}, journal.ErrTerminal},
		{"succeeded twice", journal.Entry{OpID: "done", State: journal.Succeeded}, journal.ErrTerminal},
		{"after failed", journal.Entry{OpID: "failed", State: journal.TaskRunning, UPID: "UPID:z"}, journal.ErrTerminal},
		{"restart a failed op", started("failed", 101, "stop"), journal.ErrTerminal},
		{"VMID changed", journal.Entry{OpID: "run", VMID: 999, State: journal.Succeeded}, journal.ErrInvalidTransition},
		{"kind changed", journal.Entry{OpID: "run", Kind: "stop", State: journal.Succeeded}, journal.ErrInvalidTransition},
		{"key changed", journal.Entry{OpID: "run", IdempKey: "other", State: journal.Succeeded}, journal.ErrInvalidTransition},
		{"params changed", journal.Entry{OpID: "run", Params: map[string]string{"a": "b"}, State: journal.Succeeded}, journal.ErrInvalidTransition},
		{"key of another op", journal.Entry{OpID: "new", VMID: 1, Kind: "start", State: journal.Started, IdempKey: "k-run"}, journal.ErrKeyConflict},
	}
	for _, tc := range cases {
		err := j.Append(t.Context(), tc.e)
		wantErr(t, tc.name, err, tc.target)
	}
	if d := cmp.Diff(before, capture(t, j, ops, keys), stateOpts); d != "" {
		t.Errorf("rejected appends changed the journal (-before +after):\n%s", d)
	}
	j = s.cycle(t, j, dir)
	if d := cmp.Diff(before, capture(t, j, ops, keys), stateOpts); d != "" {
		t.Errorf("after reopening, rejected appends show (-before +after):\n%s", d)
	}
	// The journal still accepts good records.
	appendOK(t, j, journal.Entry{OpID: "run", State: journal.Succeeded})
}

func (s suite) at(t *testing.T) {
	j, dir := s.fresh(t)
	before := time.Now()
	appendOK(t, j, started("auto", 100, "start"))
	after := time.Now()
	given := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600))
	e := started("given", 100, "start")
	e.At = given
	appendOK(t, j, e)
	check := func(j journal.Journal) {
		t.Helper()
		got := mustLatest(t, j, "auto").At
		if got.Before(before.Truncate(time.Microsecond)) || got.After(after.Add(time.Microsecond)) {
			t.Errorf("a zero At became %v, want the time of Append (between %v and %v)", got, before, after)
		}
		if got.Location() != time.UTC {
			t.Errorf("At location = %v, want UTC", got.Location())
		}
		g := mustLatest(t, j, "given").At
		if !g.Equal(given) || g.Location() != time.UTC {
			t.Errorf("given At came back as %v, want %v in UTC", g, given)
		}
	}
	check(j)
	check(s.cycle(t, j, dir))
}

func (s suite) isolation(t *testing.T) {
	j, _ := s.fresh(t)
	p := map[string]string{"cores": "2"}
	e := started("iso", 100, "set_config")
	e.Params = p
	appendOK(t, j, e)
	p["cores"] = "64"
	p["extra"] = "x"
	got := mustLatest(t, j, "iso")
	if len(got.Params) != 1 || got.Params["cores"] != "2" {
		t.Fatalf("changing the caller's map changed the journal: %v", got.Params)
	}
	got.Params["cores"] = "99"
	if again := mustLatest(t, j, "iso"); again.Params["cores"] != "2" {
		t.Fatalf("changing a returned entry changed the journal: %v", again.Params)
	}
	fl := inFlight(t, j)
	fl[0].Params["cores"] = "77"
	if again := mustLatest(t, j, "iso"); again.Params["cores"] != "2" {
		t.Fatalf("changing an InFlight entry changed the journal: %v", again.Params)
	}
}

func (s suite) reopen(t *testing.T) {
	j, dir := s.fresh(t)
	ops := []string{"p1", "p2", "p3", "p4", "p5"}
	keys := []string{"key-1", "key-2", "key-3"}
	e := started("p1", 100, "set_config")
	e.Params = map[string]string{"memory": "1024", "net0": "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0"}
	e.IdempKey = "key-1"
	appendOK(t, j, e)
	appendOK(t, j, journal.Entry{OpID: "p1", State: journal.TaskRunning, UPID: "UPID:p1"})
	appendOK(t, j, journal.Entry{OpID: "p1", State: journal.Succeeded})
	e2 := started("p2", 101, "start")
	e2.IdempKey = "key-2"
	appendOK(t, j, e2)
	appendOK(t, j, journal.Entry{OpID: "p2", State: journal.TaskRunning, UPID: "UPID:p2"})
	appendOK(t, j, started("p3", 102, "stop"))
	appendOK(t, j, started("p4", 103, "stop"))
	appendOK(t, j, journal.Entry{OpID: "p4", State: journal.Failed, Error: "timeout"})
	want := capture(t, j, ops, keys)

	j = s.cycle(t, j, dir)
	if d := cmp.Diff(want, capture(t, j, ops, keys), stateOpts); d != "" {
		t.Fatalf("state after reopening differs (-before +after):\n%s", d)
	}
	// Appending continues where it left off, and survives another reopen.
	appendOK(t, j, journal.Entry{OpID: "p2", State: journal.Succeeded})
	appendOK(t, j, started("p5", 104, "start"))
	want = capture(t, j, ops, keys)
	j = s.cycle(t, j, dir)
	if d := cmp.Diff(want, capture(t, j, ops, keys), stateOpts); d != "" {
		t.Fatalf("state after the second reopening differs (-before +after):\n%s", d)
	}
	if !want.Applied["key-2"] {
		t.Error("key-2 should be applied")
	}
}

func (s suite) closed(t *testing.T) {
	dir := t.TempDir()
	j := s.open(t, dir)
	appendOK(t, j, started("c", 100, "start"))
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	wantErr(t, "Append after Close", j.Append(ctx, journal.Entry{OpID: "c", State: journal.Succeeded}), journal.ErrClosed)
	_, _, err := j.Latest(ctx, "c")
	wantErr(t, "Latest after Close", err, journal.ErrClosed)
	_, err = j.InFlight(ctx)
	wantErr(t, "InFlight after Close", err, journal.ErrClosed)
	_, err = j.AlreadyApplied(ctx, "k")
	wantErr(t, "AlreadyApplied after Close", err, journal.ErrClosed)
	if lk, ok := j.(journal.KeyLookup); ok {
		_, _, err = lk.LatestByKey(ctx, "k")
		wantErr(t, "LatestByKey after Close", err, journal.ErrClosed)
	}
	if err := j.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	j2 := s.reopen1(t, dir)
	if e := mustLatest(t, j2, "c"); e.State != journal.Started {
		t.Errorf("after reopening, op c = %+v; the append after Close must not count", e)
	}
}

func (s suite) context(t *testing.T) {
	j, dir := s.fresh(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	wantErr(t, "Append with a cancelled context", j.Append(ctx, started("x", 100, "start")), context.Canceled)
	_, _, err := j.Latest(ctx, "x")
	wantErr(t, "Latest with a cancelled context", err, context.Canceled)
	_, err = j.InFlight(ctx)
	wantErr(t, "InFlight with a cancelled context", err, context.Canceled)
	_, err = j.AlreadyApplied(ctx, "k")
	wantErr(t, "AlreadyApplied with a cancelled context", err, context.Canceled)
	s.checkTwice(t, j, dir, func(j journal.Journal) {
		if _, ok := latest(t, j, "x"); ok {
			t.Error("an Append with a cancelled context wrote its record")
		}
	})
}

func (s suite) concurrent(t *testing.T) {
	const writers, opsPerWriter = 16, 12
	j, dir := s.fresh(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, writers*opsPerWriter*3+64)
	// Readers run alongside the writers; under -race they check the
	// locking. Their work is bounded so they cannot starve the writers of
	// CPU on a small machine.
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, err := j.InFlight(ctx); err != nil {
					errs <- err
					return
				}
				if _, _, err := j.Latest(ctx, fmt.Sprintf("w%d-op%d", r, 1)); err != nil {
					errs <- err
					return
				}
				if _, err := j.AlreadyApplied(ctx, "w0-key0"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var ww sync.WaitGroup
	for w := 0; w < writers; w++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for i := 0; i < opsPerWriter; i++ {
				id := fmt.Sprintf("w%d-op%d", w, i)
				e := started(id, 100+w, "set_config")
				e.Params = map[string]string{"i": fmt.Sprint(i)}
				e.IdempKey = fmt.Sprintf("w%d-key%d", w, i)
				steps := []journal.Entry{e,
					{OpID: id, State: journal.TaskRunning, UPID: "UPID:" + id},
					{OpID: id, State: journal.Succeeded}}
				if i%3 == 2 {
					steps = steps[:2] // left in flight
				}
				for _, st := range steps {
					if err := j.Append(ctx, st); err != nil {
						errs <- fmt.Errorf("append %s %s: %w", id, st.State, err)
						return
					}
					// What this goroutine wrote, it reads back.
					got, ok, err := j.Latest(ctx, id)
					if err != nil || !ok || got.State != st.State {
						errs <- fmt.Errorf("read back %s: got %+v, %v, %v; want state %s", id, got, ok, err, st.State)
						return
					}
				}
			}
		}()
	}
	ww.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	check := func(j journal.Journal) {
		t.Helper()
		var wantInFlight []string
		for w := 0; w < writers; w++ {
			for i := 0; i < opsPerWriter; i++ {
				id := fmt.Sprintf("w%d-op%d", w, i)
				e := mustLatest(t, j, id)
				want := journal.Succeeded
				if i%3 == 2 {
					want = journal.TaskRunning
					wantInFlight = append(wantInFlight, id)
				}
				if e.State != want || e.VMID != 100+w || e.Params["i"] != fmt.Sprint(i) || e.UPID != "UPID:"+id {
					t.Errorf("op %s = %+v, want state %s with its identity", id, e, want)
				}
				if got := applied(t, j, fmt.Sprintf("w%d-key%d", w, i)); got != (want == journal.Succeeded) {
					t.Errorf("AlreadyApplied(key of %s) = %v", id, got)
				}
			}
		}
		var got []string
		for _, e := range inFlight(t, j) {
			got = append(got, e.OpID)
		}
		slices.Sort(got)
		slices.Sort(wantInFlight)
		if !slices.Equal(got, wantInFlight) {
			t.Errorf("InFlight = %v, want %v", got, wantInFlight)
		}
	}
	check(j)
	check(s.cycle(t, j, dir))
}

func (s suite) racingTerminal(t *testing.T) {
	j, dir := s.fresh(t)
	appendOK(t, j, started("race", 100, "start"))
	const n = 8
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := journal.Succeeded
			if i%2 == 1 {
				st = journal.Failed
			}
			results[i] = j.Append(t.Context(), journal.Entry{OpID: "race", State: st, Error: fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("appends %d and %d both ended the op", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, journal.ErrTerminal):
			t.Errorf("losing append %d: %v, want ErrTerminal", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no terminal append succeeded")
	}
	s.checkTwice(t, j, dir, func(j journal.Journal) {
		if e := mustLatest(t, j, "race"); e.Error != fmt.Sprint(winner) {
			t.Errorf("Latest = %+v, want the winning record (Error %d)", e, winner)
		}
	})
}

func (s suite) racingKey(t *testing.T) {
	j, dir := s.fresh(t)
	const n = 8
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := started(fmt.Sprintf("claim-%d", i), 100, "start")
			e.IdempKey = "contested"
			results[i] = j.Append(t.Context(), e)
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("ops %d and %d both claimed the key", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, journal.ErrKeyConflict):
			t.Errorf("losing claim %d: %v, want ErrKeyConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no claim succeeded")
	}
	s.checkTwice(t, j, dir, func(j journal.Journal) {
		for i := range n {
			_, ok := latest(t, j, fmt.Sprintf("claim-%d", i))
			if ok != (i == winner) {
				t.Errorf("op claim-%d recorded = %v, want %v", i, ok, i == winner)
			}
		}
	})
}

// model is an independent statement of the rules: the latest state of each
// op, with its identity, and who holds which key.
type model struct {
	ops   map[string]journal.Entry
	order []string
	keys  map[string]string
}

// apply returns the error class Append must return for e, and applies e
// when there is none.
func (m *model) apply(e journal.Entry) error {
	switch {
	case e.OpID == "" || !e.State.Valid() || e.VMID < 0,
		e.State == journal.Started && (e.VMID == 0 || e.Kind == ""),
		e.State == journal.TaskRunning && e.UPID == "":
		return journal.ErrInvalidEntry
	}
	prev, known := m.ops[e.OpID]
	switch {
	case !known && e.State != journal.Started:
		return journal.ErrInvalidTransition
	case known && prev.State.Terminal():
		return journal.ErrTerminal
	case known && e.State == journal.Started:
		return journal.ErrInvalidTransition
	case known && (e.VMID != 0 && e.VMID != prev.VMID || e.Kind != "" && e.Kind != prev.Kind ||
		e.IdempKey != "" && e.IdempKey != prev.IdempKey):
		return journal.ErrInvalidTransition
	case !known && e.IdempKey != "" && m.keys[e.IdempKey] != "":
		return journal.ErrKeyConflict
	}
	next := e
	next.At = time.Time{}
	if known {
		next.VMID, next.Kind, next.IdempKey, next.Params = prev.VMID, prev.Kind, prev.IdempKey, prev.Params
		if next.UPID == "" {
			next.UPID = prev.UPID
		}
	} else {
		m.order = append(m.order, e.OpID)
		if e.IdempKey != "" {
			m.keys[e.IdempKey] = e.OpID
		}
	}
	m.ops[e.OpID] = next
	return nil
}

func (s suite) model(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { s.modelSeed(t, seed) })
	}
}

func (s suite) modelSeed(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6a6f75726e616c))
	j, dir := s.fresh(t)
	m := &model{ops: map[string]journal.Entry{}, keys: map[string]string{}}
	opIDs := []string{"a", "b", "c", "d", "e", "f"}
	keys := []string{"", "", "k1", "k2", "k3"}
	states := []journal.State{journal.Started, journal.Started, journal.TaskRunning, journal.Succeeded, journal.Failed, "bogus"}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	for step := 0; step < 150; step++ {
		if rng.IntN(25) == 0 {
			j = s.cycle(t, j, dir)
		} else {
			e := journal.Entry{OpID: pick(opIDs), State: states[rng.IntN(len(states))]}
			if rng.IntN(20) == 0 {
				e.OpID = ""
			}
			if e.State == journal.Started || rng.IntN(4) == 0 {
				e.VMID = 100 + rng.IntN(2)
				e.Kind = []string{"start", "stop"}[rng.IntN(2)]
				e.IdempKey = pick(keys)
			}
			if e.State == journal.TaskRunning || rng.IntN(4) == 0 {
				e.UPID = fmt.Sprintf("UPID:%d", rng.IntN(1000))
			}
			if rng.IntN(15) == 0 {
				e.UPID = ""
			}
			if rng.IntN(3) == 0 {
				e.Error = fmt.Sprint("err", step)
			}
			want := m.apply(e)
			got := j.Append(t.Context(), e)
			if want == nil && got != nil || want != nil && !errors.Is(got, want) {
				t.Fatalf("seed %d step %d: Append(%+v) = %v, model says %v", seed, step, e, got, want)
			}
		}
		// Compare every observation with the model.
		for _, id := range opIDs {
			got, ok := latest(t, j, id)
			want, wok := m.ops[id]
			if ok != wok {
				t.Fatalf("seed %d step %d: Latest(%s) found=%v, model %v", seed, step, id, ok, wok)
			}
			if ok {
				want.At = got.At
				if d := cmp.Diff(want, got, entryOpts); d != "" {
					t.Fatalf("seed %d step %d: Latest(%s) (-model +journal):\n%s", seed, step, id, d)
				}
			}
		}
		var wantFlight []string
		for _, id := range m.order {
			if !m.ops[id].State.Terminal() {
				wantFlight = append(wantFlight, id)
			}
		}
		var gotFlight []string
		for _, e := range inFlight(t, j) {
			gotFlight = append(gotFlight, e.OpID)
		}
		if !slices.Equal(gotFlight, wantFlight) {
			t.Fatalf("seed %d step %d: InFlight = %v, model %v", seed, step, gotFlight, wantFlight)
		}
		for _, k := range keys[2:] {
			owner := m.keys[k]
			want := owner != "" && m.ops[owner].State == journal.Succeeded
			if got := applied(t, j, k); got != want {
				t.Fatalf("seed %d step %d: AlreadyApplied(%s) = %v, model %v", seed, step, k, got, want)
			}
		}
	}
}
