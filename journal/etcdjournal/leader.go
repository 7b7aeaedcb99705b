package etcdjournal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/guestward/guestward/journal"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Leader is this process's leadership of a journal's prefix, won by
// [Campaign]. It holds an etcd lease, kept alive in the background, and an
// election key attached to it; its [Leader.Journal] writes only while that
// key exists.
//
// A Leader is safe for concurrent use.
type Leader struct {
	cli   *clientv3.Client
	id    string
	lease clientv3.LeaseID
	ttl   time.Duration
	key   string
	rev   int64
	j     *Journal
	cfg   config

	done     chan struct{}
	doneOnce sync.Once
	cause    error // why done closed; set before done closes

	stop     chan struct{} // closed by Resign: stops the background goroutines
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Campaign blocks until candidateID leads the journal under prefix, or ctx
// ends, and returns the leadership. Candidates take turns in the order they
// campaigned: each waits for the election keys created before its own to go
// (their leader resigned, or its lease expired [WithTTL] after its last
// keep-alive).
//
// candidateID names the candidate in the election key's value, for
// operators (etcdctl get --prefix <prefix>/leader); it need not be unique,
// but a host name or pod name is what a person wants to read there.
//
// The returned Leader's journal is opened with opts (see [Open]). When ctx
// ends first, Campaign withdraws (revokes its lease) and returns an error
// wrapping ctx.Err().
func Campaign(ctx context.Context, cli *clientv3.Client, prefix, candidateID string, opts ...Option) (*Leader, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	switch {
	case cli == nil:
		return nil, errors.New("etcdjournal: campaign: nil etcd client")
	case candidateID == "":
		return nil, errors.New("etcdjournal: campaign: empty candidate ID")
	}
	l := layout{trimPrefix(prefix)}
	if l.prefix == "" {
		return nil, errors.New("etcdjournal: campaign: empty prefix")
	}
	what := fmt.Sprintf("campaign as %q", candidateID)
	grant, err := cli.Grant(ctx, cfg.ttl)
	if err != nil {
		return nil, campaignErr(ctx, l, what, err)
	}
	ld := &Leader{
		cli:   cli,
		id:    candidateID,
		lease: grant.ID,
		ttl:   time.Duration(grant.TTL) * time.Second,
		key:   fmt.Sprintf("%s/%016x", l.election(), int64(grant.ID)),
		cfg:   cfg,
		done:  make(chan struct{}),
		stop:  make(chan struct{}),
	}
	// Keep the lease alive while we wait our turn, too: the wait may be
	// long, and a candidate whose lease lapsed would lose its place.
	ld.wg.Add(1)
	go ld.keepAlive()
	withdraw := func(err error) (*Leader, error) {
		ld.shutdown()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.requestTimeoutOr(5*time.Second))
		defer cancel()
		_, _ = cli.Revoke(rctx, ld.lease) // best effort: the lease expires anyway
		return nil, err
	}

	put, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ld.key), "=", 0)).
		Then(clientv3.OpPut(ld.key, candidateID, clientv3.WithLease(ld.lease))).
		Commit()
	if err != nil {
		return withdraw(campaignErr(ctx, l, what, err))
	}
	if !put.Succeeded {
		// A lease ID is unique; a key for it already there is not ours.
		return withdraw(fmt.Errorf("etcdjournal: %s %s: election key %s already exists", l.prefix, what, ld.key))
	}
	ld.rev = put.Header.Revision
	if err := ld.waitTurn(ctx, l); err != nil {
		return withdraw(campaignErr(ctx, l, what, err))
	}
	j, err := open(ctx, cli, l.prefix, cfg, &fence{key: ld.key, rev: ld.rev})
	if err != nil {
		return withdraw(fmt.Errorf("etcdjournal: %s %s: %w", l.prefix, what, err))
	}
	ld.j = j
	ld.wg.Add(1)
	go ld.watchKey()
	cfg.logger.Info("etcdjournal: leading", "prefix", l.prefix, "candidate", candidateID, "key", ld.key)
	return ld, nil
}

