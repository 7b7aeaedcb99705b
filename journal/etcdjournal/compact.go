package etcdjournal

import (
	"context"
	"fmt"
	"time"

	"github.com/guestward/guestward/journal"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Compact drops the terminal operations that retention no longer keeps
// (see [WithRetention] and [WithKeyRetention]), with the idempotency keys
// they hold, and returns how many it dropped. It reads the journal page by
// page and deletes each operation in a transaction that commits only if the
// record is unchanged since it was read, so it is safe alongside writers in
// other processes; a fenced journal's deletions are fenced too.
//
// Compact keeps etcd's key space bounded; etcd's own history of old
// revisions is compacted by the cluster (its --auto-compaction settings).
func (j *Journal) Compact(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("etcdjournal: %s compact: %w", j.l.prefix, err)
	}
	if err := j.enter(act{verb: "compact"}); err != nil {
		return 0, err
	}
	defer j.mu.RUnlock()
	return j.compact(ctx)
}

type victim struct {
	opID, key string
	modRev    int64
}

func (j *Journal) compact(ctx context.Context) (int, error) {
	now := j.cfg.now()
	var victims []victim
	what := act{verb: "compact"}
	var e journal.Entry
	err := j.scan(ctx, what, func(kv *mvccKV, _ int64) error {
		if err := j.decodeInto(kv.Key, kv.Value, &e); err != nil {
			return fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
		}
		if j.expired(&e, now) {
			victims = append(victims, victim{e.OpID, e.IdempKey, kv.ModRevision})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	dropped := 0
	for _, v := range victims {
		ok, err := j.drop(ctx, v)
		if err != nil {
			return dropped, err
		}
		if ok {
			dropped++
		}
	}
	if dropped > 0 {
		j.cfg.logger.Info("etcdjournal: compacted", "prefix", j.l.prefix, "dropped", dropped)
	}
	return dropped, nil
}

// expired reports whether retention drops e as of now.
func (j *Journal) expired(e *journal.Entry, now time.Time) bool {
	if !e.State.Terminal() {
		return false
	}
	d := j.cfg.retention
	if e.State == journal.Succeeded && e.IdempKey != "" {
		d = j.cfg.keyRetention
	}
	return d >= 0 && now.Sub(e.At) >= d
}

func (j *Journal) drop(ctx context.Context, v victim) (bool, error) {
	opKey := j.l.op(v.opID)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(opKey), "=", v.modRev)}
	dels := []clientv3.Op{clientv3.OpDelete(opKey)}
	if v.key != "" {
		// The key index goes with its op, and only if it still names it.
		kk := j.l.key(v.key)
		cmps = append(cmps, clientv3.Compare(clientv3.Value(kk), "=", v.opID))
		dels = append(dels, clientv3.OpDelete(kk))
	}
	if j.fence != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(j.fence.key), "=", j.fence.rev))
	}
	what := act{"compact: drop op", v.opID}
	rctx, cancel := j.request(ctx)
	defer cancel()
	resp, err := j.cli.Txn(rctx).If(cmps...).Then(dels...).Commit()
	if err != nil {
		return false, j.ioErr(ctx, what, err)
	}
	return resp.Succeeded, nil
}

// compactLoop runs Compact every compactInterval until Close.
func (j *Journal) compactLoop() {
	defer close(j.done)
	t := time.NewTicker(j.cfg.compactInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-j.stop
		cancel()
	}()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			if _, err := j.compact(ctx); err != nil && ctx.Err() == nil {
				j.cfg.logger.Warn("etcdjournal: compaction failed", "prefix", j.l.prefix, "err", err)
			}
		}
	}
}
