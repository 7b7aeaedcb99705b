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
// bbolt trusts the pages it maps: a damaged page can make it panic, or read
// past the end of the file and kill the process with a memory fault, which
// no recover catches. So [Open], [ScanFile] and [RepairFile] read the file
// themselves first, with plain reads, and check what bbolt would rely on:
// the meta page bbolt would use (magic number, format version, checksum,
// page size); that the file holds every page in use; that every page is
// reached once, from the root or the freelist; that every element lies
// inside its page and every key is in order; and that the file holds the
// journal's buckets and format and nothing else. Only a file that passes is
// handed to bbolt. Every damaged or foreign file, an empty one included
// (the journal never leaves one), fails with an error matching
// [journal.ErrCorrupt] whose reason says what is wrong and, where it can,
// at which byte offset; it also matches bbolt's own error for the same
// fault (ErrChecksum, ErrInvalid, ErrVersionMismatch) where there is one.
// A refused file is never written to, not even by bbolt, which writes to
// some files as it opens them.
//
// One damaged meta page is not damage: bbolt writes its two meta pages in
// turn, and a crash while it writes one leaves the other, which it uses.
//
// [Journal.Verify] checks a database in use without changing it; [RepairFile]
// keeps a copy of a damaged database and rebuilds it from every op it can
// still read, listing what it could not carry over.
//
// # Files and permissions
//
// A journal at path also uses path+".lock" (held while open) and, briefly,
// path+".create" and path+".compact". It is created crash-safely: built
// under path+".create", synced, renamed into place, and the directory
// synced. The journal's files are created with mode 0600 and never created
// or opened through a link: a temporary file is made only under a name that
// is free, and a link planted at the lock file's name is refused.
//
// The journal follows the file journal's rules (package journal, "One
// owner" and "Where a journal may live"). [Open] resolves the symbolic
// links in path once, so that every spelling of it leads to one lock file
// and compaction replaces the file, not a link; it locks the database file
// itself too, so a second opener that comes by another name (a hard link
// made while the journal is open) gets [journal.ErrLocked]. It refuses
// with [journal.ErrUnsafePath] a path that a user other than the caller
// and root could redirect (on Unix systems, every directory from the root
// down must belong to the caller or root and not be writable by others,
// nor by its group unless that is the caller's private group, unless it
// has the sticky bit: give the journal a directory of its own, mode 0700 or
// 0755); a database file that is not a regular file (a directory, a named
// pipe), belongs to another user, or is writable by group or others; and a
// database file with more than one name, since compaction would leave the
// other names holding a stale copy.
package boltjournal
