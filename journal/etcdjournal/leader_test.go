package etcdjournal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
)

// testTTL is the lease TTL of the tests' leaders: short enough for quick
// failovers, long enough that a loaded two-core machine under -race keeps
// a live leader's lease.
const testTTL = 3 * time.Second

func campaign(t *testing.T, ctx context.Context, prefix, id string, opts ...Option) *Leader {
	t.Helper()
	cli := newClient(t)
	ld, err := Campaign(ctx, cli, prefix, id, append([]Option{WithTTL(testTTL)}, opts...)...)
	if err != nil {
		t.Fatalf("Campaign(%s): %v", id, err)
	}
	t.Cleanup(func() { ld.Resign(context.Background()) })
	return ld
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitClosed fails the test unless ch closes within d.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not closed after %v", what, d)
	}
}

// A second candidate waits while the first leads, and takes over the moment
// the first resigns; the first's journal then refuses to write.
func TestCampaignTakesTurnsAndFencesTheLoser(t *testing.T) {
	prefix := newPrefix(t)
	a := campaign(t, ctxT(t, time.Minute), prefix, "a")
	if err := a.Journal().Append(t.Context(), journal.Entry{OpID: "op1", VMID: 100, Kind: "start", State: journal.Started}); err != nil {
		t.Fatalf("leader's append: %v", err)
	}

	won := make(chan *Leader, 1)
	errc := make(chan error, 1)
	cliB := newClient(t)
	go func() {
		ld, err := Campaign(ctxT(t, time.Minute), cliB, prefix, "b", WithTTL(testTTL))
		if err != nil {
			errc <- err
			return
		}
		won <- ld
	}()
	// b must not win while a leads: a write fenced by a's key proves a
	// still holds it after b has put its own key (b's key exists once it
	// shows under the election prefix).
	waitCandidates(t, a, 2)
	select {
	case <-won:
		t.Fatal("b won while a was leading")
	default:
	}
	if err := a.Journal().Append(t.Context(), journal.Entry{OpID: "op1", State: journal.TaskRunning, UPID: "UPID:1"}); err != nil {
		t.Fatalf("a's append while b waits: %v", err)
	}

	if err := a.Resign(t.Context()); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	waitClosed(t, a.Done(), time.Second, "a.Done after Resign")
	var b *Leader
	select {
	case b = <-won:
	case err := <-errc:
		t.Fatalf("b's campaign: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("b did not take over after a resigned")
	}
	t.Cleanup(func() { b.Resign(context.Background()) })

	// The new leader sees and continues the old one's work.
	if err := b.Journal().Append(t.Context(), journal.Entry{OpID: "op1", State: journal.Succeeded}); err != nil {
		t.Fatalf("b's append: %v", err)
	}
	if err := a.Journal().Append(t.Context(), journal.Entry{OpID: "op2", VMID: 100, Kind: "stop", State: journal.Started}); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("append through a resigned leader's journal: %v, want ErrClosed", err)
	}
}

func waitCandidates(t testing.TB, ld *Leader, n int) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	prefix := ld.j.l.election() + "/"
	resp, err := ld.cli.Get(ctx, prefix, withPrefixCount()...)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count >= int64(n) {
		return
	}
	w := ld.cli.Watch(ctx, prefix, withPrefixFrom(resp.Header.Revision+1)...)
	for wr := range w {
		for range wr.Events {
			resp, err := ld.cli.Get(ctx, prefix, withPrefixCount()...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count >= int64(n) {
				return
			}
		}
	}
	t.Fatalf("fewer than %d candidates after 30s", n)
}