func trimPrefix(p string) string {
	for len(p) > 0 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}

func (c config) requestTimeoutOr(d time.Duration) time.Duration {
	if c.requestTimeout > 0 {
		return c.requestTimeout
	}
	return d
}

func campaignErr(ctx context.Context, l layout, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("etcdjournal: %s %s: %w (%v)", l.prefix, what, cerr, err)
	}
	if errors.Is(err, ErrNotLeader) {
		return fmt.Errorf("etcdjournal: %s %s: %w", l.prefix, what, err)
	}
	return fmt.Errorf("etcdjournal: %s %s: %w: %w", l.prefix, what, ErrUnavailable, err)
}

// waitTurn waits until no election key older than ours is left.
func (ld *Leader) waitTurn(ctx context.Context, l layout) error {
	for {
		opts := append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxCreateRev(ld.rev - 1)}, clientv3.WithLastCreate()...)
		resp, err := ld.cli.Get(ctx, l.election()+"/", opts...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			break
		}
		// Wait for the newest older key to go; then look again (an even
		// older one may still be there, or the one we waited for may have
		// been the leader).
		if err := ld.waitDelete(ctx, string(resp.Kvs[0].Key), resp.Header.Revision); err != nil {
			return err
		}
	}
	// Our own key must still be there: our lease may have lapsed while we
	// waited.
	resp, err := ld.cli.Get(ctx, ld.key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != ld.rev {
		return fmt.Errorf("%w: our election key %s lapsed while waiting", ErrNotLeader, ld.key)
	}
	select {
	case <-ld.done:
		return fmt.Errorf("%w: %w", ErrNotLeader, ld.cause)
	default:
	}
	return nil
}

func (ld *Leader) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range ld.cli.Watch(wctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut()) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-ld.done:
		return fmt.Errorf("%w: %w", ErrNotLeader, ld.cause)
	default:
	}
	return errors.New("watch ended")
}

// keepAlive refreshes the lease every third of its TTL. Leadership ends
// (Done closes) when etcd says the lease is gone, or when a whole TTL has
// passed since the last refresh etcd confirmed: by then etcd may have
// expired the lease, and this process must assume it has.
func (ld *Leader) keepAlive() {
	defer ld.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ld.stop:
		case <-ld.cfg.pause:
		}
		cancel()
	}()
	// The lease's clock started at Grant, before this goroutine: count the
	// deadline from now minus nothing, which errs on the late side by the
	// time Grant took; the next refresh (a third of the TTL on) resets it.
	deadline := time.Now().Add(ld.ttl)
	tick := time.NewTicker(ld.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sent := time.Now()
		rctx, rcancel := context.WithDeadline(ctx, deadline)
		resp, err := ld.cli.KeepAliveOnce(rctx, ld.lease)
		rcancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && resp.TTL > 0:
			deadline = sent.Add(time.Duration(resp.TTL) * time.Second)
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil:
			ld.lose(errors.New("lease expired"))
			return
		case !time.Now().Before(deadline):
			ld.lose(fmt.Errorf("no lease refresh confirmed for %v: %w", ld.ttl, err))
			return
		}
	}
}

// watchKey ends leadership when the election key is deleted (by a revoke,
// an expiry, or an operator).
func (ld *Leader) watchKey() {
	defer ld.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ld.stop:
		case <-ld.cfg.pause:
		}
		cancel()
	}()
	for ctx.Err() == nil {
		for wr := range ld.cli.Watch(ctx, ld.key, clientv3.WithRev(ld.rev+1)) {
			if err := wr.Err(); err != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					ld.lose(errors.New("election key deleted"))
					return
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch broke (a compaction, a closed client): look once, and
		// watch again if the key is still ours.
		resp, err := ld.cli.Get(ctx, ld.key)
		if err == nil && (len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != ld.rev) {
			ld.lose(errors.New("election key gone"))
			return
		}
		if errors.Is(err, context.Canceled) || ld.cli.Ctx().Err() != nil {
			ld.lose(errors.New("etcd client closed"))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(ld.ttl / 3): // not synchronization: a retry pace
		}
	}
}

