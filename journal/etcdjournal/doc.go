// Package etcdjournal keeps the guestward operation journal in etcd, so that
// several replicas of a control plane share one journal, and adds leader
// election with fenced writes, so that exactly one of them acts at a time
// and a replica that lost its leadership can no longer write.
//
// It lives in its own Go module (github.com/guestward/guestward/journal/etcdjournal)
// so that the core module does not depend on the etcd client.
//
// # The journal
//
// [Open] returns a [*Journal], a journal.Journal with the optional
// capabilities journal.KeyLookup and journal.OpLister, stored under a key
// prefix of the etcd cluster a *clientv3.Client talks to:
//
//	<prefix>/op/<op ID>    the operation's latest state (all its records merged, as
//	                       journal.Merge defines), encoded by journal.Entry.MarshalBinary
//	<prefix>/key/<key>     the op ID that holds an idempotency key
//	<prefix>/leader/<id>   the election keys of Campaign
//
// An Append is one etcd transaction. Its compare checks that the
// operation's record is still the one the append merged onto (by its mod
// revision, or its absence for a Started record), that a new operation's
// idempotency key is still free (or, for a later record, still names the
// operation), and, for a leader's journal, that the leader still holds its
// election key. The transaction holds those compares and the puts, and
// nothing else, so it costs etcd what the records need. If any of that
// changed, the transaction writes nothing, Append reads the current state
// (and the election key: a deposed leader gets [ErrNotLeader]) and merges
// again, a bounded number of times. So two replicas that race to end one
// operation, or to claim one key, cannot both win, and the loser gets the
// journal's usual error (journal.ErrTerminal, journal.ErrKeyConflict). A handle remembers what it
// last wrote for each operation in flight, so an Append usually costs one
// round trip.
//
// Durability is etcd's: a transaction is acknowledged once a quorum of
// members has it in their fsync'd logs. An operation's start order is its
// record's create revision, which etcd assigns in commit order across all
// writers; InFlight and Ops read page by page ([WithPageSize]) at one
// revision and sort by it. Reads are linearizable.
//
// Retention is the file journal's: [Journal.Compact] (run by Open and every
// [WithCompactInterval]) deletes terminal operations past [WithRetention],
// and Succeeded operations holding a key past [WithKeyRetention] (forever by
// default), each in a transaction that checks the record did not change
// since it was read. etcd's own history of old revisions is the cluster's to
// compact (its --auto-compaction-* flags).
//
// # Leadership
//
// [Campaign] blocks until the candidate leads the prefix and returns a
// [*Leader]: an etcd lease with a TTL ([WithTTL]), kept alive in the
// background, and an election key attached to it. Candidates are served in
// the order they campaigned. [Leader.Journal] is a journal whose every write
// also compares the election key's create revision: once the key is gone
// (the lease expired or was revoked), the write fails with [ErrNotLeader]
// and writes nothing, even if the leader's process has not noticed yet
// because it was paused or cut off. [Leader.Done] closes when leadership
// ends (no later than one TTL after the last keep-alive etcd confirmed),
// and [Leader.Resign] ends it at once, handing over to the next candidate
// without waiting for the TTL.
//
// # Running the engine under a leader
//
// A replica campaigns, builds a reconcile.Engine on the leader's journal and
// runs it under [Leader.Context], which ends with leadership:
//
//	for {
//		leader, err := etcdjournal.Campaign(ctx, cli, "/guestward/fleet-a", hostname)
//		if err != nil {
//			return err // ctx ended
//		}
//		eng, err := reconcile.NewEngine(reconcile.Config{Journal: leader.Journal(), ...})
//		...
//		lctx, cancel := leader.Context(ctx)
//		err = eng.Run(lctx) // returns when leadership is lost or ctx ends
//		cancel()
//		leader.Resign(context.WithoutCancel(ctx))
//	}
//
// The new leader's engine resolves the old leader's in-flight operations
// before it does anything else: a pass and Apply run Recover first, and a
// fresh engine has not recovered yet. An operation whose intent the old
// leader could not journal was never sent, because the engine sends nothing
// it has not journaled; one it journaled is resolved from the journal and
// Proxmox's task list exactly as after a crash. An idempotency key claimed
// through one leader is seen by every later one, so a one-shot runs at
// most once across replicas.
//
// # Sharding a large fleet
//
// One leader acts for the whole prefix. To spread a large fleet's work over
// several replicas, split its Proxmox nodes into shards: [CampaignShard]
// campaigns for one shard, whose journal and election live under
// [ShardPrefix] (prefix/shard/<name>), and the shard's engine takes its
// desired state through [NodeProvider], which keeps it to the shard's
// nodes, and lists them in reconcile.Config.Nodes, so that a one-shot or
// a revert sent to the wrong shard's engine is refused
// (reconcile.ErrNotInScope) instead of reaching a guest another shard's
// leader manages through a second journal. Each replica campaigns first for its own shards and then, as a
// standby, for the others; candidates are served in campaign order, so
// while every replica is up each leads its own shards, and a dead
// replica's shards go to their standbys, whose engines recover its
// in-flight operations from the shards' journals as above. Several shards
// are several leaderships: run one engine per shard led.
//
// A shard's idempotency keys are its own: a one-shot runs at most once
// within its guest's shard. Moving a node (or a guest) to another shard
// moves it to another journal, whose engine does not know the old
// shard's operations or keys; do that with both shards' engines stopped
// and the old shard's operations finished.
//
// # Limits
//
// Fencing covers the journal, not Proxmox: a deposed leader whose request
// was already on its way to Proxmox when its lease expired may still have
// it carried out. Such a request was journaled first, so the next leader's
// Recover finds its task; what the fence adds is that the deposed leader
// cannot journal (and so cannot send) anything new. The lease TTL is the
// time a silent leader's work waits before another replica takes over.
// When etcd has no quorum, every write fails with [ErrUnavailable] after
// [WithRequestTimeout] and the engine sends nothing; leaders lose their
// leadership one TTL later and campaign again once etcd is back.
package etcdjournal