// A leader frozen while its lease expires does not know it lost (Done stays
// open), yet every write it tries fails with ErrNotLeader, because the
// write's transaction checks the election key.
func TestPausedLeaderCannotWrite(t *testing.T) {
	prefix := newPrefix(t)
	pause := make(chan struct{})
	a := campaign(t, ctxT(t, time.Minute), prefix, "a", withPause(pause))
	if err := a.Journal().Append(t.Context(), journal.Entry{OpID: "op", VMID: 100, Kind: "start", State: journal.Started}); err != nil {
		t.Fatal(err)
	}
	close(pause)
	// b wins only once a's lease has expired in etcd.
	b := campaign(t, ctxT(t, time.Minute), prefix, "b")
	select {
	case <-a.Done():
		t.Fatal("a paused leader noticed its loss; the test would not show the fence")
	default:
	}
	if err := b.Journal().Append(t.Context(), journal.Entry{OpID: "b-op", VMID: 102, Kind: "start", State: journal.Started}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		e      journal.Entry
		reason string
	}{
		{journal.Entry{OpID: "op", State: journal.TaskRunning, UPID: "UPID:x"}, "a remembers the op: its one transaction fails on the fence"},
		{journal.Entry{OpID: "new", VMID: 101, Kind: "stop", State: journal.Started}, "a new op: its one transaction fails on the fence"},
		{journal.Entry{OpID: "b-op", State: journal.Succeeded}, "an op a never wrote: a reads it first, and the read sees the fence gone"},
	} {
		err := a.Journal().Append(t.Context(), tc.e)
		if !errors.Is(err, ErrNotLeader) {
			t.Fatalf("paused leader's append of %s %s: %v, want ErrNotLeader (%s)", tc.e.OpID, tc.e.State, err, tc.reason)
		}
	}
	if _, err := a.EtcdJournal().Compact(t.Context()); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	got, ok, err := b.Journal().Latest(t.Context(), "op")
	if err != nil || !ok || got.State != journal.Started {
		t.Fatalf("op after the paused leader's attempts: %+v %v %v; want still started", got, ok, err)
	}
	if _, ok, _ := b.Journal().Latest(t.Context(), "new"); ok {
		t.Fatal("the paused leader's new op was recorded")
	}
	if got, _, _ := b.Journal().Latest(t.Context(), "b-op"); got.State != journal.Started {
		t.Fatalf("b's op after the paused leader's attempt: %+v; want still started", got)
	}
	if err := b.Journal().Append(t.Context(), journal.Entry{OpID: "op", State: journal.Failed, Error: "taken over"}); err != nil {
		t.Fatalf("new leader's append: %v", err)
	}
}

// Deleting the election key (an operator, or an expiry etcd reports) closes
// Done, and the Context derived from the leader ends with ErrNotLeader.
func TestDoneClosesWhenTheKeyGoes(t *testing.T) {
	prefix := newPrefix(t)
	a := campaign(t, ctxT(t, time.Minute), prefix, "a")
	ctx, cancel := a.Context(t.Context())
	defer cancel()
	if a.Err() != nil {
		t.Fatalf("Err while leading: %v", a.Err())
	}
	if _, err := newClient(t).Delete(t.Context(), a.Key()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, a.Done(), 30*time.Second, "Done after the key was deleted")
	waitClosed(t, ctx.Done(), 5*time.Second, "leader context")
	if !errors.Is(context.Cause(ctx), ErrNotLeader) || !errors.Is(a.Err(), ErrNotLeader) {
		t.Fatalf("cause %v, Err %v; want ErrNotLeader", context.Cause(ctx), a.Err())
	}
	err := a.Journal().Append(t.Context(), journal.Entry{OpID: "x", VMID: 1, Kind: "start", State: journal.Started})
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("append after losing the key: %v", err)
	}
}

// A campaign whose context ends while another leads withdraws, and leaves
// no key behind to block later candidates.
func TestCampaignContextEnds(t *testing.T) {
	prefix := newPrefix(t)
	a := campaign(t, ctxT(t, time.Minute), prefix, "a")
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err := Campaign(ctx, newClient(t), prefix, "b", WithTTL(testTTL))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Campaign with an ending context: %v", err)
	}
	resp, err := a.cli.Get(t.Context(), a.j.l.election()+"/", withPrefixCount()...)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 1 {
		t.Fatalf("%d election keys after b withdrew, want a's alone", resp.Count)
	}
}

func TestCampaignRejectsBadInput(t *testing.T) {
	cli := newClient(t)
	for _, tc := range []struct {
		name, prefix, id string
		reason           string
	}{
		{"empty id", "/p", "", "an election key must say whose it is"},
		{"empty prefix", "", "a", "the journal must not own the whole key space"},
		{"slash prefix", "///", "a", "a prefix of slashes is the empty prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Campaign(t.Context(), cli, tc.prefix, tc.id); err == nil {
				t.Fatalf("accepted: %s", tc.reason)
			}
		})
	}
	if _, err := Campaign(t.Context(), nil, "/p", "a"); err == nil {
		t.Fatal("accepted a nil client")
	}
}
