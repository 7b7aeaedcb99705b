// Package journal records the lifecycle of operations durably, so that a
// program that changes the world (guestward changes Proxmox guests) can find,
// after a crash, every operation it had started and not finished, and can run
// an operation that carries an idempotency key at most once, across restarts.
//
// # The model
//
// An operation ("op") is one attempt to cause one side effect, named by its
// [Entry.OpID]. Its records move through the [State] values
//
//	Started ─┬─> TaskRunning ─┬─> Succeeded
//	         │     (again,    │
//	         │   new UPID)    └─> Failed
//	         ├─────────────────> Succeeded   (synchronous ops: no task)
//	         └─────────────────> Failed
//
// and the latest record wins. The first record, [Started], carries the op's
// identity: the guest (VMID), what it does (Kind, Params) and, for a one-shot
// op, its idempotency key. Later records may repeat that identity (it must
// then be equal) or leave it out: [Journal.Latest] returns the latest record
// merged with it, so the latest state alone tells recovery everything (see
// [Merge] for the exact rules). Nothing follows [Succeeded] or [Failed].
//
// An idempotency key belongs to the first op that records it, for as long as
// the journal keeps that op, and is "applied" once that op has Succeeded.
//
// # The caller's duties
//
// The journal does not run anything; it keeps the caller's promises honest
// if the caller records in this order:
//
//  1. Before causing the side effect, Append a Started record. If Append
//     fails, do not cause the side effect.
//  2. When Proxmox answers with a task, Append TaskRunning with its UPID.
//  3. When the outcome is known, Append Succeeded or Failed.
//  4. On start-up, before anything else, call [Journal.InFlight] and resolve
//     each op it returns (look at its task, then record the outcome).
//  5. Before a one-shot op with key K, ask [Journal.AlreadyApplied] (or
//     [KeyLookup.LatestByKey], for the recorded outcome); Append itself
//     refuses a second op that claims K ([ErrKeyConflict]).
//
// Append validates every record and rejects one that breaks a rule with an
// error wrapping [ErrInvalidEntry], [ErrInvalidTransition], [ErrTerminal] or
// [ErrKeyConflict], writing nothing. A zero [Entry.At] is set to the current
// time; times are kept in UTC.
//
// # Durability
//
// Append returns only when its record is on stable storage. Concurrent
// Appends share writes and syncs (group commit) and each still returns only
// once its own record is durable; records are stored, and become visible to
// readers, in the order Append accepted them. Readers see only acknowledged
// records. A failed write or sync makes a [FileJournal] refuse further
// records until it is reopened, because the state of the file is then
// unknown. [WithNoSync] trades the guarantee for speed, for bulk loading and
// tests only.
//
// # Backends
//
// [FileJournal] ([OpenFile]) keeps the journal in one append-only file and
// its state in memory. Package boltjournal keeps it in a bbolt database.
// [MemoryJournal] ([NewMemory]) keeps it in memory only, for tests of code
// that uses a journal. All implement [Journal] and [KeyLookup]; package
// journaltest checks any implementation against the contract, and others can
// reuse [Merge] and the [Entry] binary encoding ([Entry.MarshalBinary]) to
// follow the same rules.
//
// # The file backend
//
// Records are framed with their length and a CRC-32C checksum, and written in
// batches: one write and one sync per batch. An Append that finds no write in
// progress writes its own record at once; others queue for the next batch.
// The file is extended with zeros ahead of the writes, which are then
// overwrites: a sync after an overwrite flushes data only, where one after an
// append must also commit the file's size.
//
// On open the log is replayed into memory. A torn final write (the crash
// came mid-batch; nothing in it was acknowledged) is dropped and the file
// truncated to the last intact record; each record notes where its batch
// began, which tells a torn final batch from damage to earlier, acknowledged
// records. Such damage is never skipped: [OpenFile] fails with a
// [*CorruptError] ([ErrCorrupt]) giving the byte offset, [ScanFile] reports
// it without changing anything, and [RepairFile] is the explicit way past it:
// it keeps a copy of the file and truncates it before the damage.
//
// When the log passes a size threshold ([WithCompactThreshold]) or on
// [FileJournal.Compact], the journal writes its live state to a new file
// and renames it over the old one, syncing the directory: the latest state of
// every op not finished, of every finished op within the retention window
// ([WithRetention]) and of every op holding an applied idempotency key
// ([WithKeyRetention]). A crash at any point of a compaction leaves one
// complete journal, the old or the new.
//
// A journal at path also uses path+".lock" (held while open) and, briefly,
// path+".create" and path+".compact"; it is created with mode 0600, and the
// directory is synced after the file is created or renamed.
//
// # One owner
//
// One [FileJournal] at a time, in one process, may have a journal open. Two
// would each accept records (the same one-shot key, say) and interleave
// their writes. [OpenFile] resolves the symbolic links in its path first, so
// every spelling of the path (a link to the file or to a directory above it,
// a relative path, ".." components) leads to the same lock file, which
// compaction never replaces; and it locks the journal file itself, which
// catches a second opener that comes by another name for the same file (a
// hard link, or the name it was renamed to while open). The second opener
// gets [ErrLocked].
//
// A journal file must have exactly one name. OpenFile refuses one with hard
// links ([ErrUnsafePath]), and [FileJournal.Compact] refuses to replace a
// file that has gained another name or lost its own while open: the other
// name would keep the old file, a stale journal someone could open and
// trust. Appends go on meanwhile. Copying a journal makes a second journal;
// do not copy one that is open, or open the copy instead of the original.
//
// # Where a journal may live
//
// Whoever can change which file the journal's path names can make the
// journal lose records or write somewhere else, so OpenFile and [RepairFile]
// refuse, with [ErrUnsafePath], a path that another user (other than root)
// could redirect. On Unix systems:
//
//   - every directory from the root down to the journal's own must belong to
//     the user the program runs as or to root, and must not be writable by
//     others, nor by its group unless that is the user's own private group
//     (the user's primary group, named as the user is, which distributions
//     that set umask 002 give every user), unless it has the sticky bit (as
//     /tmp does): create the journal's directory with mode 0700 or 0755;
//   - the journal file must be a regular file belonging to that user or to
//     root, not writable by group or others (it is created 0600);
//   - a symbolic link at the path must lead to an existing journal (a link
//     leading nowhere would have the journal created wherever it points):
//     open the journal once at the link's target to create it, then link.
//     An empty file is refused as damaged ([ErrCorrupt]), wherever it is.
//
// The links in the path are the caller's choice and are resolved once, on
// open; the directories checked are those the links lead to. The journal's
// files are never created or opened through a link: a link planted at the
// name of the lock file is refused, and the temporary files are created only
// under a name that is free (one planted at a temporary name is removed, not
// followed). In a sticky directory others can still plant such names and so
// stop the journal from opening or compacting, but not redirect it; a
// directory of its own is better. On Windows no permissions are checked.
//
// # What the package will not do
//
// It knows nothing of Proxmox: Params, UPIDs and errors are opaque strings.
// It does not resolve in-flight ops or retry anything; that is the caller's
// job (guestward's reconcile engine). It is not a general event log: once
// compacted, a finished op is kept as its merged latest state only. One
// process at a time may have a journal open. It does not defend against root,
// or against the user it runs as.
package journal
