// Package boltjournal is a [journal.Journal] kept in a bbolt database, for
// programs that already use bbolt or prefer a B+tree file to an append-only
// log. It keeps the same contract as the file backend (package journal
// documents the model and the caller's duties) and passes the same
// conformance suite, journaltest.Run.
//
// # Layout
//
// The database holds one bucket of operations: op ID → the op's latest
// merged state, with the sequence number that orders ops by start. Which op
// holds which idempotency key, which ops are in flight and when finished ops
// expire all follow from the ops; [Open] reads every op to rebuild them in
// memory, and every commit keeps them up to date. So an append writes one key.
//
// # Concurrency and durability
//
// Concurrent appends share a transaction, and its sync, through bbolt's
// Batch: a batch commits when it holds [WithMaxBatchSize] appends or after
// [WithMaxBatchDelay]; set the size to the number of goroutines that append
// at once. An append that runs alone commits in its own transaction without
// waiting. bbolt may run a batch's functions more than once (when one of
// them fails it rolls the transaction back and runs the others again); the
// journal's function does all its writing inside the transaction, so a
// rerun never duplicates a record. Append returns once the transaction is
// committed and synced.
//
// # Retention and space
//
// Finished ops past the retention window ([WithRetention],
// [WithKeyRetention]) are pruned a few at a time by later appends, and all at
// once by [Open] and [Journal.Compact]. bbolt reuses the pages it frees but
// never gives them back to the file system; [Journal.Compact] does, by
// writing a compact copy of the database and renaming it over the old one.
//
// # Damage
//
// [Open] fails with an error matching [journal.ErrCorrupt] for a database
// bbolt finds damaged, one whose entries do not decode, or one that is not a
// journal. [Journal.Verify] checks a database in use without changing it;
// [Repair] keeps a copy of a damaged database and rebuilds it from every
// op that still decodes, listing what it could not carry over.
//
// A journal at path also uses path+".lock" (held while open) and, briefly,
// path+".create" and path+".compact". It is created crash-safely: built under
// path+".create", synced, renamed into place, and the directory synced.
package boltjournal
