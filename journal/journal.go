package journal

import (
	"context"
	"errors"
	"fmt"
)

// Journal records the lifecycle of operations durably. It is the seam between
// the reconcile engine and storage; [FileJournal], [MemoryJournal] and
// boltjournal.Journal implement it, and journaltest.Run checks any
// implementation against this contract.
//
// Implementations must be safe for concurrent use.
type Journal interface {
	// Append records e as the next record of operation e.OpID. It returns
	// only once the record is on stable storage, so a record Append
	// acknowledged survives a crash of the process or the machine.
	//
	// Append applies the lifecycle rules of [Merge] and checks that an
	// idempotency key is not held by another operation. Input that breaks
	// a rule gets an error wrapping [ErrInvalidEntry],
	// [ErrInvalidTransition], [ErrTerminal] or [ErrKeyConflict], and
	// nothing is written. A zero e.At is set to the current time.
	//
	// When ctx ends before the record was queued for writing, Append
	// returns ctx.Err() and writes nothing. When it ends after that, the
	// record may still become durable; the error wraps ctx.Err(), and
	// [Journal.Latest] tells what happened.
	Append(ctx context.Context, e Entry) error

	// Latest returns the latest state of operation opID: its latest
	// record, with VMID, Kind, Params, IdempKey and the last UPID carried
	// forward from earlier records (see [Merge]). ok is false when the
	// journal holds no record of the operation (never had one, or
	// retention dropped it). Only acknowledged records are visible.
	Latest(ctx context.Context, opID string) (e Entry, ok bool, err error)

	// InFlight returns the latest state (as Latest) of every operation
	// that has not reached a terminal state, in the order the operations
	// started. After a crash these are the operations to resolve.
	InFlight(ctx context.Context) ([]Entry, error)

	// AlreadyApplied reports whether an operation carrying idempKey has
	// Succeeded. It stays true for as long as the journal keeps the key
	// (forever by default). An empty key is never applied.
	AlreadyApplied(ctx context.Context, idempKey string) (bool, error)

	// Close waits for acknowledged work to finish and releases the
	// journal's resources. Afterwards every method returns an error
	// wrapping [ErrClosed]; calling Close again returns nil.
	Close() error
}

// KeyLookup is implemented by journals that can find an operation by its
// idempotency key, which lets a one-shot request whose key was seen before
// return the recorded outcome instead of running again. All journals in this
// module implement it.
type KeyLookup interface {
	// LatestByKey returns the latest state (as [Journal.Latest]) of the
	// operation that holds idempKey, whatever that state is. ok is false
	// when no operation holds the key.
	LatestByKey(ctx context.Context, idempKey string) (e Entry, ok bool, err error)
}

// OpLister is implemented by journals that can list every operation they
// hold. The reconcile engine needs it to tell which Proxmox tasks already
// belong to a journaled operation, so that a task of a finished operation is
// never taken for the task of a request whose answer was lost; it refuses a
// journal without it. All journals in this module implement it.
type OpLister interface {
	// Ops returns the latest state (as [Journal.Latest]) of every
	// operation the journal holds, terminal or not, in the order the
	// operations started.
	Ops(ctx context.Context) ([]Entry, error)
}

// ErrClosed is returned by the methods of a journal that was closed.
var ErrClosed = errors.New("journal: closed")

// ErrLocked is returned by [OpenFile] (and boltjournal.Open) when the
// journal is already open: in another process, or through another handle
// in this process, by the same path or any other name for the same file (a
// symbolic link, a hard link, a path with ".." in it). It is about the
// journal's own file; a Proxmox guest's lock is proxmox.ErrLocked.
var ErrLocked = errors.New("journal: in use")

// ErrCorrupt is the [errors.Is] target for a journal whose stored records
// are damaged anywhere but in a torn final write. Such damage is never
// skipped: opening fails with a [*CorruptError] that says where, and
// [RepairFile] is the explicit way past it.
var ErrCorrupt = errors.New("journal: corrupt")

// CorruptError describes damage found in a stored journal. It matches
// [ErrCorrupt] with [errors.Is]. It is a plain value, safe to share once
// returned.
type CorruptError struct {
	// Path is the journal's file.
	Path string
	// Offset is the byte offset of the damage: the first damaged record
	// of a file journal, the damaged page of a bbolt journal, or -1 when
	// the damage has no byte offset.
	Offset int64
	// Reason says what is wrong there.
	Reason string
}

// Error says which file is damaged, where, and how.
func (e *CorruptError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("journal: %s: corrupt: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("journal: %s: corrupt at byte offset %d: %s", e.Path, e.Offset, e.Reason)
}

// Is reports whether target is [ErrCorrupt].
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