func (ld *Leader) lose(cause error) {
	ld.doneOnce.Do(func() {
		ld.cause = cause
		close(ld.done)
		ld.cfg.logger.Warn("etcdjournal: leadership lost", "key", ld.key, "candidate", ld.id, "cause", cause)
	})
}

func (ld *Leader) shutdown() {
	ld.stopOnce.Do(func() { close(ld.stop) })
	ld.lose(errors.New("resigned"))
	ld.wg.Wait()
}

// Journal returns the leader's journal: a [*Journal] on the election's
// prefix whose every write (Append, and the deletions of Compact) commits
// only while this leader's election key exists with the revision it was
// created at, and otherwise fails with [ErrNotLeader] and writes nothing.
// That holds even while this process has not noticed its loss, so a paused
// or partitioned leader can never overwrite the work of the one that
// replaced it. Reads are not fenced.
//
// The journal lives as long as the Leader: [Leader.Resign] closes it. Do not
// close it yourself.
func (ld *Leader) Journal() journal.Journal { return ld.j }

// EtcdJournal is [Leader.Journal] with its concrete type, for Compact and
// Prefix.
func (ld *Leader) EtcdJournal() *Journal { return ld.j }

// Done returns a channel that is closed when leadership is lost: the lease
// expired or was revoked, the election key was deleted, etcd could not
// confirm a lease refresh for a whole TTL, or Resign was called. Writes of
// the leader's journal fail with ErrNotLeader from the moment etcd drops the
// key, which may be a little before Done closes; Done never closes later
// than the lease's TTL after the last refresh etcd confirmed.
func (ld *Leader) Done() <-chan struct{} { return ld.done }

// Err returns nil while leading, and why leadership ended once Done is
// closed; the error wraps ErrNotLeader.
func (ld *Leader) Err() error {
	select {
	case <-ld.done:
		return fmt.Errorf("%w: %w", ErrNotLeader, ld.cause)
	default:
		return nil
	}
}

// Context returns a context derived from parent that also ends when
// leadership is lost, with cause ErrNotLeader (see [context.Cause]). Run
// the engine under it, so that a deposed leader stops at once:
//
//	ctx, cancel := leader.Context(parent)
//	defer cancel()
//	err := engine.Run(ctx)
//
// cancel releases the context's resources; call it when done.
func (ld *Leader) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ld.done:
			cancel(ld.Err())
		case <-ctx.Done():
		case <-stop:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() { close(stop) })
		cancel(context.Canceled)
	}
}

// ID returns the candidate ID Campaign was given.
func (ld *Leader) ID() string { return ld.id }

// Key returns the leader's election key, and Rev the revision it was
// created at: the fence every write of the journal checks.
func (ld *Leader) Key() string { return ld.key }

// Rev returns the revision at which the election key was created.
func (ld *Leader) Rev() int64 { return ld.rev }

// Lease returns the lease the election key is attached to.
func (ld *Leader) Lease() clientv3.LeaseID { return ld.lease }

// Resign gives up leadership at once: it stops the keep-alive, revokes the
// lease (which deletes the election key, so the next candidate takes over
// without waiting for the TTL), closes Done and the journal. Stop the
// engine that uses the journal first (end its context and wait for Run to
// return): writes after Resign fail with journal.ErrClosed.
//
// Resign after leadership was lost only releases what remains. It returns
// an error when the lease could not be revoked (etcd unreachable); the lease
// then expires after its TTL.
func (ld *Leader) Resign(ctx context.Context) error {
	ld.shutdown()
	var errs []error
	if ld.j != nil {
		errs = append(errs, ld.j.Close())
	}
	if _, err := ld.cli.Revoke(ctx, ld.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		errs = append(errs, fmt.Errorf("etcdjournal: resign %s: revoke lease: %w", ld.key, err))
	}
	return errors.Join(errs...)
}
