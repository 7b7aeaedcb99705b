package etcdjournal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/etcdjournal/internal/etcdtest"
)

// With two of three members stopped, the leader's appends fail with
// ErrUnavailable within the request timeout, its pass sends nothing, and
// once the members are back the replica leads again and finishes the work,
// each change made once.
func TestQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster")
	}
	c, err := etcdtest.Start(t.TempDir(), etcdtest.Options{Members: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	opts := []Option{WithTTL(testTTL), WithRequestTimeout(2 * time.Second)}
	f := newFleet(t)
	const prefix = "/quorum"

	a, err := Campaign(ctxT(t, time.Minute), cli, prefix, "a", opts...)
	if err != nil {
		t.Fatal(err)
	}
	ea := f.engine(a)
	if _, err := ea.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}

	c.Stop(1)
	c.Stop(2)
	err = a.Journal().Append(t.Context(), journal.Entry{OpID: "probe", VMID: 1, Kind: "start", State: journal.Started})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append without quorum: %v, want ErrUnavailable", err)
	}
	t.Logf("append without quorum: %v", err)
	before := f.writes()
	ctxA, cancelA := a.Context(t.Context())
	rep, err := ea.ReconcileOnce(ctxA)
	cancelA()
	if got := f.writes(); got != before {
		t.Fatalf("%d writes sent without quorum", got-before)
	}
	if len(f.srv.Tasks()) != 0 {
		t.Fatalf("tasks started without quorum: %+v", f.srv.Tasks())
	}
	t.Logf("pass without quorum: err %v\n%s", err, rep)

	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}

	// The replica's loop: whenever leadership is found lost (the lease may
	// have run out during the outage, which the leader may notice only a
	// keep-alive tick after quorum is back), resign what is left and
	// campaign again; then pass until converged. etcd may still be
	// settling its new raft leader: the engine's retry is the next pass,
	// as in Run.
	ld := a
	ctxL, cancelL := ld.Context(t.Context())
	defer func() { cancelL(); ld.Resign(context.Background()) }()
	var lastErr error
	converged := false
	for try := 0; try < 20 && !converged; try++ {
		if ld.Err() != nil || errors.Is(lastErr, ErrNotLeader) {
			t.Logf("leadership lost: %v", ld.Err())
			cancelL()
			if err := ld.Resign(ctxT(t, 30*time.Second)); err != nil {
				t.Logf("resign after the loss: %v", err)
			}
			ld, err = Campaign(ctxT(t, time.Minute), cli, prefix, "a", opts...)
			if err != nil {
				t.Fatal(err)
			}
			ea = f.engine(ld)
			ctxL, cancelL = ld.Context(t.Context())
		}
		rep, err = ea.ReconcileOnce(ctxL)
		lastErr = err
		converged = err == nil && rep.Converged() && len(rep.Guests) == 4
	}
	if !converged {
		t.Fatalf("not converged after quorum returned: %v\n%s", lastErr, rep)
	}
	f.checkOnce()
	if fl, err := ld.Journal().InFlight(ctxL); err != nil || len(fl) != 0 {
		t.Fatalf("in flight at the end: %+v %v", fl, err)
	}
}
