package journal

import (
	"log/slog"
	"time"

	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/internal/fsx"
)

// FileOption configures [OpenFile]. Options are immutable values, safe to
// share and reuse.
type FileOption interface {
	applyFile(*fileConfig)
}

type fileOptionFunc func(*fileConfig)

func (f fileOptionFunc) applyFile(c *fileConfig) { f(c) }

type fileConfig struct {
	noSync    bool
	logger    *slog.Logger
	now       func() time.Time
	retention retention
	threshold int64
	fs        fsx.FS
	fp        *failpoint.Set
	prealloc  int64 // smallest preallocation step; 0: minPrealloc (tests use a small one)
}

// DefaultCompactThreshold is the log size, in bytes, past which a
// [FileJournal] compacts itself unless [WithCompactThreshold] says
// otherwise.
const DefaultCompactThreshold = 32 << 20

func defaultFileConfig() fileConfig {
	return fileConfig{
		logger:    slog.New(slog.DiscardHandler),
		now:       time.Now,
		retention: retention{ops: DefaultRetention, keys: -1},
		threshold: DefaultCompactThreshold,
		fs:        fsx.OS{},
	}
}

// WithNoSync makes Append return as soon as its record is written to the
// operating system, without waiting for it to reach stable storage.
//
// This is unsafe: a machine crash or power loss can lose records that Append
// acknowledged, which breaks the promises the journal exists for. Use it only
// for bulk loading and for tests. Creating the file, truncating a torn tail
// and compacting still sync, so the file stays well-formed.
func WithNoSync() FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.noSync = true })
}

// WithLogger sets the logger for the rare events worth telling an operator:
// a torn tail dropped on open, a compaction, a write failure. nil (the
// default) discards them.
func WithLogger(l *slog.Logger) FileOption {
	return fileOptionFunc(func(c *fileConfig) {
		if l != nil {
			c.logger = l
		}
	})
}

// WithClock sets the clock that stamps entries whose At is zero and that
// retention measures age against. The default is [time.Now].
func WithClock(now func() time.Time) FileOption {
	return fileOptionFunc(func(c *fileConfig) {
		if now != nil {
			c.now = now
		}
	})
}

// WithRetention sets how long compaction keeps a terminal operation, counted
// from the At of its last record. Succeeded operations that hold an
// idempotency key follow [WithKeyRetention] instead. Zero drops terminal
// operations at the next compaction; a negative d keeps them forever. The
// default is [DefaultRetention].
//
// Once an operation is dropped, [Journal.Latest] no longer knows it, and its
// op ID (and, for a failed operation, its idempotency key) may be used again.
func WithRetention(d time.Duration) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.retention.ops = d })
}

// WithKeyRetention sets how long compaction keeps a Succeeded operation that
// holds an idempotency key, counted from the At of its last record. A
// negative d, the default, keeps applied keys forever, which is what makes a
// one-shot operation run at most once ever; any other value limits that
// promise to d.
func WithKeyRetention(d time.Duration) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.retention.keys = d })
}

// WithCompactThreshold sets the log size in bytes at which the journal
// compacts itself; zero or negative turns automatic compaction off
// ([FileJournal.Compact] still works). A compaction starts after a write that
// leaves the file at least this large and at least twice as large as right
// after the previous compaction, so a journal whose live state alone passes
// the threshold does not compact after every write. The default is
// [DefaultCompactThreshold].
func WithCompactThreshold(bytes int64) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.threshold = bytes })
}

// withFailpoints lets tests stop or fail the journal at its named steps.
func withFailpoints(fp *failpoint.Set) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.fp = fp })
}
